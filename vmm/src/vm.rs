//! [`Vm`]: a VM built from a [`VmConfig`], top to bottom, then run.
//!
//! The boot path: [`Vm::new`] (this file) opens KVM, maps memory, creates
//! the irqchip, attaches devices, loads the kernel ([`crate::loader`]) and
//! sets up the vCPUs ([`crate::vcpu`]); [`Vm::run`] starts one thread per
//! vCPU and runs the device event loop until the guest resets or fails.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::bus::BusDevice;
use devices::legacy::{
    AcpiPm, EndSignal, Serial, ACPI_PM_PORT_BASE, ACPI_PM_PORT_LEN, COM1_IRQ, COM1_PORT_BASE,
    COM1_PORT_LEN, I8042, I8042_PORT_BASE, I8042_PORT_LEN,
};
use devices::virtio::{cmdline_device, Interrupt, MmioTransport, VirtioDevice, MMIO_DEVICE_WINDOW};
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, AcpiParams, VirtioMmioDevice};
use crate::arch::boot_params::{write_pvh_start_info, write_zero_page, InitrdPlacement};
use crate::arch::cpuid::{self, CpuidParams};
use crate::arch::layout::{BIOS_RESET_FLAG, IRQ_BASE, IRQ_MAX, MMIO_GAP_START, VIRTIO_MMIO_START};
use crate::arch::mptable::{self, MAX_CPUS};
use crate::arch::msr;
use crate::arch::regs::{self, EntryProtocol};
use crate::config::{Console, VmConfig};
use crate::dump::{DumpedDevice, Dumper};
use crate::stages::stamp;
use crate::vcpu::{self, Buses, ExitReason, ExitSlot, Vcpu};
use crate::{kvm, loader, memory, Error};

/// The TSS lives in the last pages below the BIOS area, inside the MMIO gap
/// (only Intel VMX needs it, but setting it is harmless elsewhere).
const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Linux writes this to the BIOS reset flag before a warm reboot; with
/// `reboot=k,panic_warm` only a panic reboot is warm.
const WARM_RESET_MAGIC: u16 = 0x1234;

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A VM ready to run.
pub struct Vm {
    _kvm: Kvm,
    _vm_fd: Arc<VmFd>,
    mem: GuestMemoryMmap,
    vcpus: Vec<Vcpu>,
    event_manager: EventManager<Subscriber>,
    exit: Arc<ExitSlot>,
    stop_evt: Arc<EventFd>,
    cmdline: String,
    first_run_hook: Option<vcpu::FirstRunHook>,
    control: Arc<vcpu::RunControl>,
    api_server: Option<Arc<Mutex<crate::api::ApiServer>>>,
    dumper: Arc<Dumper>,
    seccomp: Option<Arc<crate::seccomp::Filters>>,
    seccomp_scope: crate::seccomp::Scope,
    /// Last: guest RAM stays mapped until everything above is dropped.
    _ram: Arc<memory::HostMappings>,
}

/// Stops a running [`Vm`] from any thread.
#[derive(Clone)]
pub struct StopHandle {
    evt: Arc<EventFd>,
}

impl StopHandle {
    /// Asks the VM to stop; [`Vm::run`] then returns [`ExitReason::Stopped`].
    pub fn stop(&self) {
        if let Err(e) = self.evt.write(1) {
            tracing::error!("cannot signal the VM to stop: {e}");
        }
    }
}

impl Vm {
    /// Builds the VM: nothing runs until [`Vm::run`].
    pub fn new(config: &VmConfig) -> Result<Self, Error> {
        preflight(config)?;
        stamp("preflight");
        // Guest RAM first, so that the kernel and initramfs (the longest
        // step: reading them and faulting in the pages they land in) can
        // load on a helper thread while the VM, its devices and vCPUs are
        // set up: where the host has a second CPU to run it on (on one,
        // the two would only take turns, and the thread costs a little).
        let ram = memory::create_guest_memory(config.memory_mib, !config.vhost_user_fs.is_empty())?;
        stamp("guest_ram");
        let mem = ram.mem.clone();
        if usable_cpus() < 2 {
            return Self::build(config, ram, || load_boot_files(&mem, config));
        }
        std::thread::scope(|scope| {
            let loader = std::thread::Builder::new()
                .name("mvm-loader".into())
                .spawn_scoped(scope, || load_boot_files(&mem, config))
                .map_err(Error::Thread)?;
            Self::build(config, ram, move || match loader.join() {
                Ok(files) => files,
                Err(panic) => std::panic::resume_unwind(panic),
            })
        })
    }

