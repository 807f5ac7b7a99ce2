pub mod arch;
pub mod config;
pub mod kvm;
pub mod loader;
pub mod memory;
