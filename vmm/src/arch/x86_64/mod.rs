//! x86_64: memory layout, boot protocols and vCPU state.

pub mod boot_params;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
