//! vCPUs: one thread each, running KVM_RUN and dispatching exits to the
//! port I/O and MMIO buses. Any exit that means the VM cannot go on becomes
//! an [`ExitReason`]; nothing a guest does can panic this code.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::bus::Bus;
use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use serde::Serialize;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// The address spaces a vCPU's exits are routed through.
#[derive(Default)]
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
    /// Keeps guest RAM mapped while a vCPU thread (and so its devices)
    /// lives, even one left running past the `Vm`.
    pub ram: Arc<crate::memory::HostMappings>,
}

/// Why a VM stopped running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitReason {
    /// The guest rebooted (i8042 reset): how a guest normally ends.
    Reset,
    /// The guest kernel panicked and rebooted.
    GuestPanic,
    /// The guest powered off through a KVM system event.
    PowerOff,
    /// A [`crate::StopHandle`] stopped the VM.
    Stopped,
    /// A vCPU halted without an in-kernel irqchip to wake it (tiny guests).
    Halted { vcpu: u8 },
    /// A triple fault: KVM_EXIT_SHUTDOWN.
    TripleFault { vcpu: u8, rip: u64 },
    /// KVM could not emulate something (KVM_EXIT_INTERNAL_ERROR).
    InternalError { vcpu: u8, rip: u64, suberror: u32 },
    /// The hardware refused to enter the guest (KVM_EXIT_FAIL_ENTRY).
    FailEntry { vcpu: u8, rip: u64, reason: u64 },
    /// An exit this VMM has no use for.
    UnexpectedExit { vcpu: u8, rip: u64, exit: String },
    /// KVM_RUN itself failed.
    RunFailed { vcpu: u8, error: String },
}

impl ExitReason {
    /// True for the ways a guest ends on purpose.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            ExitReason::Reset | ExitReason::PowerOff | ExitReason::Stopped
        )
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Reset => write!(f, "the guest rebooted"),
            ExitReason::GuestPanic => write!(f, "the guest kernel panicked"),
            ExitReason::PowerOff => write!(f, "the guest powered off"),
            ExitReason::Stopped => write!(f, "the VM was stopped"),
            ExitReason::Halted { vcpu } => write!(f, "vCPU {vcpu} halted"),
            ExitReason::TripleFault { vcpu, rip } => {
                write!(
                    f,
                    "vCPU {vcpu} triple-faulted (KVM_EXIT_SHUTDOWN) at RIP {rip:#x}"
                )?;
                if *rip == RESET_VECTOR_RIP {
                    // AMD's KVM re-initialises the vCPU before reporting.
                    write!(
                        f,
                        " (the reset vector: KVM reset the vCPU before reporting)"
                    )?;
                }
                Ok(())
            }
            ExitReason::InternalError {
                vcpu,
                rip,
                suberror,
            } => write!(
                f,
                "KVM internal error {suberror} on vCPU {vcpu} at RIP {rip:#x}"
            ),
            ExitReason::FailEntry { vcpu, rip, reason } => write!(
                f,
                "KVM failed to enter vCPU {vcpu} (hardware reason {reason:#x}) at RIP {rip:#x}"
            ),
            ExitReason::UnexpectedExit { vcpu, rip, exit } => {
                write!(f, "unexpected exit {exit} on vCPU {vcpu} at RIP {rip:#x}")
            }
            ExitReason::RunFailed { vcpu, error } => {
                write!(f, "KVM_RUN failed on vCPU {vcpu}: {error}")
            }
        }
    }
}

/// RIP after KVM on AMD re-initialised a vCPU that hit a shutdown.
const RESET_VECTOR_RIP: u64 = 0xfff0;

/// What one KVM_RUN produced.
#[derive(Debug, PartialEq, Eq)]
pub enum VcpuEvent {
    /// The exit was handled; run again.
    Continue,
    /// A signal interrupted KVM_RUN (a kick): check for stop and run again.
    Interrupted,
    /// The VM must stop.
    Exit(ExitReason),
}

/// What an exit asks for, once the borrow of the run structure is over.
enum Outcome {
    Handled,
    Interrupted,
    Halted,
    Shutdown,
    InternalError,
    FailEntry(u64),
    System(u32),
    Unexpected(String),
    RunFailed(String),
}

pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
    buses: Arc<Buses>,
    activity: Arc<VcpuActivity>,
}

impl Vcpu {
    pub fn new(fd: VcpuFd, index: u8, buses: Arc<Buses>) -> Self {
        Self {
            fd,
            index,
            buses,
            activity: Arc::new(VcpuActivity::default()),
        }
    }

    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    /// Runs the vCPU until its next exit and handles it.
    pub fn run_once(&mut self) -> VcpuEvent {
        let buses = &self.buses;
        let activity = &self.activity;
        activity.set(Phase::InGuest, 0);
        let outcome = match self.fd.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    activity.set(Phase::PioRead, u64::from(port));
                    buses.pio.read(u64::from(port), data);
                    Outcome::Handled
                }
                VcpuExit::IoOut(port, data) => {
                    activity.set(Phase::PioWrite, u64::from(port));
                    buses.pio.write(u64::from(port), data);
                    Outcome::Handled
                }
                VcpuExit::MmioRead(addr, data) => {
                    activity.set(Phase::MmioRead, addr);
                    if !buses.mmio.read(addr, data) {
                        tracing::trace!("MMIO read of unclaimed {addr:#x}");
                    }
                    Outcome::Handled
                }
                VcpuExit::MmioWrite(addr, data) => {
                    activity.set(Phase::MmioWrite, addr);
                    if !buses.mmio.write(addr, data) {
                        tracing::trace!("MMIO write to unclaimed {addr:#x}");
                    }
                    Outcome::Handled
                }
                VcpuExit::Hlt => Outcome::Halted,
                VcpuExit::Shutdown => Outcome::Shutdown,
                VcpuExit::FailEntry(reason, _) => Outcome::FailEntry(reason),
                VcpuExit::InternalError => Outcome::InternalError,
                VcpuExit::SystemEvent(kind, _) => Outcome::System(kind),
                VcpuExit::Intr => Outcome::Interrupted,
                VcpuExit::IrqWindowOpen => Outcome::Handled,
                other => Outcome::Unexpected(format!("{other:?}")),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Outcome::Interrupted,
            Err(e) => Outcome::RunFailed(e.to_string()),
        };
        // The exit's phase stands until the next KVM_RUN sets InGuest: one
        // clock read fewer per exit, and the loop in between is short.
        let vcpu = self.index;
        match outcome {
            Outcome::Handled => VcpuEvent::Continue,
            Outcome::Interrupted => {
                self.fd.set_kvm_immediate_exit(0);
                VcpuEvent::Interrupted
            }
            Outcome::Halted => VcpuEvent::Exit(ExitReason::Halted { vcpu }),
            Outcome::Shutdown => VcpuEvent::Exit(ExitReason::TripleFault {
                vcpu,
                rip: self.rip(),
            }),
            Outcome::InternalError => {
                // SAFETY: KVM set exit_reason to KVM_EXIT_INTERNAL_ERROR, so
                // `internal` is the union member it filled in.
                let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                VcpuEvent::Exit(ExitReason::InternalError {
                    vcpu,
                    rip: self.rip(),
                    suberror,
                })
            }
            Outcome::FailEntry(reason) => VcpuEvent::Exit(ExitReason::FailEntry {
                vcpu,
                rip: self.rip(),
                reason,
            }),
            Outcome::System(KVM_SYSTEM_EVENT_RESET) => VcpuEvent::Exit(ExitReason::Reset),
            Outcome::System(KVM_SYSTEM_EVENT_SHUTDOWN) => VcpuEvent::Exit(ExitReason::PowerOff),
            Outcome::System(KVM_SYSTEM_EVENT_CRASH) => VcpuEvent::Exit(ExitReason::GuestPanic),
            Outcome::System(kind) => VcpuEvent::Exit(ExitReason::UnexpectedExit {
                vcpu,
                rip: self.rip(),
                exit: format!("SystemEvent({kind})"),
            }),
            Outcome::Unexpected(exit) => VcpuEvent::Exit(ExitReason::UnexpectedExit {
                vcpu,
                rip: self.rip(),
                exit,
            }),
            Outcome::RunFailed(error) => VcpuEvent::Exit(ExitReason::RunFailed { vcpu, error }),
        }
    }

    /// The instruction pointer, for error messages (0 if unreadable).
    pub fn rip(&self) -> u64 {
        self.fd.get_regs().map(|r| r.rip).unwrap_or(0)
    }
}

