//! The VM state dump: what every vCPU, the IO-APIC and each virtio device
//! are doing, for telling why a VM stalls (`mvm debug`, the API's `debug`
//! operation, and SIGUSR1, which writes it to the VMM's log).
//!
//! Taking it never waits without a bound: vCPUs answer a request between
//! two KVM_RUNs (a kick makes them leave the guest); one that does not
//! answer in time is reported with what it was last seen doing, and a
//! device whose lock another thread holds is reported as such.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::virtio::debug::{try_lock_patiently, DeviceSnapshot};
use devices::virtio::MmioTransport;
use kvm_bindings::{kvm_irqchip, kvm_msr_entry, Msrs, KVM_IRQCHIP_IOAPIC};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::RunControl;

/// How long vCPUs get to answer a dump request.
const VCPU_PATIENCE: Duration = Duration::from_secs(1);

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// The whole dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDump {
    pub vcpus: Vec<VcpuDump>,
    pub ioapic: Option<IoapicDump>,
    pub devices: Vec<DeviceDump>,
}

/// One vCPU: what its thread was last seen doing, and its registers if it
/// answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuDump {
    pub index: u8,
    /// "in the guest", "MMIO write 0xd0000050", "parked", ...
    pub activity: String,
    /// For how long it has been doing that.
    pub for_ms: u64,
    pub state: Option<VcpuState>,
    /// Why `state` is missing.
    pub note: Option<String>,
}

/// Registers and interrupt state read on the vCPU's own thread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuState {
    pub rip: u64,
    pub rflags: u64,
    /// KVM_MP_STATE_*: 0 runnable, 1 uninitialized, 2 init received, 3 halted, 4 SIPI received.
    pub mp_state: u32,
    /// KVM_GET_VCPU_EVENTS in one line: injected/pending exception,
    /// interrupt and NMI.
    pub events: String,
    pub lapic: LapicState,
    pub tsc: Option<u64>,
    pub tsc_deadline: Option<u64>,
}

/// The local APIC registers that tell where an interrupt is stuck.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapicState {
    pub tpr: u32,
    /// Vectors in service (delivered, not yet EOI'd).
    pub isr: Vec<u8>,
    /// Vectors requested, not yet delivered.
    pub irr: Vec<u8>,
    /// Level-triggered vectors.
    pub tmr: Vec<u8>,
    pub lvt_timer: u32,
    pub timer_initial: u32,
    pub timer_current: u32,
}

/// The in-kernel IO-APIC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoapicDump {
    /// Pins asserted (edge: latched, not yet delivered).
    pub irr: u32,
    /// Pins with a vector or unmasked (unused pins are left out).
    pub pins: Vec<IoapicPin>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoapicPin {
    pub pin: u8,
    pub vector: u8,
    pub masked: bool,
    pub level_triggered: bool,
    pub remote_irr: bool,
    pub delivery_pending: bool,
    pub dest: u8,
}

/// One virtio device and where it sits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDump {
    pub name: String,
    pub gsi: u32,
    pub mmio_base: u64,
    pub snapshot: Option<DeviceSnapshot>,
    pub note: Option<String>,
}

/// A virtio transport the dump looks at.
pub(crate) struct DumpedDevice {
    pub name: String,
    pub gsi: u32,
    pub mmio_base: u64,
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// Takes dumps; shared by the API server and the SIGUSR1 thread.
pub struct Dumper {
    vm_fd: Arc<VmFd>,
    control: Arc<RunControl>,
    devices: Vec<DumpedDevice>,
    /// The devices read guest memory: keep it mapped.
    _ram: Arc<crate::memory::HostMappings>,
}

impl Dumper {
    pub(crate) fn new(
        vm_fd: Arc<VmFd>,
        control: Arc<RunControl>,
        devices: Vec<DumpedDevice>,
        ram: Arc<crate::memory::HostMappings>,
    ) -> Self {
        Self {
            _ram: ram,
            vm_fd,
            control,
            devices,
        }
    }

