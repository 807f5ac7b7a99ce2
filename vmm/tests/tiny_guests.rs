//! Hand-made guests on this host's real KVM: they check the VMM's exit
//! dispatch, the bus routing, the boot protocols and the ways a VM ends,
//! without needing a Linux guest (which the PVM-backed KVM of the test
//! machines cannot boot; those run nested, see tests/nested).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::bus::BusDevice;
use kvm_bindings::kvm_userspace_memory_region;
use mvm_test_guests::{code, elf_kernel, print, program, ENTRY};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm::vcpu::{Buses, Vcpu, VcpuEvent};
use vmm::{Console, ExitReason, Vm, VmConfig};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mvm-tiny-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Boots `code` as a kernel; returns how the VM ended and its console.
fn boot(
    name: &str,
    code: &[u8],
    pvh: bool,
    tweak: impl FnOnce(&mut VmConfig),
) -> (ExitReason, String) {
    let dir = TempDir::new(name);
    let kernel = dir.0.join("kernel");
    std::fs::File::create(&kernel)
        .unwrap()
        .write_all(&elf_kernel(code, pvh))
        .unwrap();
    let console = dir.0.join("console");
    let mut config = VmConfig::new(&kernel);
    config.memory_mib = 32;
    config.console = Console::File(console.clone());
    config.allow_pvm_host = true;
    tweak(&mut config);
    let vm = Vm::new(&config).expect("VM builds");
    let stop = vm.stop_handle();
    // A guard: no test may hang the suite.
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        stop.stop();
    });
    let reason = vm.run().expect("VM runs");
    drop(watchdog);
    (
        reason,
        std::fs::read_to_string(&console).unwrap_or_default(),
    )
}

#[test]
fn pvh_guest_prints_and_resets() {
    let (reason, console) = boot(
        "pvh-reset",
        &program(&[&print("hello from PVH\n"), code::RESET, code::HLT]),
        true,
        |_| {},
    );
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(console, "hello from PVH\n");
}

#[test]
fn long_mode_guest_prints_and_resets() {
    let (reason, console) = boot(
        "linux64-reset",
        &program(&[&print("hello from long mode\n"), code::RESET, code::HLT]),
        false,
        |_| {},
    );
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(console, "hello from long mode\n");
}

#[test]
fn warm_reset_flag_means_guest_panic() {
    let (reason, _) = boot(
        "panic",
        &program(&[code::WARM_FLAG, code::RESET, code::HLT]),
        true,
        |_| {},
    );
    assert_eq!(reason, ExitReason::GuestPanic);
}

#[test]
fn triple_fault_names_vcpu_and_rip() {
    let prelude = print("x");
    let fault_at = ENTRY + prelude.len() as u64;
    let (reason, console) = boot(
        "triple",
        &program(&[&prelude, code::INT3, code::SPIN]),
        true,
        |_| {},
    );
    assert_eq!(console, "x");
    // The RIP is where the fault chain started, or just after the trapping
    // instruction (int3 is a trap).
    let near = |rip: u64| rip == fault_at || rip == fault_at + 1;
    let pvm = vmm::kvm::is_pvm(&vmm::kvm::open().unwrap());
    match reason {
        ExitReason::TripleFault { vcpu: 0, rip } => assert!(near(rip), "rip {rip:#x}"),
        // PVM emulates a non-PVM guest's exceptions and gives up with an
        // emulation failure instead: still a fault naming the vCPU and RIP.
        ExitReason::InternalError { vcpu: 0, rip, .. } if pvm => {
            assert!(near(rip), "rip {rip:#x}")
        }
        other => panic!("expected a triple fault, got {other:?}"),
    }
    let text = reason.to_string();
    assert!(
        text.contains("vCPU 0") && text.contains(&format!("{fault_at:#x}"))
            || text.contains(&format!("{:#x}", fault_at + 1)),
        "{text}"
    );
}

#[test]
fn virtio_mmio_window_answers_with_its_magic() {
    let (reason, console) = boot(
        "mmio",
        &program(&[
            code::DX_COM1,
            code::READ_VIRTIO_MAGIC,
            code::PUT_AL_SHIFT,
            code::PUT_AL_SHIFT,
            code::PUT_AL_SHIFT,
            code::PUT_AL_SHIFT,
            code::RESET,
            code::HLT,
        ]),
        true, // 32-bit addressing: the window is not in the long-mode identity map
        |_| {},
    );
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(console, "virt");
}

