//! The DNS forwarder's query handling on arbitrary bytes (what a hostile
//! guest can send to port 53): it must never panic; every answer it makes
//! must decode and carry the query's id; responses are never answered.
#![no_main]

use std::net::Ipv4Addr;

use hickory_proto::op::Message;
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;
use netstack::{dns_handle_query, DnsAction, MacAddr, Registry};

fuzz_target!(|data: &[u8]| {
    let reg = Registry::fixed(&[(
        MacAddr::for_vm("web"),
        Ipv4Addr::new(10, 77, 0, 2),
        "web",
        true,
    )]);
    let domain = Name::from_ascii("mvm.").unwrap();
    match dns_handle_query(&domain, &reg, data) {
        DnsAction::Reply(bytes) => {
            assert!(data.len() >= 12 && data[2] & 0x80 == 0);
            let m = Message::from_vec(&bytes).expect("our answer must decode");
            assert_eq!(m.metadata.id, u16::from_be_bytes([data[0], data[1]]));
        }
        DnsAction::Forward => assert!(data.len() >= 12),
        DnsAction::Drop => {}
    }
});