    /// Takes a dump; returns within about two seconds whatever the VM does.
    pub fn dump(&self) -> VmDump {
        let vcpus = self.control.collect_dumps(VCPU_PATIENCE);
        let ioapic = read_ioapic(&self.vm_fd);
        let devices = self
            .devices
            .iter()
            .map(|d| {
                let (snapshot, note) = match try_lock_patiently(&d.transport) {
                    Some(t) => (Some(t.snapshot()), None),
                    None => (
                        None,
                        Some("transport lock held by another thread (a vCPU in its register handler)".into()),
                    ),
                };
                DeviceDump {
                    name: d.name.clone(),
                    gsi: d.gsi,
                    mmio_base: d.mmio_base,
                    snapshot,
                    note,
                }
            })
            .collect();
        VmDump {
            vcpus,
            ioapic,
            devices,
        }
    }
}

/// Reads a vCPU's state; must run on the vCPU's own thread while it is out
/// of KVM_RUN (another thread's vCPU ioctls would wait for KVM_RUN to end).
pub(crate) fn capture(fd: &VcpuFd) -> Result<VcpuState, String> {
    let regs = fd.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    let mp_state = fd
        .get_mp_state()
        .map(|m| m.mp_state)
        .map_err(|e| format!("KVM_GET_MP_STATE: {e}"))?;
    let events = match fd.get_vcpu_events() {
        Ok(ev) => format!(
            "exception injected={} pending={} nr={} | interrupt injected={} nr={} shadow={} | nmi injected={} pending={} masked={}",
            ev.exception.injected,
            ev.exception.pending,
            ev.exception.nr,
            ev.interrupt.injected,
            ev.interrupt.nr,
            ev.interrupt.shadow,
            ev.nmi.injected,
            ev.nmi.pending,
            ev.nmi.masked
        ),
        Err(e) => format!("KVM_GET_VCPU_EVENTS: {e}"),
    };
    let lapic = fd
        .get_lapic()
        .map(|l| {
            // SAFETY: kvm_lapic_state.regs is a plain [c_char; 1024]; viewing
            // it as bytes of the same length reads the same initialised memory.
            let regs: &[u8; 1024] = unsafe { &*(l.regs.as_ptr() as *const [u8; 1024]) };
            lapic_state(regs)
        })
        .map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    let (tsc, tsc_deadline) = read_tsc_msrs(fd);
    Ok(VcpuState {
        rip: regs.rip,
        rflags: regs.rflags,
        mp_state,
        events,
        lapic,
        tsc,
        tsc_deadline,
    })
}

fn read_tsc_msrs(fd: &VcpuFd) -> (Option<u64>, Option<u64>) {
    let entries = [MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE].map(|index| kvm_msr_entry {
        index,
        ..Default::default()
    });
    let Ok(mut msrs) = Msrs::from_entries(&entries) else {
        return (None, None);
    };
    match fd.get_msrs(&mut msrs) {
        Ok(2) => {
            let e = msrs.as_slice();
            (Some(e[0].data), Some(e[1].data))
        }
        Ok(1) => (Some(msrs.as_slice()[0].data), None),
        _ => (None, None),
    }
}

/// Decodes the APIC register page (each register at a 16-byte stride; the
/// 256-bit ISR/TMR/IRR as eight 32-bit words).
fn lapic_state(regs: &[u8; 1024]) -> LapicState {
    let reg =
        |off: usize| u32::from_le_bytes([regs[off], regs[off + 1], regs[off + 2], regs[off + 3]]);
    let vectors = |base: usize| -> Vec<u8> {
        (0..8)
            .flat_map(|word| {
                let bits = reg(base + word * 0x10);
                (0..32)
                    .filter(move |b| bits & (1 << b) != 0)
                    .map(move |b| (word * 32 + b) as u8)
            })
            .collect()
    };
    LapicState {
        tpr: reg(0x80),
        isr: vectors(0x100),
        tmr: vectors(0x180),
        irr: vectors(0x200),
        lvt_timer: reg(0x320),
        timer_initial: reg(0x380),
        timer_current: reg(0x390),
    }
}

fn read_ioapic(vm_fd: &VmFd) -> Option<IoapicDump> {
    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    vm_fd.get_irqchip(&mut chip).ok()?;
    // SAFETY: KVM filled the `ioapic` member of the union: we asked for
    // chip_id KVM_IRQCHIP_IOAPIC, and it is plain old data either way.
    let state = unsafe { chip.chip.ioapic };
    let pins = (0..24u8)
        .filter_map(|pin| {
            // SAFETY: `bits` is the u64 view of the redirection entry, valid
            // for any bit pattern.
            let bits = unsafe { state.redirtbl[usize::from(pin)].bits };
            let masked = bits & (1 << 16) != 0;
            let vector = bits as u8;
            (vector != 0 || !masked).then_some(IoapicPin {
                pin,
                vector,
                masked,
                level_triggered: bits & (1 << 15) != 0,
                remote_irr: bits & (1 << 14) != 0,
                delivery_pending: bits & (1 << 12) != 0,
                dest: (bits >> 56) as u8,
            })
        })
        .collect();
    Some(IoapicDump {
        irr: state.irr,
        pins,
    })
}

impl std::fmt::Display for VmDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "vCPUs:")?;
        for v in &self.vcpus {
            writeln!(f, "  vcpu{}: {} for {} ms", v.index, v.activity, v.for_ms)?;
            if let Some(note) = &v.note {
                writeln!(f, "    {note}")?;
            }
            if let Some(s) = &v.state {
                let mp = match s.mp_state {
                    0 => "runnable",
                    1 => "uninitialized",
                    2 => "init-received",
                    3 => "halted",
                    4 => "sipi-received",
                    _ => "other",
                };
                writeln!(
                    f,
                    "    rip {:#x} rflags {:#x} (IF={}) mp_state {mp}",
                    s.rip,
                    s.rflags,
                    (s.rflags >> 9) & 1
                )?;
                writeln!(f, "    {}", s.events)?;
                let l = &s.lapic;
                writeln!(
                    f,
                    "    lapic tpr {:#x} isr {:?} irr {:?} tmr {:?}",
                    l.tpr, l.isr, l.irr, l.tmr
                )?;
                let mut timer = format!(
                    "    timer lvt {:#x} (masked={}, mode={}) initial {} current {}",
                    l.lvt_timer,
                    (l.lvt_timer >> 16) & 1,
                    match (l.lvt_timer >> 17) & 3 {
                        0 => "one-shot",
                        1 => "periodic",
                        2 => "tsc-deadline",
                        _ => "reserved",
                    },
                    l.timer_initial,
                    l.timer_current
                );
                if let (Some(tsc), Some(deadline)) = (s.tsc, s.tsc_deadline) {
                    let _ = write!(timer, " tsc {tsc} deadline {deadline}");
                    if deadline != 0 && deadline <= tsc {
                        timer.push_str(" (DEADLINE PASSED: a timer interrupt is due)");
                    }
                }
                writeln!(f, "{timer}")?;
            }
        }
        if let Some(io) = &self.ioapic {
            writeln!(f, "IO-APIC: irr {:#x}", io.irr)?;
            for p in &io.pins {
                writeln!(
                    f,
                    "  pin {:2}: vector {:#04x} {}{}{}{} dest {}",
                    p.pin,
                    p.vector,
                    if p.level_triggered { "level" } else { "edge" },
                    if p.masked { " MASKED" } else { "" },
                    if p.remote_irr { " remote-irr" } else { "" },
                    if p.delivery_pending {
                        " delivery-pending"
                    } else {
                        ""
                    },
                    p.dest
                )?;
            }
        }
        writeln!(f, "virtio devices:")?;
        for d in &self.devices {
            writeln!(f, "  {} (gsi {}, mmio {:#x})", d.name, d.gsi, d.mmio_base)?;
            if let Some(note) = &d.note {
                writeln!(f, "    {note}")?;
            }
            let Some(s) = &d.snapshot else { continue };
            writeln!(
                f,
                "    status {:#x} activated {} interrupt status {:#x}{}",
                s.status,
                s.activated,
                s.interrupt_status,
                if s.interrupt_status != 0 {
                    " (raised, not acknowledged)"
                } else {
                    ""
                }
            )?;
            for q in s.queues.iter().filter(|q| q.ready) {
                let opt = |v: Option<u16>| v.map_or("?".to_string(), |v| v.to_string());
                let mut line = format!(
                    "    q{}: size {} avail {} (flags {}) used {} (flags {})",
                    q.index,
                    q.size,
                    opt(q.avail_idx),
                    opt(q.avail_flags),
                    opt(q.used_idx),
                    opt(q.used_flags)
                );
                if q.event_idx {
                    let _ = write!(
                        line,
                        " used_event {} avail_event {}",
                        opt(q.used_event),
                        opt(q.avail_event)
                    );
                }
                if let Some(dev) = q.device {
                    let _ = write!(
                        line,
                        " | device next_avail {} next_used {}",
                        dev.next_avail, dev.next_used
                    );
                }
                let waiting = q.buffers_not_taken();
                if waiting != 0 {
                    let _ = write!(line, " ({waiting} offered, not taken)");
                }
                writeln!(f, "{line}")?;
            }
            for note in &s.notes {
                writeln!(f, "    {note}")?;
            }
        }
        Ok(())
    }
}