    /// The rest of [`Vm::new`], beside the loader thread: `boot_files`
    /// waits for it.
    fn build(
        config: &VmConfig,
        ram: memory::GuestRam,
        boot_files: impl FnOnce() -> Result<BootFiles, Error>,
    ) -> Result<Self, Error> {
        let seccomp = crate::seccomp::Filters::new(config.seccomp)?.map(Arc::new);
        stamp("seccomp_compiled");
        let kvm = kvm::open()?;
        if kvm::is_pvm(&kvm) && !config.allow_pvm_host {
            return Err(kvm::KvmError::PvmHost.into());
        }
        let max_cpus = kvm.get_max_vcpus().min(usize::from(MAX_CPUS));
        if config.cpus == 0 || usize::from(config.cpus) > max_cpus {
            return Err(Error::Cpus {
                requested: config.cpus,
                max: max_cpus,
            });
        }
        let vm_fd = Arc::new(kvm.create_vm().map_err(kvm::KvmError::CreateVm)?);
        stamp("vm_created");

        let mem = ram.mem.clone();
        register_memory(&vm_fd, &mem)?;
        setup_irqchip(&vm_fd)?;
        stamp("memory_and_irqchip");

        let mut buses = Buses {
            ram: ram.mappings.clone(),
            ..Default::default()
        };
        let mut cmdline = config.full_cmdline();
        let exit = Arc::new(ExitSlot::new().map_err(Error::EventFd)?);
        let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        let poweroff_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        let stop_evt = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?);
        let mut event_manager = EventManager::<Subscriber>::new().map_err(Error::EventManager)?;

        let control = vcpu::RunControl::new();
        // Legacy devices: the console, the reset line, ACPI power-off.
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        vm_fd
            .register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(|e| Error::Kvm("KVM_IRQFD for the serial port", e))?;
        let serial = Serial::new(
            serial_irq,
            console_writer(&config.console, &mut event_manager, &control)?,
        );
        insert(
            &mut buses.pio,
            Arc::new(Mutex::new(serial)),
            COM1_PORT_BASE,
            COM1_PORT_LEN,
        )?;
        // The vCPU that asks for a reset or power-off stops at once.
        let end = |evt: &EventFd| -> Result<EndSignal, Error> {
            Ok(EndSignal::new(evt.try_clone().map_err(Error::EventFd)?)
                .stopping(control.stop_flag()))
        };
        let i8042 = I8042::new(end(&reset_evt)?);
        insert(
            &mut buses.pio,
            Arc::new(Mutex::new(i8042)),
            I8042_PORT_BASE,
            I8042_PORT_LEN,
        )?;
        let acpi_pm = AcpiPm::new(end(&reset_evt)?, end(&poweroff_evt)?);
        insert(
            &mut buses.pio,
            Arc::new(Mutex::new(acpi_pm)),
            ACPI_PM_PORT_BASE,
            ACPI_PM_PORT_LEN,
        )?;