#[test]
fn stop_handle_stops_a_spinning_guest() {
    let dir = TempDir::new("stop");
    let kernel = dir.0.join("kernel");
    std::fs::write(
        &kernel,
        elf_kernel(&program(&[&print("up"), code::SPIN]), true),
    )
    .unwrap();
    let console = dir.0.join("console");
    let mut config = VmConfig::new(&kernel);
    config.memory_mib = 32;
    config.cpus = 2;
    config.console = Console::File(console.clone());
    config.allow_pvm_host = true;
    let vm = Vm::new(&config).unwrap();
    let stop = vm.stop_handle();
    let t = std::thread::spawn(move || vm.run());
    // Stop once the guest runs (it said so), not after a guessed delay.
    wait_until("the guest to run", || {
        std::fs::read_to_string(&console).is_ok_and(|c| c == "up")
    });
    stop.stop();
    assert_eq!(t.join().unwrap().unwrap(), ExitReason::Stopped);
}

#[test]
fn bad_configs_are_refused_with_clear_errors() {
    let dir = TempDir::new("errors");
    let kernel = dir.0.join("kernel");
    std::fs::write(&kernel, elf_kernel(code::SPIN, true)).unwrap();
    let base = {
        let mut c = VmConfig::new(&kernel);
        c.memory_mib = 32;
        c.allow_pvm_host = true;
        c.console = Console::Null;
        c
    };
    let err = |f: &dyn Fn(&mut VmConfig)| {
        let mut c = base.clone();
        f(&mut c);
        Vm::new(&c).err().expect("must fail").to_string()
    };
    assert!(err(&|c| c.cpus = 0).contains("cpus 0 is out of range"));
    assert!(err(&|c| c.cpus = 255).contains("cpus 255 is out of range"));
    assert!(err(&|c| c.memory_mib = 1 << 40).contains("more than this host has"));
    assert!(err(&|c| c.memory_mib = 1).contains("too small"));
    assert!(err(&|c| c.kernel = "/nonexistent/vmlinux".into()).contains("does not exist"));
    assert!(err(&|c| c.kernel = "/etc/hostname".into()).contains("is not a kernel"));
    assert!(err(&|c| c.initrd = Some("/nonexistent/initrd".into())).contains("initrd"));
    assert!(err(&|c| c.cmdline = "x".repeat(5000)).contains("command line"));
    let console_err = err(&|c| c.console = Console::File("/nonexistent/dir/console".into()));
    assert!(
        console_err.contains("/nonexistent/dir/console"),
        "{console_err}"
    );
}

/// Records what the vCPU routes to it.
#[derive(Default)]
struct Recorder {
    writes: Vec<(u64, Vec<u8>)>,
    reads: Vec<(u64, usize)>,
}

impl BusDevice for Recorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.reads.push((offset, data.len()));
        data.fill(0x5a);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, data.to_vec()));
    }
}

/// A real-mode guest without irqchip, driven one exit at a time: port
/// output, an MMIO read whose value is written back through MMIO, port
/// input, and HLT.
#[test]
fn vcpu_dispatches_pio_mmio_and_hlt() {
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let code: &[u8] = &[
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'A', // mov al, 'A'
        0xee, // out dx, al
        0xb8, 0x00, 0x20, // mov ax, 0x2000
        0x8e, 0xd8, // mov ds, ax  -> ds base 0x20000 (MMIO)
        0xa0, 0x10, 0x00, // mov al, [0x10]  -> MMIO read at 0x20010
        0xa2, 0x20, 0x00, // mov [0x20], al  -> MMIO write at 0x20020
        0xec, // in al, dx
        0xf4, // hlt
    ];
    mem.write_slice(code, GuestAddress(0x1000)).unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    // SAFETY: `mem` outlives the VM fd in this test.
    unsafe {
        vm.set_user_memory_region(kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: 0x10000,
            userspace_addr: host as u64,
            flags: 0,
        })
        .unwrap();
    }
    let fd = vm.create_vcpu(0).unwrap();
    let mut sregs = fd.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    fd.set_sregs(&sregs).unwrap();
    fd.set_regs(&kvm_bindings::kvm_regs {
        rip: 0x1000,
        rflags: 2,
        ..Default::default()
    })
    .unwrap();

    let serial = Arc::new(Mutex::new(Recorder::default()));
    let mmio = Arc::new(Mutex::new(Recorder::default()));
    let mut buses = Buses::default();
    buses.pio.insert(serial.clone(), 0x3f8, 8).unwrap();
    buses.mmio.insert(mmio.clone(), 0x20000, 0x1000).unwrap();
    let mut vcpu = Vcpu::new(fd, 0, Arc::new(buses));

    let mut events = Vec::new();
    for _ in 0..20 {
        let e = vcpu.run_once();
        let done = matches!(e, VcpuEvent::Exit(_));
        events.push(e);
        if done {
            break;
        }
    }
    assert_eq!(
        events.last(),
        Some(&VcpuEvent::Exit(ExitReason::Halted { vcpu: 0 }))
    );
    let serial = serial.lock().unwrap();
    assert_eq!(serial.writes, vec![(0, vec![b'A'])]);
    assert_eq!(serial.reads, vec![(0, 1)]);
    let mmio = mmio.lock().unwrap();
    assert_eq!(mmio.reads, vec![(0x10, 1)]);
    assert_eq!(mmio.writes, vec![(0x20, vec![0x5a])]);
}