/// The eventfd SIGUSR1's handler writes to (-1: none).
static SIGNAL_EVENT: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigusr1(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let fd: RawFd = SIGNAL_EVENT.load(Ordering::Relaxed);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; `fd` is an eventfd kept
        // open for the life of the process (leaked below) and `one` is 8
        // valid bytes.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

/// Writes a dump to the log (at WARN) on every SIGUSR1, from a thread of
/// its own: a wedged event loop or vCPU must not keep the dump from being
/// written. The thread holds the VM's devices until [`DumpThread::stop`];
/// dropping the handle leaves it running for the life of the process.
pub fn dump_on_sigusr1(dumper: Arc<Dumper>) -> std::io::Result<DumpThread> {
    let evt = Arc::new(EventFd::new(0)?);
    let fd = evt.try_clone()?;
    // The handler's copy lives as long as the process.
    SIGNAL_EVENT.store(fd.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(fd);
    vmm_sys_util::signal::register_signal_handler(libc::SIGUSR1, on_sigusr1)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (thread_evt, thread_stop) = (evt.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("dump".into())
        .spawn(move || loop {
            match thread_evt.read() {
                Ok(_) if thread_stop.load(Ordering::SeqCst) => return,
                Ok(_) => tracing::warn!("state dump (SIGUSR1):\n{}", dumper.dump()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("the SIGUSR1 dump thread stops: {e}");
                    return;
                }
            }
        })?;
    Ok(DumpThread { evt, stop, thread })
}

/// The thread of [`dump_on_sigusr1`].
pub struct DumpThread {
    evt: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl DumpThread {
    /// Ends the thread (after the dump it may be writing) and lets go of
    /// the devices it held: their host files, taps and locks close.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.evt.write(1).is_ok() {
            let _ = self.thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapic_vectors_are_decoded() {
        let mut regs = [0u8; 1024];
        // ISR bit for vector 0x21 (word 1, bit 1); IRR vectors 0x30 and 0xec.
        regs[0x110] = 0b10;
        regs[0x210 + 2] = 0x01; // word 1 bit 16 = vector 48
        regs[0x270 + 1] = 0x10; // word 7 bit 12 = vector 236
        regs[0x320..0x324].copy_from_slice(&0x4_00ecu32.to_le_bytes());
        let l = lapic_state(&regs);
        assert_eq!(l.isr, vec![0x21]);
        assert_eq!(l.irr, vec![48, 236]);
        assert_eq!(l.lvt_timer, 0x4_00ec);
        assert!(l.tmr.is_empty());
    }

    #[test]
    fn the_text_form_flags_what_looks_stuck() {
        let dump = VmDump {
            vcpus: vec![VcpuDump {
                index: 0,
                activity: "in the guest".into(),
                for_ms: 12,
                state: Some(VcpuState {
                    rflags: 0x202,
                    mp_state: 3,
                    tsc: Some(100),
                    tsc_deadline: Some(50),
                    lapic: LapicState {
                        lvt_timer: 2 << 17,
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                note: None,
            }],
            ioapic: Some(IoapicDump {
                irr: 1 << 5,
                pins: vec![IoapicPin {
                    pin: 5,
                    vector: 0x25,
                    masked: true,
                    ..Default::default()
                }],
            }),
            devices: vec![DeviceDump {
                name: "virtio-vsock".into(),
                gsi: 5,
                mmio_base: 0xd000_0000,
                snapshot: None,
                note: Some("transport lock held".into()),
            }],
        };
        let text = dump.to_string();
        assert!(text.contains("mp_state halted"), "{text}");
        assert!(text.contains("IF=1"), "{text}");
        assert!(text.contains("DEADLINE PASSED"), "{text}");
        assert!(text.contains("pin  5: vector 0x25 edge MASKED"), "{text}");
        assert!(text.contains("transport lock held"), "{text}");
    }
}