/// What a vCPU thread is doing, kept up to date cheaply (a clock read and
/// three relaxed stores before each KVM_RUN, and again for a port or MMIO
/// exit) so a dump tells a vCPU stuck in an exit handler from one that
/// runs (or halts) in the guest.
#[derive(Default)]
pub struct VcpuActivity {
    phase: AtomicU8,
    addr: AtomicU64,
    since_us: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Starting,
    InGuest,
    PioRead,
    PioWrite,
    MmioRead,
    MmioWrite,
    Parked,
    Exited,
}

impl Phase {
    const ALL: [Phase; 8] = [
        Phase::Starting,
        Phase::InGuest,
        Phase::PioRead,
        Phase::PioWrite,
        Phase::MmioRead,
        Phase::MmioWrite,
        Phase::Parked,
        Phase::Exited,
    ];
}

/// Microseconds since the first call: a cheap monotonic clock for
/// [`VcpuActivity`].
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

impl VcpuActivity {
    fn set(&self, phase: Phase, addr: u64) {
        self.addr.store(addr, Ordering::Relaxed);
        self.since_us.store(now_us(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        Phase::ALL
            .get(usize::from(self.phase.load(Ordering::Acquire)))
            .copied()
            // Only `set` writes the byte, always from a Phase.
            .unwrap_or(Phase::Starting)
    }

    /// Whether the thread will answer a dump request (parked and exited
    /// threads do not run their loop).
    fn answers_dumps(&self) -> bool {
        !matches!(self.phase(), Phase::Parked | Phase::Exited)
    }

    /// What the thread is doing, in words, and for how many ms.
    pub fn describe(&self) -> (String, u64) {
        let phase = self.phase();
        let addr = self.addr.load(Ordering::Relaxed);
        let for_ms = now_us().saturating_sub(self.since_us.load(Ordering::Relaxed)) / 1000;
        let what = match phase {
            Phase::Starting => "starting".to_string(),
            Phase::InGuest => "in KVM_RUN (running or halted in the guest)".to_string(),
            Phase::PioRead => format!("handling a port read of {addr:#x}"),
            Phase::PioWrite => format!("handling a port write to {addr:#x}"),
            Phase::MmioRead => format!("handling an MMIO read of {addr:#x}"),
            Phase::MmioWrite => format!("handling an MMIO write to {addr:#x}"),
            Phase::Parked => "parked (VM paused)".to_string(),
            Phase::Exited => "exited".to_string(),
        };
        (what, for_ms)
    }
}

/// A vCPU's answer to dump request number `.1`: its index, the request,
/// its state or why it could not read it.
type VcpuAnswer = (u8, u64, Result<crate::dump::VcpuState, String>);

/// Shared between the vCPU threads and whoever waits for the VM to end:
/// the first reason reported wins.
pub struct ExitSlot {
    reason: Mutex<Option<ExitReason>>,
    event: EventFd,
}

impl ExitSlot {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            event: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    pub fn report(&self, reason: ExitReason) {
        let mut slot = devices::bus::lock(&self.reason);
        if slot.is_none() {
            *slot = Some(reason);
        }
        if let Err(e) = self.event.write(1) {
            tracing::error!("cannot signal VM exit: {e}");
        }
    }

    pub fn take(&self) -> Option<ExitReason> {
        devices::bus::lock(&self.reason).take()
    }

    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only job is to make KVM_RUN return EINTR.
}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_signal_handler(kick_signal(), on_kick) {
            tracing::error!("cannot install the vCPU kick handler: {e}");
        }
    });
}

/// Called on a vCPU thread just before its first KVM_RUN (start-up
/// measurements).
pub type FirstRunHook = Box<dyn FnOnce() + Send>;

