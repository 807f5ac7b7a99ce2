//! seccomp-bpf allowlists for the VMM's threads: the lists here, their
//! BPF code emitted by [`tree`] (checked against rust-vmm's `seccompiler`,
//! which also installs them).
//!
//! Two filters, stacked:
//! - the **process** filter, installed on every thread of the process
//!   (TSYNC) when the VM starts running: what the event loop (devices, the
//!   API, the port proxy's bind and relay threads), the dump thread and
//!   the exit path need. No exec, no fork (threads only), no mount, no
//!   ptrace, no `open_by_handle_at`, no new namespaces, no kernel keyring,
//!   no module or BPF loading;
//! - the **vCPU** filter, added by each vCPU thread before its first
//!   KVM_RUN: KVM, tap and vhost ioctls only, the file-system serving
//!   calls (a FUSE request is served on the vCPU that notified), no new
//!   sockets, no thread creation. The kernel applies both: a vCPU can do
//!   only what both allow.
//!
//! The lists are in [`lists`]; each entry says who needs it. A call
//! outside them kills the process (SIGSYS, the kernel logs the syscall
//! number), or with [`Seccomp::Log`] is allowed and logged (the way to
//! find a missing entry: `dmesg | grep 'type=1326'`).

mod lists;
mod tree;

use seccompiler::{BpfProgram, SeccompAction};
use serde::{Deserialize, Serialize};

pub use lists::Rule;

/// What the filters do with a call they do not allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// No filter (embedders that run other code in the process, tests).
    #[default]
    Off,
    /// Kill the process: what mvm runs with.
    Kill,
    /// Allow and log (kernel audit log): for finding a missing entry.
    Log,
}

impl std::str::FromStr for Seccomp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "kill" | "on" => Ok(Self::Kill),
            "log" => Ok(Self::Log),
            other => Err(format!(
                "unknown seccomp mode '{other}' (expected on, off or log)"
            )),
        }
    }
}