        // Virtio devices, each on its own MMIO window and IRQ line.
        let mut virtio = VirtioSlots {
            vm_fd: &vm_fd,
            mem: &mem,
            buses: &mut buses,
            cmdline: &mut cmdline,
            event_manager: &mut event_manager,
            count: 0,
            dumped: Vec::new(),
        };
        if config.rng {
            let rng = devices::virtio::Rng::new().map_err(|e| Error::Device(e.to_string()))?;
            virtio.attach("virtio-rng".into(), rng)?;
        }
        // One budget for all the VM's upper layers.
        let budget = config.upper_bytes.map(cowfs::UpperBudget::new);
        for share in &config.shares {
            let mut fs = devices::virtio::Fs::new(
                &share.tag,
                cowfs::ShareConfig {
                    lower: share.path.clone(),
                    upper: share.upper.clone(),
                    mode: match share.mode {
                        crate::config::ShareMode::Cow => cowfs::ShareMode::Cow,
                        crate::config::ShareMode::Ro => cowfs::ShareMode::Ro,
                        crate::config::ShareMode::Rw => cowfs::ShareMode::Rw,
                    },
                    masked: share.masked.clone(),
                    visible: share.visible.clone(),
                    hidden: share.hidden.clone(),
                },
            )
            .map_err(|e| {
                Error::Device(format!(
                    "share '{}' of {}: {e}",
                    share.tag,
                    share.path.display()
                ))
            })?;
            if let Some(b) = &budget {
                fs.set_budget(b.clone())
                    .map_err(|e| Error::Device(format!("share '{}': {e}", share.tag)))?;
            }
            // A jail that drops root: the share's guest owners go to its
            // copy-up log, as the VMM will not be able to chown.
            if config.jail.as_ref().is_some_and(|j| j.drops_root()) {
                fs.record_owners();
            }
            fs.set_serve_on_vcpu(!share.serve_on_event_loop);
            fs.set_xattr(share.xattr);
            virtio.attach(format!("virtio-fs {}", share.tag), fs)?;
        }
        for v in &config.vhost_user_fs {
            let fs = devices::virtio::VhostUserFs::new(&v.socket, &v.tag, v.queue_size)
                .map_err(|e| Error::Device(format!("vhost-user-fs '{}': {e}", v.tag)))?;
            virtio.attach(format!("vhost-user-fs {}", v.tag), fs)?;
        }
        for b in &config.block {
            let blk = devices::virtio::Block::new(&b.path, b.read_only, &b.id)
                .map_err(|e| Error::Device(format!("volume {}: {e}", b.path.display())))?;
            virtio.attach(format!("virtio-blk {}", b.id), blk)?;
        }
        if let Some(v) = &config.vsock {
            let vsock = devices::virtio::Vsock::new(v.cid, v.socket.clone())
                .map_err(|e| Error::Device(format!("vsock on {}: {e}", v.socket.display())))?;
            virtio.attach("virtio-vsock".into(), vsock)?;
        }
        if let Some(n) = &config.net {
            let net = match n.backend {
                crate::config::NetBackend::Tap => devices::virtio::Net::new(&n.tap, n.mac),
                crate::config::NetBackend::Vhost => devices::virtio::Net::new_vhost(&n.tap, n.mac),
            }
            .map_err(|e| Error::Device(format!("network on tap {}: {e}", n.tap)))?;
            virtio.attach(format!("virtio-net {}", n.tap), net)?;
        }
        stamp("devices");
        let dumped_devices = std::mem::take(&mut virtio.dumped);
        let virtio_windows: Vec<VirtioMmioDevice> = dumped_devices
            .iter()
            .map(|d| VirtioMmioDevice {
                base: d.mmio_base,
                len: MMIO_DEVICE_WINDOW,
                irq: d.gsi,
            })
            .collect();

        // vCPUs: CPUID, MSRs, LAPIC, FPU for all; the boot vCPU's entry
        // registers once the kernel is loaded (the others wait for
        // INIT/SIPI in the in-kernel LAPIC).
        let buses = Arc::new(buses);
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| Error::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
        let has_xcrs = kvm.check_extension(kvm_ioctls::Cap::Xcrs);
        let mut vcpu_fds = Vec::with_capacity(usize::from(config.cpus));
        for index in 0..config.cpus {
            let fd = vm_fd
                .create_vcpu(u64::from(index))
                .map_err(|e| Error::Kvm("KVM_CREATE_VCPU", e))?;
            let mut cpuid = supported.clone();
            cpuid::normalize(
                &mut cpuid,
                CpuidParams {
                    vcpu_index: index,
                    vcpu_count: config.cpus,
                    tsc_khz: fd.get_tsc_khz().ok(),
                    tsc_deadline,
                },
            );
            fd.set_cpuid2(&cpuid)
                .map_err(|e| Error::Kvm("KVM_SET_CPUID2", e))?;
            msr::setup_msrs(&fd)?;
            msr::setup_lapic(&fd)?;
            regs::setup_fpu(&fd)?;
            if let Some(xcr0) = cpuid::initial_xcr0(&cpuid).filter(|_| has_xcrs) {
                regs::setup_xcr0(&fd, xcr0)?;
            }
            vcpu_fds.push(fd);
        }
        stamp("vcpus");

