//! The allowlists. Grouped by who needs a call; a call in a group that
//! both filters use is listed once (`files`, `basics`).

use libc::*;

/// When a listed call is allowed.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// Always.
    Any,
    /// When argument `.0` equals `.1`.
    ArgEq(u8, u64),
    /// When argument `.0` (its low 32 bits) masked with `.1` equals `.2`.
    ArgMasked(u8, u32, u64),
}

use Rule::*;

fn any(calls: &[c_long]) -> Vec<(i64, Rule)> {
    calls.iter().map(|&nr| (nr, Any)).collect()
}

/// Every thread: memory, time, signals, futexes, exiting, plain I/O on
/// descriptors it already holds.
fn basics() -> Vec<(i64, Rule)> {
    let mut v = any(&[
        SYS_read,
        SYS_write,
        SYS_readv,
        SYS_writev,
        SYS_close,
        SYS_fcntl,
        SYS_dup,
        SYS_futex,
        SYS_mmap,
        SYS_munmap,
        SYS_mremap,
        SYS_mprotect,
        SYS_madvise,
        SYS_brk,
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_sigaltstack,
        SYS_restart_syscall,
        SYS_exit,
        SYS_exit_group,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_sched_yield,
        SYS_getpid,
        SYS_gettid,
        // HashMap seeds, guest entropy.
        SYS_getrandom,
    ]);
    // Kicks (a vCPU out of KVM_RUN) go to threads of this process only.
    v.push((SYS_tgkill, ArgEq(0, std::process::id() as u64)));
    v
}

/// Serving a file-system share (cowfs) and writing the console file
/// (which rotates): on the vCPU that notified, or on the event loop.
fn files() -> Vec<(i64, Rule)> {
    any(&[
        // Some libc paths still open(2) by path (seen from vCPUs serving
        // shares); it can do no more than openat(AT_FDCWD).
        SYS_open,
        SYS_openat,
        SYS_openat2,
        SYS_newfstatat,
        SYS_fstat,
        SYS_statx,
        SYS_lseek,
        SYS_getdents64,
        SYS_fstatfs,
        SYS_readlinkat,
        SYS_mkdirat,
        SYS_mknodat,
        SYS_symlinkat,
        SYS_linkat,
        SYS_unlinkat,
        SYS_renameat2,
        SYS_rename,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchown,
        SYS_fchownat,
        SYS_utimensat,
        SYS_fallocate,
        SYS_ftruncate,
        SYS_fsync,
        SYS_fdatasync,
        SYS_pread64,
        SYS_pwrite64,
        SYS_preadv,
        SYS_pwritev,
        SYS_copy_file_range,
        SYS_sendfile,
        SYS_fgetxattr,
        SYS_fsetxattr,
        SYS_flistxattr,
        SYS_fremovexattr,
        // O_PATH descriptors take their xattrs through /proc/self/fd paths.
        SYS_getxattr,
        SYS_lgetxattr,
        SYS_setxattr,
        SYS_lsetxattr,
        SYS_listxattr,
        SYS_llistxattr,
        SYS_removexattr,
        SYS_lremovexattr,
    ])
}

/// ioctls of devices a vCPU activates (a guest's feature ack) or serves:
/// KVM (irqfds, ioeventfds, its own run loop and dumps), vhost, and the
/// tap's offload and header settings. Not the terminal's (TIOCSTI would
/// type into the user's shell).
fn device_ioctls() -> Vec<(i64, Rule)> {
    let mut v = vec![
        // KVM's type byte.
        (SYS_ioctl, ArgMasked(1, 0xff00, 0xae00)),
        // vhost's.
        (SYS_ioctl, ArgMasked(1, 0xff00, 0xaf00)),
    ];
    for req in [
        TUNSETOFFLOAD,
        TUNSETVNETHDRSZ,
        TUNGETIFF,
        TUNGETFEATURES,
        FIONBIO,
        FIOCLEX,
    ] {
        v.push((SYS_ioctl, ArgEq(1, req)));
    }
    v
}

/// vCPU threads: basics, files, device ioctls, and the vhost-user
/// messages of a device's activation (on a socket already open).
pub fn vcpu() -> Vec<(i64, Rule)> {
    let mut v = basics();
    v.extend(files());
    v.extend(device_ioctls());
    // A device activated by a vCPU may make eventfds (vhost's call and
    // kick) and register them with the event loop.
    v.extend(any(&[
        SYS_sendmsg,
        SYS_recvmsg,
        SYS_epoll_ctl,
        SYS_eventfd2,
        // The console arms its flush timer for a partial line.
        SYS_timerfd_settime,
    ]));
    v
}

/// The whole process once the VM runs: the vCPU's calls plus the event
/// loop (epoll, the API socket, vsock's host connections), the port proxy
/// (binding host ports, relay threads), the dump thread (sigwait), the
/// terminal of `mvm run`, and the exit path (removing runtime files).
pub fn process() -> Vec<(i64, Rule)> {
    let mut v = vcpu();
    v.extend(any(&[
        SYS_epoll_create1,
        SYS_epoll_wait,
        SYS_epoll_pwait,
        SYS_poll,
        SYS_ppoll,
        SYS_timerfd_create,
        SYS_timerfd_settime,
        SYS_pipe2,
        SYS_accept,
        SYS_accept4,
        SYS_connect,
        SYS_bind,
        SYS_listen,
        SYS_setsockopt,
        SYS_getsockopt,
        SYS_getsockname,
        SYS_getpeername,
        SYS_sendto,
        SYS_recvfrom,
        SYS_shutdown,
        SYS_rt_sigaction,
        SYS_rt_sigtimedwait,
        // Threads (std's spawn: clone3, with clone as glibc's fallback).
        SYS_clone3,
        SYS_set_robust_list,
        SYS_rseq,
        SYS_sched_getaffinity,
        SYS_unlink,
        SYS_rmdir,
        SYS_mkdir,
        SYS_prlimit64,
    ]));
    // Only Unix, IPv4 and IPv6 sockets.
    for domain in [AF_UNIX, AF_INET, AF_INET6] {
        v.push((SYS_socket, ArgEq(0, domain as u64)));
    }
    v.push((
        SYS_clone,
        ArgMasked(0, CLONE_THREAD as u32, CLONE_THREAD as u64),
    ));
    // Thread names, and the no_new_privs a vCPU thread sets before it
    // adds its own filter.
    for op in [PR_SET_NAME, PR_GET_NAME, PR_SET_NO_NEW_PRIVS] {
        v.push((SYS_prctl, ArgEq(0, op as u64)));
    }
    v.push((SYS_seccomp, ArgEq(0, 1 /* SECCOMP_SET_MODE_FILTER */)));
    // The terminal of `mvm run` (raw mode and its restore, window size).
    for req in [TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ] {
        v.push((SYS_ioctl, ArgEq(1, req)));
    }
    v
}
