pub mod changes;
pub mod create;
pub mod debug;
pub mod direnv;
pub mod doctor;
pub mod exec;
pub mod lifecycle;
pub mod list;
pub mod logs;
pub mod net_cmd;
pub mod port;
pub mod run;
pub mod service;
pub mod trust;
pub mod up;
pub mod vmm_process;

/// Exit statuses of `mvm` (documented in `mvm run --help`).
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_GUEST_PANIC: u8 = 3;
pub const EXIT_GUEST_FAULT: u8 = 4;