        // The kernel, its initramfs and command line, and the boot tables.
        let BootFiles { kernel, initrd } = boot_files()?;
        stamp("boot_files");
        let ram_size = config.memory_mib << 20;
        let cmd = loader::build_cmdline(&cmdline)?;
        let cmdline_len = loader::write_cmdline(&mem, &cmd)?;
        // ACPI for distribution kernels, the MP table for ours (no ACPI).
        let rsdp = acpi::setup_acpi(
            &mem,
            &AcpiParams {
                cpus: config.cpus,
                virtio: &virtio_windows,
            },
        )?;
        mptable::setup_mptable(&mem, config.cpus)?;
        match kernel.protocol {
            EntryProtocol::Pvh => write_pvh_start_info(&mem, ram_size, initrd, rsdp)?,
            EntryProtocol::Linux64 => write_zero_page(
                &mem,
                ram_size,
                kernel.setup_header,
                cmdline_len,
                initrd,
                rsdp,
            )?,
        }

        stamp("boot_tables");
        regs::setup_boot_vcpu(&vcpu_fds[0], &mem, kernel.protocol, kernel.entry)?;
        let vcpus: Vec<Vcpu> = vcpu_fds
            .into_iter()
            .zip(0..)
            .map(|(fd, index)| Vcpu::new(fd, index, buses.clone()))
            .collect();
        event_manager.add_subscriber(Arc::new(Mutex::new(Control {
            reset_evt,
            poweroff_evt,
            stop_evt: stop_evt.clone(),
            exit: exit.clone(),
            mem: mem.clone(),
        })));

        let dumper = Arc::new(Dumper::new(
            vm_fd.clone(),
            control.clone(),
            dumped_devices,
            ram.mappings.clone(),
        ));
        let mut api_server = None;
        if let Some(path) = &config.api_socket {
            let mut api = crate::api::ApiServer::bind(
                path,
                control.clone(),
                StopHandle {
                    evt: stop_evt.clone(),
                },
                config.cpus,
                config.memory_mib,
            )?;
            api.set_dumper(dumper.clone());
            let api = Arc::new(Mutex::new(api));
            event_manager.add_subscriber(api.clone());
            api_server = Some(api);
        }
        stamp("built");

        tracing::debug!(
            "VM built: {} vCPU(s), {} MiB, {:?} entry at {:#x}, cmdline: {cmdline}",
            config.cpus,
            config.memory_mib,
            kernel.protocol,
            kernel.entry.raw_value()
        );
        Ok(Vm {
            _kvm: kvm,
            _vm_fd: vm_fd,
            mem,
            vcpus,
            event_manager,
            exit,
            stop_evt,
            cmdline,
            first_run_hook: None,
            control,
            api_server,
            dumper,
            seccomp,
            seccomp_scope: config.seccomp_scope,
            _ram: ram.mappings,
        })
    }

    /// Takes state dumps of this VM (see [`crate::dump`]); hand it to
    /// [`crate::dump::dump_on_sigusr1`] to have SIGUSR1 log one.
    pub fn dumper(&self) -> Arc<Dumper> {
        self.dumper.clone()
    }

    /// The kernel command line the guest boots with.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Guest memory, for embedders that inspect it.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// A handle that stops this VM from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            evt: self.stop_evt.clone(),
        }
    }

    /// Routes API operations the VMM does not know to `extension` (no-op
    /// without an API socket).
    pub fn set_api_extension(&mut self, extension: crate::api::Extension) {
        if let Some(api) = &self.api_server {
            devices::bus::lock(api).set_extension(extension);
        }
    }

    /// Keeps KVM's side of this VM until the process exits. Closing a
    /// VM's last descriptor frees it inside KVM, which waits for RCU grace
    /// periods (tens of milliseconds, idle); a VMM that tells its parent it
    /// has ended and then exits (`mvm run`'s jailed child) calls this, so
    /// that wait comes after the report instead of before it.
    pub fn keep_kvm_open_until_exit(&self) -> std::io::Result<()> {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor this VM owns; the copy
        // is never closed here (the kernel closes it at exit).
        let copy = unsafe { libc::fcntl(self._vm_fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets a function the boot vCPU's thread calls right before its first
    /// KVM_RUN: the moment start-up ends, for measurements.
    pub fn on_first_run(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.first_run_hook = Some(Box::new(hook));
    }

    /// Runs the VM until the guest resets, fails, or is stopped.
    pub fn run(mut self) -> Result<ExitReason, Error> {
        let control = self.control.clone();
        let mut threads = Vec::with_capacity(self.vcpus.len());
        let stop_all = |threads| vcpu::stop_all(&control, threads, Duration::from_secs(1));
        // Every thread filtered from here on; each vCPU adds its own.
        if let Some(filters) = &self.seccomp {
            filters.apply_to_process(self.seccomp_scope)?;
            crate::seccomp::test_violation("process");
            stamp("seccomp_applied");
        }
        for vcpu in self.vcpus.drain(..) {
            let hook = if vcpu.index() == 0 {
                self.first_run_hook.take()
            } else {
                None
            };
            let filters = self.seccomp.clone();
            match vcpu::spawn(vcpu, control.clone(), self.exit.clone(), filters, hook) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop_all(threads);
                    return Err(Error::Thread(e));
                }
            }
        }
        let reason = loop {
            if let Err(e) = self.event_manager.run() {
                stop_all(threads);
                return Err(Error::EventManager(e));
            }
            if let Some(reason) = self.exit.take() {
                break reason;
            }
        };
        stop_all(threads);
        Ok(reason)
    }
}

