//! Embedding the VMM: boot a kernel with an initramfs, stop it after a
//! timeout from another thread, and report how it ended.
//!
//! cargo run -p vmm --example boot -- VMLINUX [INITRD] [TIMEOUT_SECS]

use std::time::Duration;

use vmm::{Vm, VmConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kernel = args
        .next()
        .ok_or("usage: boot VMLINUX [INITRD] [TIMEOUT_SECS]")?;
    let mut config = VmConfig::new(kernel);
    config.initrd = args.next().map(Into::into);
    config.cpus = 2;
    config.memory_mib = 256;
    config.cmdline = "init=/init".into();
    let timeout: u64 = args.next().map_or(Ok(30), |s| s.parse())?;

    let vm = Vm::new(&config)?;
    let stop = vm.stop_handle();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(timeout));
        stop.stop();
    });
    let reason = vm.run()?;
    println!("VM ended: {reason}");
    Ok(())
}