/// Shared by the vCPU threads and whoever controls them: stop, pause and
/// resume. vCPUs check it between KVM_RUNs; a kick (signal) makes a vCPU
/// leave KVM_RUN so it looks.
#[derive(Default)]
pub struct RunControl {
    stop: Arc<AtomicBool>,
    paused: Mutex<bool>,
    resumed: Condvar,
    parked: AtomicUsize,
    threads: Mutex<Vec<libc::pthread_t>>,
    /// Each vCPU's activity, by index.
    activities: Mutex<Vec<(u8, Arc<VcpuActivity>)>>,
    /// Bumped to ask every vCPU for its state; each answers once per value.
    dump_wanted: AtomicU64,
    dumps: Mutex<Vec<VcpuAnswer>>,
    dump_answered: Condvar,
    /// Run once every vCPU is parked by [`RunControl::pause`].
    pause_hooks: Mutex<Vec<PauseHook>>,
}

type PauseHook = Box<dyn Fn() + Send>;

impl RunControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn kick_all(&self) {
        for &t in devices::bus::lock(&self.threads).iter() {
            // SAFETY: `t` belongs to a vCPU thread whose JoinHandle is kept
            // until after the last kick (stop_all), so the id is valid.
            unsafe { libc::pthread_kill(t, kick_signal()) };
        }
    }

    /// The flag that stops every vCPU loop at its next exit, for devices
    /// that end the VM from a vCPU thread.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn is_paused(&self) -> bool {
        *devices::bus::lock(&self.paused)
    }

    /// Has `hook` run each time a pause has parked every vCPU (the console
    /// sends out a partial line then).
    pub fn on_pause(&self, hook: PauseHook) {
        devices::bus::lock(&self.pause_hooks).push(hook);
    }

    /// Parks every vCPU outside KVM_RUN; returns once all are parked (or
    /// after `timeout`, returning false).
    pub fn pause(&self, timeout: Duration) -> bool {
        *devices::bus::lock(&self.paused) = true;
        let want = devices::bus::lock(&self.threads).len();
        let deadline = Instant::now() + timeout;
        while self.parked.load(Ordering::Acquire) < want {
            if Instant::now() >= deadline || self.is_stopping() {
                return false;
            }
            self.kick_all();
            std::thread::sleep(Duration::from_millis(1));
        }
        for hook in devices::bus::lock(&self.pause_hooks).iter() {
            hook();
        }
        true
    }

    pub fn resume(&self) {
        *devices::bus::lock(&self.paused) = false;
        self.resumed.notify_all();
    }

    /// Asks every vCPU for its state (kicking them out of the guest) and
    /// waits up to `patience`; a vCPU that does not answer is reported with
    /// what it was last seen doing.
    pub(crate) fn collect_dumps(&self, patience: Duration) -> Vec<crate::dump::VcpuDump> {
        let generation = self.dump_wanted.fetch_add(1, Ordering::AcqRel) + 1;
        let activities = devices::bus::lock(&self.activities).clone();
        let deadline = Instant::now() + patience;
        let mut dumps = devices::bus::lock(&self.dumps);
        loop {
            let answered = |i: u8, d: &Vec<(u8, u64, _)>| {
                d.iter()
                    .any(|(idx, gen, _)| *idx == i && *gen == generation)
            };
            let busy = activities
                .iter()
                .any(|(i, a)| a.answers_dumps() && !answered(*i, &dumps));
            let now = Instant::now();
            if !busy || now >= deadline {
                break;
            }
            drop(dumps);
            self.kick_all();
            dumps = devices::bus::lock(&self.dumps);
            let wait = (deadline - now).min(Duration::from_millis(20));
            dumps = self
                .dump_answered
                .wait_timeout(dumps, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let mut out: Vec<_> = activities
            .iter()
            .map(|(index, activity)| {
                let answers = activity.answers_dumps();
                let (activity, for_ms) = activity.describe();
                let answer = dumps
                    .iter()
                    .find(|(i, gen, _)| i == index && *gen == generation)
                    .map(|(_, _, r)| r.clone());
                let (state, note) = match answer {
                    Some(Ok(state)) => (Some(state), None),
                    Some(Err(e)) => (None, Some(format!("cannot read its state: {e}"))),
                    None if !answers => (None, None),
                    None => (
                        None,
                        Some(format!(
                            "did not answer within {patience:?}: stuck in the activity above"
                        )),
                    ),
                };
                crate::dump::VcpuDump {
                    index: *index,
                    activity,
                    for_ms,
                    state,
                    note,
                }
            })
            .collect();
        dumps.retain(|(_, gen, _)| *gen == generation);
        out.sort_by_key(|d| d.index);
        out
    }

    /// Answers a pending dump request from the vCPU's own thread.
    fn answer_dump(&self, vcpu: &Vcpu, seen: &mut u64) {
        let wanted = self.dump_wanted.load(Ordering::Acquire);
        if wanted == *seen {
            return;
        }
        *seen = wanted;
        let state = crate::dump::capture(&vcpu.fd);
        devices::bus::lock(&self.dumps).push((vcpu.index, wanted, state));
        self.dump_answered.notify_all();
    }

    /// Parks the calling vCPU thread while paused.
    fn wait_while_paused(&self) {
        let mut paused = devices::bus::lock(&self.paused);
        if !*paused {
            return;
        }
        self.parked.fetch_add(1, Ordering::AcqRel);
        while *paused && !self.is_stopping() {
            paused = self.resumed.wait(paused).unwrap_or_else(|e| e.into_inner());
        }
        self.parked.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running vCPU thread.
pub struct VcpuThread {
    handle: JoinHandle<()>,
}

/// Starts `vcpu` on its own thread. It runs until it reports an exit to
/// `slot` or `control` stops it.
pub fn spawn(
    mut vcpu: Vcpu,
    control: Arc<RunControl>,
    slot: Arc<ExitSlot>,
    seccomp: Option<Arc<crate::seccomp::Filters>>,
    before_first_run: Option<FirstRunHook>,
) -> std::io::Result<VcpuThread> {
    install_kick_handler();
    devices::bus::lock(&control.activities).push((vcpu.index(), vcpu.activity.clone()));
    let thread_control = control.clone();
    let handle = std::thread::Builder::new()
        .name(format!("vcpu{}", vcpu.index()))
        .spawn(move || {
            let control = thread_control;
            if let Some(filters) = seccomp {
                if let Err(e) = filters.apply_to_vcpu_thread() {
                    // Never run a guest on an unfiltered vCPU.
                    slot.report(ExitReason::RunFailed {
                        vcpu: vcpu.index(),
                        error: e.to_string(),
                    });
                    vcpu.activity.set(Phase::Exited, 0);
                    return;
                }
                crate::seccomp::test_violation("vcpu");
            }
            if let Some(hook) = before_first_run {
                hook();
            }
            let mut dump_seen = 0;
            while !control.is_stopping() {
                if control.is_paused() {
                    vcpu.activity.set(Phase::Parked, 0);
                    control.wait_while_paused();
                }
                if control.is_stopping() {
                    break;
                }
                control.answer_dump(&vcpu, &mut dump_seen);
                match vcpu.run_once() {
                    VcpuEvent::Continue | VcpuEvent::Interrupted => {}
                    VcpuEvent::Exit(reason) => {
                        tracing::debug!("vCPU {} exits: {reason}", vcpu.index());
                        slot.report(reason);
                        break;
                    }
                }
            }
            vcpu.activity.set(Phase::Exited, 0);
        })?;
    devices::bus::lock(&control.threads).push(handle.as_pthread_t());
    Ok(VcpuThread { handle })
}

/// Stops the vCPU threads. Each is kicked until it leaves KVM_RUN (a kick
/// can land just before it enters, so one is not enough). Threads still
/// running after `timeout` are left behind and reported.
pub fn stop_all(control: &RunControl, threads: Vec<VcpuThread>, timeout: Duration) {
    control.stop.store(true, Ordering::Release);
    control.resumed.notify_all();
    let deadline = Instant::now() + timeout;
    while threads.iter().any(|t| !t.handle.is_finished()) {
        if Instant::now() >= deadline {
            tracing::error!("vCPU threads did not stop within {timeout:?}");
            // Leave the handles (and so the thread ids) alive: the process
            // is about to end anyway.
            std::mem::forget(threads);
            return;
        }
        control.kick_all();
        std::thread::sleep(Duration::from_millis(1));
    }
    devices::bus::lock(&control.threads).clear();
    for t in threads {
        let _ = t.handle.join();
    }
}