/// The CPUs this process may run on (one system call: std's
/// `available_parallelism` also reads cgroup files).
fn usable_cpus() -> usize {
    // SAFETY: an all-zero cpu_set_t is an empty set; sched_getaffinity
    // fills the one we pass, of the size we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 1;
        }
        libc::CPU_COUNT(&set) as usize
    }
}

/// The kernel and initramfs in guest memory.
struct BootFiles {
    kernel: loader::LoadedKernel,
    initrd: Option<InitrdPlacement>,
}

/// Reads the kernel and the initramfs into guest memory (the loader
/// thread of [`Vm::new`]).
fn load_boot_files(mem: &GuestMemoryMmap, config: &VmConfig) -> Result<BootFiles, Error> {
    let kernel = loader::load_kernel(mem, &config.kernel)?;
    stamp("kernel_loaded");
    let initrd = match &config.initrd {
        Some(path) => Some(loader::load_initrd(
            mem,
            config.memory_mib << 20,
            kernel.end,
            path,
        )?),
        None => None,
    };
    stamp("initrd_loaded");
    Ok(BootFiles { kernel, initrd })
}

/// Checks what the user gave us before taking any host resource, so a
/// typo is reported as such on any host.
fn preflight(config: &VmConfig) -> Result<(), Error> {
    if config.cpus == 0 {
        return Err(Error::Cpus {
            requested: 0,
            max: usize::from(MAX_CPUS),
        });
    }
    memory::check_size(config.memory_mib, memory::host_ram_mib()?)?;
    loader::probe_kernel(&config.kernel)?;
    if let Some(initrd) = &config.initrd {
        loader::probe_initrd(initrd)?;
    }
    loader::build_cmdline(&config.full_cmdline())?;
    let mut tags = std::collections::HashSet::new();
    let all_tags = config.shares.iter().map(|s| s.tag.as_str());
    for tag in all_tags.chain(config.vhost_user_fs.iter().map(|v| v.tag.as_str())) {
        if tag.is_empty() || tag.len() > 36 || tag.contains(['\0', ' ', ',']) {
            return Err(Error::Share(format!(
                "invalid share tag '{tag}': use 1 to 36 characters without spaces or commas"
            )));
        }
        if !tags.insert(tag) {
            return Err(Error::Share(format!("share tag '{tag}' is used twice")));
        }
    }
    for v in &config.vhost_user_fs {
        let q = v.queue_size;
        if !q.is_power_of_two() || q < 2 {
            return Err(Error::Share(format!(
                "vhost-user-fs '{}': queue size {q} must be a power of two from 2 to 32768",
                v.tag
            )));
        }
        use std::os::unix::fs::FileTypeExt;
        if !std::fs::metadata(&v.socket).is_ok_and(|m| m.file_type().is_socket()) {
            return Err(Error::Share(format!(
                "vhost-user-fs '{}': {} is not a socket (start the backend first, e.g. virtiofsd --socket-path {} --shared-dir DIR)",
                v.tag,
                v.socket.display(),
                v.socket.display()
            )));
        }
    }
    for share in &config.shares {
        if !share.path.is_dir() {
            return Err(Error::Share(format!(
                "share '{}': {} is not a directory",
                share.tag,
                share.path.display()
            )));
        }
        if share.mode == crate::config::ShareMode::Cow && share.upper.is_none() {
            return Err(Error::Share(format!(
                "share '{}' is copy-on-write but has no upper directory",
                share.tag
            )));
        }
    }
    if let Console::File(path) = &config.console {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) {
            return Err(Error::Console(
                path.clone(),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
    }
    Ok(())
}

fn insert(
    bus: &mut devices::bus::Bus,
    dev: Arc<Mutex<dyn BusDevice>>,
    base: u64,
    len: u64,
) -> Result<(), Error> {
    bus.insert(dev, base, len).map_err(Error::Bus)
}

fn register_memory(vm_fd: &VmFd, mem: &GuestMemoryMmap) -> Result<(), Error> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| Error::Kvm("guest memory", kvm_ioctls::Error::new(libc::EFAULT)))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the
        // Vm keeps for as long as the VM fd (and thus the slot) exists.
        unsafe { vm_fd.set_user_memory_region(region) }
            .map_err(|e| Error::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(())
}

/// In-kernel LAPIC/IO-APIC/PIC and PIT: interrupts from irqfds reach the
/// guest without a trip through this process, and the PIT gives the guest
/// a timer to calibrate against before its LAPIC timer runs.
fn setup_irqchip(vm_fd: &VmFd) -> Result<(), Error> {
    vm_fd
        .set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(|e| Error::Kvm("KVM_SET_TSS_ADDR", e))?;
    vm_fd
        .create_irq_chip()
        .map_err(|e| Error::Kvm("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm_fd
        .create_pit2(pit)
        .map_err(|e| Error::Kvm("KVM_CREATE_PIT2", e))
}

/// The console's writer: stdout or the capped file, in lines (the
/// flusher of partial lines joins the event loop).
fn console_writer(
    console: &Console,
    event_manager: &mut EventManager<Subscriber>,
    control: &vcpu::RunControl,
) -> Result<Box<dyn Write + Send>, Error> {
    let out: Box<dyn Write + Send> = match console {
        Console::Stdout => Box::new(std::io::stdout()),
        Console::File(path) => Box::new(
            crate::console_file::RotatingFile::create(path, crate::console_file::CONSOLE_FILE_MAX)
                .map_err(|e| Error::Console(path.clone(), e))?,
        ),
        Console::Null => return Ok(Box::new(std::io::sink())),
    };
    let (lines, flusher) = crate::console::line_buffered(out).map_err(Error::ConsoleTimer)?;
    let on_pause = flusher.clone();
    control.on_pause(Box::new(move || on_pause.flush_now()));
    event_manager.add_subscriber(Arc::new(Mutex::new(flusher)));
    Ok(Box::new(lines))
}

/// Hands out MMIO windows and IRQ lines to virtio devices and wires each
/// to the bus, KVM (irqfd, ioeventfds), the event loop and the command line.
struct VirtioSlots<'a> {
    vm_fd: &'a Arc<VmFd>,
    mem: &'a GuestMemoryMmap,
    buses: &'a mut Buses,
    cmdline: &'a mut String,
    event_manager: &'a mut EventManager<Subscriber>,
    count: u64,
    /// Every transport, for the state dump.
    dumped: Vec<DumpedDevice>,
}

impl VirtioSlots<'_> {
    fn attach<D>(&mut self, name: String, device: D) -> Result<(), Error>
    where
        D: VirtioDevice + MutEventSubscriber + Send + 'static,
    {
        let irq = IRQ_BASE + self.count as u32;
        let base = VIRTIO_MMIO_START + self.count * MMIO_DEVICE_WINDOW;
        if irq > IRQ_MAX || base + MMIO_DEVICE_WINDOW > MMIO_GAP_START + (1 << 30) {
            return Err(Error::TooManyDevices);
        }
        self.count += 1;

        let device = Arc::new(Mutex::new(device));
        let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        self.vm_fd
            .register_irqfd(&irq_evt, irq)
            .map_err(|e| Error::Kvm("KVM_IRQFD for a virtio device", e))?;
        let line = KvmIrqLine {
            vm_fd: self.vm_fd.clone(),
            gsi: irq,
        };
        let interrupt = Arc::new(Interrupt::with_line(irq_evt, Box::new(line)));
        let transport = MmioTransport::new(self.mem.clone(), interrupt, device.clone())
            .map_err(Error::Transport)?;
        // A device serving on the vCPU wants its notifications to exit.
        let notify_evts = if transport.serves_on_vcpu() {
            &[][..]
        } else {
            transport.queue_events()
        };
        for (i, evt) in notify_evts.iter().enumerate() {
            self.vm_fd
                .register_ioevent(evt, &IoEventAddress::Mmio(base + 0x50), i as u32)
                .map_err(|e| Error::Kvm("KVM_IOEVENTFD for a virtio queue", e))?;
        }
        let transport = Arc::new(Mutex::new(transport));
        insert(
            &mut self.buses.mmio,
            transport.clone(),
            base,
            MMIO_DEVICE_WINDOW,
        )?;
        self.dumped.push(DumpedDevice {
            name,
            gsi: irq,
            mmio_base: base,
            transport,
        });
        self.event_manager.add_subscriber(device);
        self.cmdline.push(' ');
        self.cmdline
            .push_str(&cmdline_device(base, MMIO_DEVICE_WINDOW, irq));
        Ok(())
    }
}

/// A virtio device's interrupt line raised with KVM_IRQ_LINE on the
/// signalling thread: a pulse, as an irqfd gives, without the kernel
/// worker that injects an irqfd routed to an IOAPIC pin. The irqfd stays
/// registered for backends outside the VMM and as the fallback.
struct KvmIrqLine {
    vm_fd: Arc<VmFd>,
    gsi: u32,
}

impl devices::virtio::IrqLine for KvmIrqLine {
    fn pulse(&self) -> std::io::Result<()> {
        let set = |level| {
            self.vm_fd
                .set_irq_line(self.gsi, level)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
        };
        set(true)?;
        set(false)
    }
}

/// The VM's own events: the guest's reset and power-off requests and
/// stop requests.
struct Control {
    reset_evt: EventFd,
    poweroff_evt: EventFd,
    stop_evt: Arc<EventFd>,
    exit: Arc<ExitSlot>,
    mem: GuestMemoryMmap,
}

impl MutEventSubscriber for Control {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [
            self.reset_evt.as_raw_fd(),
            self.poweroff_evt.as_raw_fd(),
            self.stop_evt.as_raw_fd(),
            self.exit.event().as_raw_fd(),
        ] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                tracing::error!("cannot watch a VM control event: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            let flag: u16 = self
                .mem
                .read_obj(GuestAddress(BIOS_RESET_FLAG))
                .unwrap_or(0);
            self.exit.report(if flag == WARM_RESET_MAGIC {
                ExitReason::GuestPanic
            } else {
                ExitReason::Reset
            });
        } else if fd == self.poweroff_evt.as_raw_fd() {
            let _ = self.poweroff_evt.read();
            self.exit.report(ExitReason::PowerOff);
        } else if fd == self.stop_evt.as_raw_fd() {
            let _ = self.stop_evt.read();
            self.exit.report(ExitReason::Stopped);
        } else if fd == self.exit.event().as_raw_fd() {
            // A vCPU reported; Vm::run picks the reason up.
            let _ = self.exit.event().read();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_cpus_counts_at_least_what_std_allows() {
        // std also applies cgroup quotas, so it can only say fewer.
        let std_count = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(usable_cpus() >= std_count.max(1), "{}", usable_cpus());
    }
}
