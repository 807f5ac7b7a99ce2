//! netstack: the host network plane of mvm.
//!
//! A bridge (`virbr-mvm`, gateway of a private subnet), one persistent tap
//! per VM (isolated bridge port unless allowed), a lease per VM in a state
//! folder (stable MAC and address), DHCP and DNS for the guests, outbound
//! NAT, port forwards, VM isolation, exact cleanup and crash reconciliation.
//!
//! The API is synchronous (no async runtime): netlink through
//! `netlink-packet-route` on a blocking `netlink-sys` socket, nftables
//! through `nft -j` with the `nftables` crate's schema, DHCP with
//! `dhcproto`, DNS with `hickory-proto`.
//!
//! Everything acts in the calling thread's network namespace, which is how
//! the tests run it inside namespaces they create.
//!
//! Who calls what:
//! - `mvm net setup` (root): [`setup_host`]; `mvm net teardown`: [`teardown_host`].
//! - `mvm start`: [`attach_vm`], spawn the VMM, [`set_owner_pid`].
//! - the VMM: [`open_tap`] by name, the MAC from [`VmNet`], and a
//!   [`PortProxy`] for the forwards (host-local connections).
//! - `mvm port`: [`add_forward`] / [`remove_forward`] / [`list_forwards`]
//!   (then tell the VMM to add/remove the proxy).
//! - `mvm stop` / `mvm rm`: [`detach_vm`] / [`forget_vm`].
//! - the network services (one per host): [`DhcpServer`], [`DnsServer`].
//! - start-up / `mvm doctor`: [`reconcile`], [`privileges`].

#![deny(missing_docs)]

mod addr;
mod dhcp;
mod dns;
mod error;
mod forward;
mod host;
mod lease;
mod link;
pub mod lockfile;
mod nft;
mod privilege;
mod tap;

pub use addr::{
    pool_binding, pool_tap_name, tap_name, validate_vm_id, validate_vm_name, Cidr, MacAddr, Subnet,
    POOL_PREFIX, TAP_PREFIX,
};
pub use dhcp::{
    handle_packet as dhcp_handle_packet, Dest as DhcpDest, DhcpParams, DhcpServer,
    Reply as DhcpReply,
};
pub use dns::{
    handle_query as dns_handle_query, upstreams_from_resolv_conf, Action as DnsAction, DnsConfig,
    DnsServer,
};
pub use error::{Error, Result};
pub use forward::{check_host_port_free, PortForward, PortProxy, Protocol};
pub use host::{
    add_forward, attach_vm, detach_vm, forget_vm, leases, list_forwards, reconcile, remove_forward,
    set_owner_pid, setup_host, teardown_host, vm_net, HostSetup, NetConfig, ReconcileReport, VmNet,
    VmSpec,
};
pub use lease::{Active, Lease, Registry};
pub use privilege::{privileges, require_net_admin, Privileges};
pub use tap::open_tap;

/// Low-level pieces, public for tests and tools (`mvm doctor`).
pub mod lowlevel {
    pub use crate::link::{sysctl_get, sysctl_set, Addr, Link, Route, Rtnl};
    pub use crate::nft::{Elem, ElemKey, Nft, NftParams, REFUSED_V4};
    pub use crate::tap::create_persistent_tap;
}
