//! Managed mvm VMs, the layer between the `mvm` command line and the
//! `vmm` crate.
//!
//! A managed VM is a folder under `$MVM_HOME/vms/NAME` ([`state`]) holding
//! its spec (`vm.toml`, [`state::VmSpec`]); starting it builds the guest
//! image and command line ([`image`]), attaches it to the host network
//! ([`net`]), and runs the VMM as a detached process (`mvm _vmm DIR`, whose
//! body is [`vmm_process::run`]); the guest agent is then reached through
//! the VM's vsock socket ([`agent`]). Projects ([`project`]) say what a
//! VM is from a folder's `mvm.toml` or what detection infers.
//!
//! The path of `mvm up` ([`up::up`]): load and detect the project
//! ([`project::load`]), make its spec ([`create::spec_for`]), write the VM
//! folder if new ([`create::write_vm`]), take the VM's lock
//! ([`state::VmLock`]), start it ([`lifecycle::start_locked`]: kernel and
//! initramfs, network, `vmm.json`, spawn `mvm _vmm`, wait for its API
//! socket, declare the services to the agent), then wait for the services
//! to be ready ([`services::wait_ready`]).
//!
//! Around it: [`create`] (a spec from options and a project, validated:
//! the one memory check), [`lifecycle`] (start, stop, restart, rm, the
//! throw-away VM of `mvm run`), [`services`], [`ports`] (forwards, also
//! while running, through the VMM's typed `PortOp`s), [`changes`] (the
//! guest's changes to the project: diff, commit), [`project::direnv`].
//!
//! Nothing here prints: progress and warnings go to a [`Report`] the caller
//! passes in, errors are [`Error`]s. A program that starts VMs must serve
//! `EXE _vmm DIR` (and `_netd`, `_linger`) itself, as the VMM and helpers
//! run as detached copies of the current executable: see `examples/up.rs`.

pub mod agent;
pub mod cgroup;
pub mod changes;
pub mod create;
pub mod error;
pub mod image;
pub mod lifecycle;
pub mod net;
pub mod paths;
pub mod ports;
pub mod project;
pub mod report;
pub mod services;
pub mod startup;
pub mod state;
pub mod supervisor;
pub mod up;
pub mod vmm_process;
pub mod volume;

pub use error::{Error, Result};
pub use report::Report;