/// Which threads the process filter covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every thread of the process (TSYNC): a process that is only the VMM.
    #[default]
    Process,
    /// The thread that runs the VM and the threads it starts (vCPUs, port
    /// relays): for a program with more to do once the VM ends (`mvm run`
    /// tears its network down with netlink and nft). Its other threads
    /// stay unfiltered.
    Thread,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the {0} seccomp filter: {1}")]
    Build(&'static str, String),
    #[error("cannot install the {0} seccomp filter: {1}")]
    Install(&'static str, String),
}

/// The compiled filters of one VM.
#[derive(Debug, Clone)]
pub struct Filters {
    process: BpfProgram,
    vcpu: BpfProgram,
}

impl Filters {
    /// Compiles both filters with `mode`'s action (None for
    /// [`Seccomp::Off`]).
    pub fn new(mode: Seccomp) -> Result<Option<Self>, Error> {
        let action = match mode {
            Seccomp::Off => return Ok(None),
            Seccomp::Kill => SeccompAction::KillProcess,
            Seccomp::Log => SeccompAction::Log,
        };
        Ok(Some(Self {
            process: compile("process", &lists::process(), action.clone())?,
            vcpu: compile("vCPU", &lists::vcpu(), action)?,
        }))
    }

    /// Filters every thread of the process (and those it starts later),
    /// or with [`Scope::Thread`] the calling thread (and those it starts).
    pub fn apply_to_process(&self, scope: Scope) -> Result<(), Error> {
        match scope {
            Scope::Process => seccompiler::apply_filter_all_threads(&self.process),
            Scope::Thread => seccompiler::apply_filter(&self.process),
        }
        .map_err(|e| Error::Install("process", e.to_string()))
    }

    /// Adds the vCPU filter to the calling thread.
    pub fn apply_to_vcpu_thread(&self) -> Result<(), Error> {
        seccompiler::apply_filter(&self.vcpu).map_err(|e| Error::Install("vCPU", e.to_string()))
    }
}

/// The test hook: with `MVM_TEST_SECCOMP_VIOLATION` naming this thread's
/// kind (`vcpu`, `process`), the thread makes a call no list allows, so a
/// test can see the filter kill the process. `getppid` harms nothing
/// where no filter is installed.
pub fn test_violation(kind: &str) {
    if std::env::var_os("MVM_TEST_SECCOMP_VIOLATION").is_some_and(|v| v == kind) {
        // SAFETY: getppid takes no arguments and touches no memory.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

fn compile(
    name: &'static str,
    rules: &[(i64, Rule)],
    mismatch: SeccompAction,
) -> Result<BpfProgram, Error> {
    tree::compile(rules, u32::from(mismatch)).map_err(|e| Error::Build(name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile_and_are_small() {
        let f = Filters::new(Seccomp::Kill).unwrap().unwrap();
        // The kernel's limit is 4096 instructions per filter.
        assert!(f.process.len() < 1024, "{}", f.process.len());
        assert!(f.vcpu.len() < 1024, "{}", f.vcpu.len());
        assert!(Filters::new(Seccomp::Off).unwrap().is_none());
    }

    /// The tree gives seccompiler's own linear filter's verdict for every
    /// syscall number (and x32 and i386 calls), with the argument values
    /// the rules name, a bit off them, and zeros.
    #[test]
    fn the_filters_give_seccompilers_verdicts() {
        use tree::bpf::{run, Call};
        for (name, rules) in [("process", lists::process()), ("vCPU", lists::vcpu())] {
            for action in [SeccompAction::KillProcess, SeccompAction::Log] {
                let linear = tree::oracle::seccompiler_filter(&rules, action.clone());
                let tree = compile(name, &rules, action).unwrap();
                let with_checks: std::collections::HashSet<i64> = rules
                    .iter()
                    .filter(|(_, r)| !matches!(r, Rule::Any))
                    .map(|(nr, _)| *nr)
                    .collect();
                let mut values = vec![0u64, u64::MAX];
                let mut args = Vec::new();
                for (_, rule) in &rules {
                    let (arg, v, mask) = match *rule {
                        Rule::Any => continue,
                        Rule::ArgEq(arg, v) => (arg, v, u64::MAX),
                        Rule::ArgMasked(arg, mask, v) => (arg, v, u64::from(mask)),
                    };
                    args.push(arg as usize);
                    values.extend([
                        v,
                        v ^ 1,
                        v ^ (1 << 40),
                        v | !mask,
                        v ^ (mask & mask.wrapping_neg()),
                    ]);
                }
                args.sort_unstable();
                args.dedup();
                let numbers = (0..1024u32).chain((0..512).map(|nr| nr | 0x4000_0000));
                let mut worst = (0, 0);
                for nr in numbers {
                    for arch in [tree::AUDIT_ARCH_X86_64, 3 | 0x4000_0000] {
                        let checked = with_checks.contains(&i64::from(nr));
                        let mut check = |a: [u64; 6]| {
                            let call = Call { nr, arch, args: a };
                            let (verdict, steps) = run(&tree, &call);
                            let (expected, linear_steps) = run(&linear, &call);
                            assert_eq!(verdict, expected, "{name} filter: {call:?}");
                            if !checked {
                                worst = (worst.0.max(steps), worst.1.max(linear_steps));
                            }
                        };
                        check([0; 6]);
                        if checked {
                            for &arg in &args {
                                for &v in &values {
                                    let mut a = [0; 6];
                                    a[arg] = v;
                                    check(a);
                                }
                            }
                        }
                    }
                }
                // What the kernel's install-time walk (calls without
                // argument checks) gains: the longest walk against
                // seccompiler's.
                assert!(worst.0 * 4 < worst.1, "{name}: {worst:?}");
            }
        }
    }

    #[test]
    fn the_vcpu_list_is_inside_the_process_list() {
        // Stacked filters: a vCPU call the process filter refuses would be
        // refused anyway, so listing it would only mislead.
        let process: std::collections::HashSet<i64> =
            lists::process().iter().map(|(nr, _)| *nr).collect();
        for (nr, _) in lists::vcpu() {
            assert!(
                process.contains(&nr),
                "syscall {nr} is in the vCPU list only"
            );
        }
    }

    #[test]
    fn dangerous_calls_are_in_neither_list() {
        let all: Vec<i64> = lists::process()
            .iter()
            .chain(lists::vcpu().iter())
            .map(|(nr, _)| *nr)
            .collect();
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_open_by_handle_at,
            libc::SYS_name_to_handle_at,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_kexec_load,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_process_vm_writev,
            libc::SYS_perf_event_open,
            libc::SYS_setuid,
            libc::SYS_setgid,
        ] {
            assert!(!all.contains(&nr), "syscall {nr} must not be allowed");
        }
    }
}
