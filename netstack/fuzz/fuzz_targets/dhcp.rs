//! The DHCP server's packet handling on arbitrary bytes (what a hostile
//! guest can send to port 67): it must never panic, and every reply it
//! makes must be a well-formed BOOTREPLY for a known VM's MAC.
#![no_main]

use std::net::Ipv4Addr;

use dhcproto::v4::{Message, Opcode};
use dhcproto::Decodable;
use libfuzzer_sys::fuzz_target;
use netstack::{dhcp_handle_packet, DhcpParams, MacAddr, Registry, Subnet};

fuzz_target!(|data: &[u8]| {
    let params = DhcpParams {
        subnet: Subnet::default(),
        lease_secs: 3600,
        domain: "mvm".into(),
    };
    // 02:00:00:00:00:01 is the MAC the seed packets use.
    let reg = Registry::fixed(&[
        (
            MacAddr([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(10, 77, 0, 2),
            "web",
            true,
        ),
        (
            MacAddr::for_vm("db"),
            Ipv4Addr::new(10, 77, 0, 3),
            "db",
            false,
        ),
    ]);
    if let Some(reply) = dhcp_handle_packet(&params, &reg, data) {
        let m = Message::from_bytes(&reply.bytes).expect("our reply must decode");
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.hlen(), 6);
        let mac = MacAddr(m.chaddr().try_into().unwrap());
        assert!(reg.by_mac(&mac).is_some());
    }
});