#[test]
fn api_socket_reports_pauses_resumes_and_stops() {
    use vmm::api::{call, ApiRequest, VmState};
    let dir = TempDir::new("api");
    let kernel = dir.0.join("kernel");
    // The guest prints a byte forever, so progress is visible on the console.
    std::fs::write(
        &kernel,
        elf_kernel(&program(&[&print("."), &[0xeb, 0xfb]]), true),
    )
    .unwrap();
    let console = dir.0.join("console");
    let socket = dir.0.join("api.sock");
    let mut config = VmConfig::new(&kernel);
    config.memory_mib = 32;
    config.cpus = 2;
    config.console = Console::File(console.clone());
    config.api_socket = Some(socket.clone());
    config.allow_pvm_host = true;
    let vm = Vm::new(&config).unwrap();
    let t = std::thread::spawn(move || vm.run());
    // A bound for a hung VMM, generous for a loaded machine.
    let timeout = Duration::from_secs(30);

    let status = call(&socket, &ApiRequest::Status, timeout).unwrap();
    assert!(status.ok);
    assert_eq!(status.state, Some(VmState::Running));
    assert_eq!((status.cpus, status.memory_mib), (Some(2), Some(32)));
    assert_eq!(status.pid, Some(std::process::id()));

    let paused = call(&socket, &ApiRequest::Pause, timeout).unwrap();
    assert_eq!(paused.state, Some(VmState::Paused), "{paused:?}");
    let len = std::fs::metadata(&console).unwrap().len();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        std::fs::metadata(&console).unwrap().len(),
        len,
        "the guest ran while paused"
    );

    let resumed = call(&socket, &ApiRequest::Resume, timeout).unwrap();
    assert_eq!(resumed.state, Some(VmState::Running));
    wait_until("the guest to resume printing", || {
        std::fs::metadata(&console).unwrap().len() > len
    });

    // Garbage gets an error response, not a dropped VM.
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::{BufRead, BufReader};
    s.write_all(b"{\"op\":\"explode\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":false"), "{line}");

    let stopping = call(&socket, &ApiRequest::Stop, timeout).unwrap();
    assert_eq!(stopping.state, Some(VmState::Stopping));
    assert_eq!(t.join().unwrap().unwrap(), ExitReason::Stopped);
}

#[test]
fn debug_dump_shows_vcpus_and_devices() {
    use vmm::api::{call, ApiRequest};
    use vmm::dump::VmDump;
    let dir = TempDir::new("dump");
    let kernel = dir.0.join("kernel");
    let spin = program(&[&print("."), code::SPIN]);
    std::fs::write(&kernel, elf_kernel(&spin, true)).unwrap();
    let socket = dir.0.join("api.sock");
    let mut config = VmConfig::new(&kernel);
    config.memory_mib = 32;
    config.cpus = 2;
    config.console = Console::File(dir.0.join("console"));
    config.api_socket = Some(socket.clone());
    config.vsock = Some(vmm::VsockConfig {
        cid: 3,
        socket: dir.0.join("vsock.sock"),
    });
    config.allow_pvm_host = true;
    let vm = Vm::new(&config).unwrap();
    let stop = vm.stop_handle();
    let t = std::thread::spawn(move || vm.run());

    let reply = call(&socket, &ApiRequest::Debug, Duration::from_secs(30)).unwrap();
    assert!(reply.ok, "{reply:?}");
    let dump: VmDump = serde_json::from_value(reply.data.expect("a dump")).unwrap();
    let text = dump.to_string();
    assert_eq!(dump.vcpus.len(), 2, "{text}");
    // The boot vCPU spins in the guest: it answers from its own thread with
    // a RIP inside the program.
    let boot = dump.vcpus[0].state.as_ref().expect("vCPU 0 answered");
    let code_end = ENTRY + spin.len() as u64;
    assert!((ENTRY..code_end).contains(&boot.rip), "{text}");
    // The vsock device is there, not activated (the guest has no driver).
    let vsock = dump
        .devices
        .iter()
        .find(|d| d.name == "virtio-vsock")
        .expect("the vsock device is listed");
    let snap = vsock.snapshot.as_ref().expect("its transport was free");
    assert!(!snap.activated, "{text}");
    assert_eq!(snap.queues.len(), 3, "{text}");
    assert!(text.contains("muxer: 0 connection(s)"), "{text}");

    stop.stop();
    assert_eq!(t.join().unwrap().unwrap(), ExitReason::Stopped);
}

/// Polls `f` until true; fails after a deadline meant for hangs only.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
