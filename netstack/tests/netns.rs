//! netstack against the real kernel, inside network namespaces each test
//! creates (and deletes, also on failure): bridge and taps, DHCP with
//! busybox udhcpc, DNS with busybox nslookup and a stub upstream, NAT to a
//! server in an "internet" namespace, port forwards, isolation, privilege
//! detection with the tap pool, cleanup, reconcile and bad input.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use netstack::lowlevel::{Nft, NftParams, Rtnl};
use netstack::*;

/// How `ip -d link` shows a tap owner: the user name if it has one.
fn user_label(uid: u32) -> String {
    let (ok, out) = sh_status(&format!("id -nu {uid}"));
    if ok {
        out.trim().to_string()
    } else {
        uid.to_string()
    }
}

fn spec(id: &str, allow: bool) -> VmSpec {
    VmSpec {
        id: id.into(),
        name: id.into(),
        allow_vm_to_vm: allow,
        allow: Vec::new(),
        owner_uid: 1000,
    }
}

/// A VM that allows these networks (`network.allow`).
fn spec_allowing(id: &str, allow: &[&str]) -> VmSpec {
    VmSpec {
        allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        ..spec(id, false)
    }
}

/// Set the host up (no tap pool) and attach these VMs, in order.
fn set_up(w: &World, specs: Vec<VmSpec>) -> Vec<VmNet> {
    let cfg = w.cfg.clone();
    w.host.run(move || {
        setup_host(&cfg, 0, 0).unwrap();
        specs.iter().map(|s| attach_vm(&cfg, s).unwrap()).collect()
    })
}

/// Whether a TCP connection was refused at once (reset), as our reject
/// rules answer, rather than timing out.
fn refused(r: &std::io::Result<String>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

macro_rules! need_root {
    () => {
        if !can_run() {
            return;
        }
    };
}

#[test]
fn bridge_taps_leases_and_pool() {
    need_root!();
    let w = World::new("br");
    let cfg = w.cfg.clone();
    let setup = w.host.run(move || setup_host(&cfg, 1000, 2).unwrap());
    assert_eq!(setup.pool, vec!["mvmp-0", "mvmp-1"]);
    assert_eq!(setup.forwarding_enabled, vec!["up0"]);
    let addr = w.host.exec("ip -4 -o addr show dev virbr-mvm");
    assert!(addr.contains("10.77.0.1/24"), "{addr}");
    assert_eq!(
        w.host
            .exec("cat /proc/sys/net/ipv4/conf/virbr-mvm/forwarding")
            .trim(),
        "1"
    );
    assert_eq!(
        w.host
            .exec("cat /proc/sys/net/ipv4/conf/up0/forwarding")
            .trim(),
        "1"
    );
    // Only the interfaces, not the global switch.
    assert_eq!(
        w.host
            .exec("cat /proc/sys/net/ipv4/conf/lo/forwarding")
            .trim(),
        "0"
    );
    // The bridge keeps its MAC as taps come and go (guests cache it).
    let br_mac = w.host.exec("cat /sys/class/net/virbr-mvm/address");
    assert_eq!(
        w.host
            .exec("cat /sys/class/net/virbr-mvm/addr_assign_type")
            .trim(),
        "3",
        "set explicitly"
    );
    let pool = w.host.exec("ip -d link show mvmp-0");
    assert!(pool.contains("master virbr-mvm"), "{pool}");
    assert!(pool.contains("isolated on"), "{pool}");
    assert!(
        pool.contains(&format!("user {}", user_label(1000))),
        "{pool}"
    );

    let cfg = w.cfg.clone();
    let (a, b) = w.host.run(move || {
        (
            attach_vm(&cfg, &spec("web", false)).unwrap(),
            attach_vm(&cfg, &spec("db", true)).unwrap(),
        )
    });
    assert_eq!(w.host.exec("cat /sys/class/net/virbr-mvm/address"), br_mac);
    assert_eq!(a.tap, "mvm-web");
    assert_eq!(a.ip, Ipv4Addr::new(10, 77, 0, 2));
    assert_eq!(b.ip, Ipv4Addr::new(10, 77, 0, 3));
    assert_eq!(a.mac, MacAddr::for_vm("web"));
    let tap = w.host.exec("ip -d link show mvm-web");
    assert!(tap.contains("tun type tap"), "{tap}");
    assert!(tap.contains("vnet_hdr on"), "{tap}");
    assert!(tap.contains("persist on"), "{tap}");
    assert!(tap.contains(&format!("user {}", user_label(1000))), "{tap}");
    assert!(
        tap.contains("multi_queue") == tap.contains("multi_queue on")
            && !tap.contains("multi_queue on"),
        "{tap}"
    );
    assert!(
        tap.contains("master virbr-mvm") && tap.contains("isolated on"),
        "{tap}"
    );
    let tapdb = w.host.exec("ip -d link show mvm-db");
    assert!(tapdb.contains("isolated off"), "{tapdb}");
    // The VMM can open it by name.
    w.host.run(|| open_tap("mvm-web").unwrap());
    // Attach again while the attaching process lives: the same.
    let cfg = w.cfg.clone();
    let again = w
        .host
        .run(move || attach_vm(&cfg, &spec("web", false)).unwrap());
    assert_eq!(again, a);
    // Detach: the tap goes, the lease stays; re-attach keeps the address.
    let cfg = w.cfg.clone();
    let (l, re) = w.host.run(move || {
        detach_vm(&cfg, "web").unwrap();
        detach_vm(&cfg, "web").unwrap(); // idempotent
        let l = vm_net(&cfg, "web").unwrap();
        let re = attach_vm(&cfg, &spec("web", false)).unwrap();
        (l, re)
    });
    assert_eq!(l.tap, "");
    assert_eq!(re.ip, a.ip);
    assert_eq!(re.mac, a.mac);
    assert!(w.host.exec("ip -o link").contains("mvm-web"));
    // Forget frees the address for the next VM.
    let cfg = w.cfg.clone();
    let c = w.host.run(move || {
        forget_vm(&cfg, "web").unwrap();
        attach_vm(&cfg, &spec("cache", false)).unwrap()
    });
    assert_eq!(c.ip, Ipv4Addr::new(10, 77, 0, 2));
    assert!(!w.host.exec("ip -o link").contains("mvm-web"));
}

/// Drop CAP_NET_ADMIN from this thread's effective set.
fn drop_net_admin() {
    #[repr(C)]
    struct Hdr {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Hdr {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as the
    // kernel ABI requires; both live across the calls.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut h as *mut Hdr, d.as_mut_ptr()),
            0
        );
        d[0].effective &= !(1 << 12);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut h as *mut Hdr, d.as_ptr()),
            0
        );
    }
}

#[test]
fn unprivileged_uses_the_pool_and_says_what_is_missing() {
    need_root!();
    let w = World::new("priv");
    // Before setup, without CAP_NET_ADMIN: a clear error.
    let cfg = w.cfg.clone();
    let e = w.host.run(move || {
        drop_net_admin();
        assert!(!privileges().net_admin);
        let e = setup_host(&cfg, 1000, 1).unwrap_err().to_string();
        let e2 = attach_vm(&cfg, &spec("web", false))
            .unwrap_err()
            .to_string();
        (e, e2)
    });
    assert!(
        e.0.contains("CAP_NET_ADMIN") && e.0.contains("sudo mvm net setup"),
        "{}",
        e.0
    );
    assert!(
        e.1.contains("does not exist") && e.1.contains("mvm net setup"),
        "{}",
        e.1
    );
    assert!(!e.0.contains('\n'));
    let cfg = w.cfg.clone();
    w.host.run(move || setup_host(&cfg, 1000, 1).unwrap());
    let cfg = w.cfg.clone();
    let (a, e_allow, e_pool) = w.host.run(move || {
        drop_net_admin();
        let a = attach_vm(&cfg, &spec("web", false)).unwrap();
        let e_allow = attach_vm(&cfg, &spec("db", true)).unwrap_err().to_string();
        let e_pool = attach_vm(&cfg, &spec("db", false)).unwrap_err().to_string();
        detach_vm(&cfg, "web").unwrap();
        (a, e_allow, e_pool)
    });
    assert_eq!(a.tap, "mvmp-0");
    // The VM takes the MAC and address setup bound the pool tap to.
    let (pmac, pip) = pool_binding(&w.cfg.subnet, "mvmp-0").unwrap();
    assert_eq!((a.mac, a.ip), (pmac, pip));
    assert!(e_allow.contains("CAP_NET_ADMIN"), "{e_allow}");
    assert!(e_pool.contains("no free tap in the pool"), "{e_pool}");
    // The pool tap and its binding stay after detach.
    assert!(w.host.exec("ip -o link").contains("mvmp-0"));
    let bind = w.host.exec("nft list set bridge mvm bind");
    assert!(
        bind.contains(&format!("\"mvmp-0\" . {pmac} . {pip} comment \"pool\"")),
        "{bind}"
    );
    // And it holds: a guest behind the pool port gets out with its address,
    // not with another. (A veth of the tap's name stands in for the tap.)
    let _srv = tcp_whoami(&w.inet, &format!("{INET}:8000"));
    w.host.exec("ip link del mvmp-0");
    let vm = Ns::new("nsv0", &w.tag);
    sh(&format!(
        "ip -n {h} link add mvmp-0 type veth peer name eth0 netns {v} && \
         ip -n {v} link set eth0 address {pmac} up && \
         ip -n {h} link set mvmp-0 master virbr-mvm && ip -n {h} link set mvmp-0 up && \
         ip -n {v} addr add {pip}/24 dev eth0 && ip -n {v} route add default via {gw}",
        h = w.host.name,
        v = vm.name,
        gw = w.cfg.subnet.gateway()
    ));
    assert_eq!(tcp_get(&vm, &format!("{INET}:8000")).unwrap(), HOST_UP);
    vm.exec(&format!(
        "sh -c 'ip addr flush dev eth0 && ip addr add 10.77.0.77/24 dev eth0 && ip route add default via {}'",
        w.cfg.subnet.gateway()
    ));
    assert!(tcp_blocked(&vm, &format!("{INET}:8000")).is_err());
}

#[test]
fn dhcp_with_busybox_udhcpc() {
    need_root!();
    let mut w = World::new("dhcp");
    let cfg = w.cfg.clone();
    let (net, server) = w.host.run(move || {
        setup_host(&cfg, 0, 0).unwrap();
        let net = attach_vm(&cfg, &spec("web", false)).unwrap();
        let server = DhcpServer::start(&cfg.bridge, cfg.dhcp_params(), &cfg.state_dir).unwrap();
        (net, server)
    });
    let vm = w.plug_vm(&net, false, false);
    let dir = w.cfg.state_dir.clone();
    let script = dir.join("udhcpc.sh");
    let out = dir.join("udhcpc.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] || [ \"$1\" = renew ] || exit 0\n\
             echo \"$1 ip=$ip mask=$subnet router=$router dns=$dns host=$hostname lease=$lease domain=$domain\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod +x {}", script.display()));
    // -n: fail if no lease; -q: quit once bound; -R: release on quit.
    let (ok, log) = w.vms[vm].exec_status(&format!(
        "busybox udhcpc -i eth0 -n -q -R -t 5 -T 1 -s {}",
        script.display()
    ));
    assert!(ok, "{log}");
    let env = std::fs::read_to_string(&out).unwrap();
    assert!(
        env.contains("bound ip=10.77.0.2 mask=255.255.255.0 router=10.77.0.1 dns=10.77.0.1 host=web lease=3600 domain=mvm"),
        "{env}"
    );
    // An unknown MAC gets nothing.
    let stranger = Ns::new("nsx", &w.tag);
    sh(&format!(
        "ip -n {h} link add vpx type veth peer name eth0 netns {x} && ip -n {x} link set eth0 address 02:11:22:33:44:55 up && \
         ip -n {h} link set vpx master virbr-mvm && ip -n {h} link set vpx up",
        h = w.host.name,
        x = stranger.name
    ));
    let (ok, log) = stranger.exec_status(&format!(
        "busybox udhcpc -i eth0 -n -q -t 2 -T 1 -s {}",
        script.display()
    ));
    assert!(!ok, "a stranger got a lease: {log}");
    // Garbage to port 67 does not stop the server: the VM still gets its lease.
    w.vms[vm].exec("sh -c 'ip addr add 10.77.0.2/24 dev eth0'");
    let gw = net.gateway();
    w.vms[vm].run(move || {
        let s = UdpSocket::bind("10.77.0.2:0").unwrap();
        for junk in [&b""[..], &[0u8; 5][..], &[1u8; 240][..], &[0xffu8; 600][..]] {
            s.send_to(junk, (gw, 67)).unwrap();
        }
    });
    w.vms[vm].exec("ip addr flush dev eth0");
    let (ok, log) = w.vms[vm].exec_status(&format!(
        "busybox udhcpc -i eth0 -n -q -t 5 -T 1 -s {}",
        script.display()
    ));
    assert!(ok, "{log}");
    drop(server);
}

/// A stub "upstream resolver" in the internet namespace: every A query is
/// answered with 172.31.0.99.
fn stub_upstream(ns: &Ns) -> Arc<AtomicBool> {
    let sock = ns.run(|| UdpSocket::bind(format!("{INET}:53")).unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !st.load(Ordering::SeqCst) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.recursion_available = true;
            for x in &q.queries {
                r.add_query(x.clone());
                if x.query_type() == RecordType::A {
                    r.add_answer(Record::from_rdata(
                        x.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(172, 31, 0, 99))),
                    ));
                }
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
    stop
}

fn dns_tcp(ns: &Ns, server: Ipv4Addr, name: &str) -> Message {
    let name = name.to_string();
    ns.run(move || {
        use std::io::{Read, Write};
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_ascii(&name).unwrap(),
            RecordType::A,
        ));
        let q = m.to_vec().unwrap();
        let mut s = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((server, 53)),
            Duration::from_secs(2),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        s.write_all(&out).unwrap();
        let mut l = [0u8; 2];
        s.read_exact(&mut l).unwrap();
        let mut r = vec![0u8; u16::from_be_bytes(l) as usize];
        s.read_exact(&mut r).unwrap();
        Message::from_vec(&r).unwrap()
    })
}

#[test]
fn dns_forwarder_with_busybox_nslookup() {
    need_root!();
    let mut w = World::new("dns");
    let stop = stub_upstream(&w.inet);
    let cfg = w.cfg.clone();
    let (net, server) = w.host.run(move || {
        setup_host(&cfg, 0, 0).unwrap();
        let net = attach_vm(&cfg, &spec("web", false)).unwrap();
        let mut dc = cfg.dns_config();
        dc.upstreams = vec![
            // An unreachable loopback stub first: skipped after its timeout.
            "127.0.0.53:53".parse().unwrap(),
            format!("{INET}:53").parse().unwrap(),
        ];
        dc.timeout = Duration::from_millis(500);
        (net, DnsServer::start(dc, &cfg.state_dir).unwrap())
    });
    assert_eq!(server.local_addr(), SocketAddr::from((net.gateway(), 53)));
    let vm = w.plug_vm(&net, false, true);
    let v = &w.vms[vm];
    let out = v.exec("busybox nslookup web.mvm 10.77.0.1");
    assert!(out.contains("10.77.0.2"), "{out}");
    let out = v.exec("busybox nslookup -type=a example.com 10.77.0.1");
    assert!(out.contains("172.31.0.99"), "{out}");
    let (_, out) = v.exec_status("busybox nslookup nope.mvm 10.77.0.1");
    assert!(out.contains("NXDOMAIN"), "{out}");
    // TCP: local and forwarded (upstream has no TCP: falls back to UDP).
    let r = dns_tcp(v, net.gateway(), "web.mvm.");
    assert_eq!(r.answers[0].data, RData::A(A(net.ip)));
    let r = dns_tcp(v, net.gateway(), "example.org.");
    assert_eq!(
        r.answers[0].data,
        RData::A(A(Ipv4Addr::new(172, 31, 0, 99)))
    );
    // Malformed: FORMERR with the same id; too short: dropped.
    let gw = net.gateway();
    let (formerr, dropped) = v.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(
            &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, b'x'],
            (gw, 53),
        )
        .unwrap();
        let mut b = [0u8; 512];
        let (n, _) = s.recv_from(&mut b).unwrap();
        let m = Message::from_vec(&b[..n]).unwrap();
        s.send_to(&[1, 2, 3], (gw, 53)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        (m, s.recv_from(&mut b).is_err())
    });
    assert_eq!(formerr.metadata.id, 0x1234);
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    assert!(dropped);
    stop.store(true, Ordering::SeqCst);
    drop(server);
}

#[test]
fn nat_to_the_internet_and_isolation() {
    need_root!();
    let mut w = World::new("nat");
    let _srv = tcp_whoami(&w.inet, &format!("{INET}:8000"));
    let cfg = w.cfg.clone();
    let (a, b, c) = w.host.run(move || {
        setup_host(&cfg, 0, 0).unwrap();
        (
            attach_vm(&cfg, &spec("a", false)).unwrap(),
            attach_vm(&cfg, &spec("b", false)).unwrap(),
            attach_vm(&cfg, &spec("c", true)).unwrap(),
        )
    });
    let va = w.plug_vm(&a, false, true);
    let vb = w.plug_vm(&b, false, true);
    let vc = w.plug_vm(&c, true, true);
    // VM -> internet, masqueraded behind the host's uplink address.
    let who = tcp_get(&w.vms[va], &format!("{INET}:8000")).unwrap();
    assert_eq!(who, HOST_UP);
    // Isolated VMs do not reach each other (L2, and not routed via the gateway).
    let _sb = tcp_whoami(&w.vms[vb], &format!("{}:9000", b.ip));
    assert!(tcp_blocked(&w.vms[va], &format!("{}:9000", b.ip)).is_err());
    let (ok, _) = w.vms[va].exec_status(&format!("busybox ping -c1 -W1 {}", b.ip));
    assert!(!ok, "isolated VMs pinged each other");
    // One side allowing is not enough: c allows every VM, a and b none.
    let _sc = tcp_whoami(&w.vms[vc], &format!("{}:9000", c.ip));
    assert!(tcp_blocked(&w.vms[va], &format!("{}:9000", c.ip)).is_err());
    assert!(tcp_blocked(&w.vms[vc], &format!("{}:9000", b.ip)).is_err());
    // Source binding: a VM can neither send with another VM's address nor
    // take over the host's neighbour entry for it. Each is shown to work
    // with the VM's port unbound first (the control), then to fail bound.
    // What arrived, by payload: both packets leave masqueraded behind the
    // host's address, so only the payload tells the attack ("x") from the
    // end marker ("end").
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let echo = w
        .inet
        .run(|| UdpSocket::bind(format!("{INET}:7000")).unwrap());
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 64];
        while let Ok((n, _)) = echo.recv_from(&mut b) {
            seen2.lock().unwrap().push(b[..n].to_vec());
        }
    });
    w.host
        .exec("sh -c 'echo 0 > /proc/sys/net/ipv4/neigh/virbr-mvm/locktime'");
    w.vms[va].exec(&format!("ip addr add {}/32 dev eth0", b.ip));
    // `works`: whether the attacks are expected to get through. Then the
    // test waits for their effects (the packet from b's address, the
    // neighbour entry), which the end marker does not order: the ARP and
    // the marker may be handled on different CPUs. When they must fail,
    // the end marker is the point after which they would have shown.
    let attack = |w: &World, works: bool| {
        let bip = b.ip;
        w.vms[va].run(move || {
            let s = UdpSocket::bind((bip, 0)).unwrap();
            s.send_to(b"x", format!("{INET}:7000")).unwrap();
        });
        // The host knows b, then a claims b's address.
        w.host.exec(&format!(
            "ip neigh replace {} lladdr {} dev virbr-mvm nud stale",
            b.ip, b.mac
        ));
        let _ = w.vms[va].exec_status(&format!(
            "busybox arping -U -c 1 -s {} -I eth0 {}",
            b.ip, b.ip
        ));
        // A packet that came through marks the end of the attack.
        let aip = a.ip;
        w.vms[va].run(move || {
            let s = UdpSocket::bind((aip, 0)).unwrap();
            s.send_to(b"end", format!("{INET}:7000")).unwrap();
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = |want: &[u8]| seen.lock().unwrap().iter().any(|p| p == want);
            let neigh = w.host.exec(&format!("ip neigh show {}", b.ip));
            let result = (got(b"x"), neigh.contains(&a.mac.to_string()));
            if got(b"end") && (!works || result == (true, true)) {
                seen.lock().unwrap().clear();
                return result;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "attack (works={works}): end marker or effects never seen: {result:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (table, bridge, subnet) = (w.cfg.table.clone(), w.cfg.bridge.clone(), w.cfg.subnet);
    let nft_in_host = move |bind: bool| {
        let (table, bridge) = (table.clone(), bridge.clone());
        move || {
            let nft = Nft::new(NftParams {
                table: &table,
                bridge: &bridge,
                subnet,
            });
            if bind {
                nft.bind_port(
                    "a",
                    "vp0",
                    &MacAddr::for_vm("a").to_string(),
                    Ipv4Addr::new(10, 77, 0, 2),
                )
                .unwrap();
            } else {
                let mine: Vec<_> = nft
                    .elements()
                    .unwrap()
                    .into_iter()
                    .filter(|e| {
                        e.vm.as_deref() == Some("a")
                            && ["bind", "macs", "ports"].contains(&e.set.as_str())
                    })
                    .collect();
                nft.delete_elems(&mine).unwrap();
            }
        }
    };
    w.host.run(nft_in_host(false));
    assert_eq!(
        attack(&w, true),
        (true, true),
        "control: unbound, the attacks work"
    );
    w.host.run(nft_in_host(true));
    assert_eq!(
        attack(&w, false),
        (false, false),
        "bound, the attacks must fail"
    );
    w.vms[va].exec(&format!("ip addr del {}/32 dev eth0", b.ip));
    // VM -> host: nothing but DHCP/DNS on the gateway.
    // Refused with a reset, so tools fail at once.
    let _hs = tcp_whoami(&w.host, "0.0.0.0:2222");
    assert!(refused(&tcp_get(
        &w.vms[va],
        &format!("{}:2222", a.gateway())
    )));
    assert!(refused(&tcp_get(&w.vms[va], &format!("{HOST_UP}:2222"))));
    // (the host's own server does work, from elsewhere)
    assert_eq!(tcp_get(&w.inet, &format!("{HOST_UP}:2222")).unwrap(), INET);
    // The internet cannot open connections to a VM, even with a route.
    w.inet.exec(&format!(
        "ip route add {} via {HOST_UP}",
        w.cfg.subnet.cidr()
    ));
    assert!(tcp_blocked(&w.inet, &format!("{}:9000", b.ip)).is_err());
}

#[test]
fn egress_reaches_the_internet_but_not_the_lan_or_metadata_unless_allowed() {
    need_root!();
    let mut w = World::new("egress");
    let lan = w.lan();
    let _pub = tcp_whoami(&w.inet, &format!("{INET}:8000"));
    let _lan = tcp_whoami(&lan, &format!("{LAN}:8000"));
    let _meta = tcp_whoami(&w.inet, &format!("{METADATA}:80"));
    let _host = tcp_whoami(&w.host, "0.0.0.0:2222");
    // Control: the LAN and metadata servers answer the host itself.
    assert_eq!(tcp_get(&w.host, &format!("{LAN}:8000")).unwrap(), HOST_LAN);
    assert_eq!(
        tcp_get(&w.host, &format!("{METADATA}:80")).unwrap(),
        HOST_UP
    );
    let vms = set_up(
        &w,
        vec![
            spec("a", false),
            spec_allowing("b", &["10.1.0.0/16", METADATA]),
        ],
    );
    let (a, b) = (vms[0].clone(), vms[1].clone());
    let va = w.plug_vm(&a, false, true);
    let vb = w.plug_vm(&b, false, true);
    // By default: the internet yes; the LAN and metadata refused at once.
    assert_eq!(
        tcp_get(&w.vms[va], &format!("{INET}:8000")).unwrap(),
        HOST_UP
    );
    assert!(refused(&tcp_get(&w.vms[va], &format!("{LAN}:8000"))));
    assert!(refused(&tcp_get(&w.vms[va], &format!("{METADATA}:80"))));
    let (ok, out) = w.vms[va].exec_status(&format!("busybox ping -c1 -W2 {LAN}"));
    assert!(!ok && !out.contains("bytes from"), "{out}");
    // IPv6 (here a ULA on the bridge, which the host itself reaches): none.
    w.host.exec("ip addr add fd00:77::1/64 dev virbr-mvm nodad");
    w.vms[va].exec("ip addr add fd00:77::2/64 dev eth0 nodad");
    let _ula = tcp_whoami(&w.host, "[fd00:77::1]:2223");
    assert_eq!(tcp_get(&w.host, "[fd00:77::1]:2223").unwrap(), "fd00:77::1");
    assert!(tcp_blocked(&w.vms[va], "[fd00:77::1]:2223").is_err());
    // Opened for b: the LAN (masqueraded behind the host's LAN address)
    // and the metadata address.
    assert_eq!(
        tcp_get(&w.vms[vb], &format!("{LAN}:8000")).unwrap(),
        HOST_LAN
    );
    assert_eq!(
        tcp_get(&w.vms[vb], &format!("{METADATA}:80")).unwrap(),
        HOST_UP
    );
    assert_eq!(
        tcp_get(&w.vms[vb], &format!("{INET}:8000")).unwrap(),
        HOST_UP
    );
    // An allowed network never opens the host itself.
    assert!(refused(&tcp_get(&w.vms[vb], &format!("{HOST_LAN}:2222"))));
    // Detach removes b's allow elements; the default holds again for a VM
    // at that address.
    let cfg = w.cfg.clone();
    w.host.run(move || {
        detach_vm(&cfg, "b").unwrap();
        attach_vm(&cfg, &spec("b", false)).unwrap();
    });
    let allow = w.host.exec("nft list set inet mvm allow");
    assert!(!allow.contains("10.1.0.0"), "{allow}");
    // (a server of its own: no conntrack entry of b's earlier flows)
    let _lan2 = tcp_whoami(&lan, &format!("{LAN}:8001"));
    assert!(refused(&tcp_get(&w.vms[vb], &format!("{LAN}:8001"))));
}

#[test]
fn vms_talk_only_when_both_allow_it() {
    need_root!();
    let mut w = World::new("vm2vm");
    let a = set_up(&w, vec![spec("a", false)]).remove(0);
    // b allows a; a allows nobody yet.
    let a_ip = a.ip.to_string();
    let cfg = w.cfg.clone();
    let b = w
        .host
        .run(move || attach_vm(&cfg, &spec_allowing("b", &[&a_ip])).unwrap());
    let va = w.plug_vm(&a, true, true);
    let vb = w.plug_vm(&b, true, true);
    let _sa = tcp_whoami(&w.vms[va], &format!("{}:9000", a.ip));
    let _sb = tcp_whoami(&w.vms[vb], &format!("{}:9000", b.ip));
    // Even with both bridge ports open (not isolated), one side is not enough.
    assert!(tcp_blocked(&w.vms[va], &format!("{}:9000", b.ip)).is_err());
    assert!(tcp_blocked(&w.vms[vb], &format!("{}:9000", a.ip)).is_err());
    // Nor through the gateway (routed): refused at once.
    let gw = a.gateway();
    w.vms[vb].exec(&format!("ip route add {}/32 via {gw}", a.ip));
    assert!(refused(&tcp_get(&w.vms[vb], &format!("{}:9000", a.ip))));
    w.vms[vb].exec(&format!("ip route del {}/32 via {gw}", a.ip));
    // a allows the subnet (so b): now both ways.
    let cfg = w.cfg.clone();
    w.host.run(move || {
        detach_vm(&cfg, "a").unwrap();
        attach_vm(&cfg, &spec_allowing("a", &["10.77.0.0/24"])).unwrap();
    });
    assert_eq!(
        tcp_get(&w.vms[va], &format!("{}:9000", b.ip)).unwrap(),
        a.ip.to_string()
    );
    assert_eq!(
        tcp_get(&w.vms[vb], &format!("{}:9000", a.ip)).unwrap(),
        b.ip.to_string()
    );
    // A third VM that b does not allow still reaches neither.
    let cfg = w.cfg.clone();
    let c = w
        .host
        .run(move || attach_vm(&cfg, &spec_allowing("c", &["10.77.0.0/24"])).unwrap());
    let vc = w.plug_vm(&c, true, true);
    assert!(tcp_blocked(&w.vms[vc], &format!("{}:9000", b.ip)).is_err());
    assert_eq!(
        tcp_get(&w.vms[vc], &format!("{}:9000", a.ip)).unwrap(),
        c.ip.to_string()
    );
    // b goes: its pairs go with it.
    let cfg = w.cfg.clone();
    w.host.run(move || detach_vm(&cfg, "b").unwrap());
    let pairs = w.host.exec("nft list set bridge mvm pairs");
    assert!(!pairs.contains(&b.ip.to_string()), "{pairs}");
    assert!(pairs.contains(&c.ip.to_string()), "{pairs}");
}

#[test]
fn port_forwards_from_host_loopback_and_other_hosts() {
    need_root!();
    let mut w = World::new("fwd");
    let net = set_up(&w, vec![spec("web", false)]).remove(0);
    let v = w.plug_vm(&net, false, true);
    let _guest = tcp_whoami(&w.vms[v], "0.0.0.0:80");
    let proxy = Arc::new(PortProxy::new());
    let fwd: PortForward = "0.0.0.0:8080:80".parse().unwrap();
    let (cfg, p, ip) = (w.cfg.clone(), proxy.clone(), net.ip);
    w.host.run(move || {
        add_forward(&cfg, "web", &fwd).unwrap();
        p.add(&fwd, ip).unwrap();
    });
    // From another host: DNAT, the guest sees the real client.
    assert_eq!(tcp_get(&w.inet, &format!("{HOST_UP}:8080")).unwrap(), INET);
    // From the host itself (its loopback and its own address): the proxy.
    assert_eq!(
        tcp_get(&w.host, "127.0.0.1:8080").unwrap(),
        net.gateway().to_string()
    );
    assert_eq!(
        tcp_get(&w.host, &format!("{HOST_UP}:8080")).unwrap(),
        net.gateway().to_string()
    );
    assert_eq!(list_forwards(&w.cfg, "web").unwrap(), vec![fwd]);

    // Bad input: one-line errors, nothing changed.
    let before = snapshot(&w.host);
    let cfg = w.cfg.clone();
    let errs = w.host.run(move || {
        let mut errs = Vec::new();
        // Duplicate (also to another VM's spec with another guest port).
        errs.push(
            add_forward(&cfg, "web", &"8080:81".parse().unwrap())
                .unwrap_err()
                .to_string(),
        );
        // Host port in use by someone else.
        let _held = std::net::TcpListener::bind("0.0.0.0:9090").unwrap();
        errs.push(
            add_forward(&cfg, "web", &"9090:80".parse().unwrap())
                .unwrap_err()
                .to_string(),
        );
        errs.push(
            add_forward(&cfg, "nope", &"9091:80".parse().unwrap())
                .unwrap_err()
                .to_string(),
        );
        errs.push(
            remove_forward(&cfg, "web", &"9092:80".parse().unwrap())
                .unwrap_err()
                .to_string(),
        );
        for bad in ["0:80", "65536:80", "80", "80:80/icmp", "a:b"] {
            errs.push(bad.parse::<PortForward>().unwrap_err().to_string());
        }
        errs
    });
    assert!(
        errs[0].contains("8080/tcp is already forwarded to VM \"web\""),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("9090/tcp is already in use"),
        "{}",
        errs[1]
    );
    assert!(errs[2].contains("\"nope\""), "{}", errs[2]);
    assert!(
        errs[3].contains("no forward of host port 9092/tcp"),
        "{}",
        errs[3]
    );
    assert!(
        errs[4].contains("\"0:80\"") && errs[5].contains("65536"),
        "{errs:?}"
    );
    for e in &errs {
        assert!(!e.contains('\n'), "{e}");
    }
    assert_eq!(
        snapshot(&w.host),
        before,
        "a failed forward changed rules or links"
    );
    assert_eq!(list_forwards(&w.cfg, "web").unwrap(), vec![fwd]);

    // UDP forward, from another host.
    let gsock = w.vms[v].run(|| UdpSocket::bind("0.0.0.0:53").unwrap());
    std::thread::spawn(move || {
        let mut b = [0u8; 64];
        while let Ok((n, p)) = gsock.recv_from(&mut b) {
            let _ = gsock.send_to(&b[..n], p);
        }
    });
    let ufwd: PortForward = "0.0.0.0:5353:53/udp".parse().unwrap();
    let (cfg, p, ip) = (w.cfg.clone(), proxy.clone(), net.ip);
    w.host.run(move || {
        add_forward(&cfg, "web", &ufwd).unwrap();
        p.add(&ufwd, ip).unwrap();
    });
    let echoed = w.inet.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"hi", format!("{HOST_UP}:5353")).unwrap();
        let mut b = [0u8; 8];
        s.recv_from(&mut b).map(|(n, _)| b[..n].to_vec())
    });
    assert_eq!(echoed.unwrap(), b"hi");

    // Forwards come back after a restart (detach + attach).
    let cfg = w.cfg.clone();
    let re = w.host.run(move || {
        detach_vm(&cfg, "web").unwrap();
        attach_vm(&cfg, &spec("web", false)).unwrap()
    });
    assert_eq!(re.forwards, vec![fwd, ufwd]);
    // (the stand-in's port was unplugged by nothing: it is a veth, still there)
    assert_eq!(tcp_get(&w.inet, &format!("{HOST_UP}:8080")).unwrap(), INET);

    // Remove while running: both paths stop.
    let (cfg, p) = (w.cfg.clone(), proxy.clone());
    w.host.run(move || {
        remove_forward(&cfg, "web", &fwd).unwrap();
        p.remove(&fwd);
    });
    assert!(tcp_blocked(&w.inet, &format!("{HOST_UP}:8080")).is_err());
    assert!(tcp_blocked(&w.host, "127.0.0.1:8080").is_err());
    assert_eq!(list_forwards(&w.cfg, "web").unwrap(), vec![ufwd]);
}

#[test]
fn forwards_listen_on_loopback_unless_an_address_is_named() {
    need_root!();
    let mut w = World::new("fwdaddr");
    let lan = w.lan();
    let net = set_up(&w, vec![spec("web", false)]).remove(0);
    let v = w.plug_vm(&net, false, true);
    let _guest = tcp_whoami(&w.vms[v], "0.0.0.0:80");
    let proxy = Arc::new(PortProxy::new());
    let add = |spec: &str| {
        let f: PortForward = spec.parse().unwrap();
        let (cfg, p, ip) = (w.cfg.clone(), proxy.clone(), net.ip);
        w.host.run(move || {
            add_forward(&cfg, "web", &f).unwrap();
            p.add(&f, ip).unwrap();
        });
    };
    let gw = net.gateway().to_string();
    // The old spec: loopback only, served by the proxy, no rule at all.
    add("8081:80");
    assert_eq!(tcp_get(&w.host, "127.0.0.1:8081").unwrap(), gw);
    assert_eq!(tcp_get(&w.host, "[::1]:8081").unwrap(), gw);
    assert!(refused(&tcp_get(&w.host, &format!("{HOST_UP}:8081"))));
    assert!(refused(&tcp_get(&w.inet, &format!("{HOST_UP}:8081"))));
    assert!(refused(&tcp_get(&lan, &format!("{HOST_LAN}:8081"))));
    assert!(!w.host.exec("nft list ruleset").contains("8081"));
    // A named address: other hosts on that address only (DNAT, the guest
    // sees the real client), and the host itself through the proxy there.
    add(&format!("{HOST_UP}:8082:80"));
    assert_eq!(tcp_get(&w.inet, &format!("{HOST_UP}:8082")).unwrap(), INET);
    assert_eq!(tcp_get(&w.host, &format!("{HOST_UP}:8082")).unwrap(), gw);
    assert!(tcp_blocked(&lan, &format!("{HOST_LAN}:8082")).is_err());
    assert!(refused(&tcp_get(&w.host, "127.0.0.1:8082")));
    // 0.0.0.0: every interface, the LAN too (whose replies pass although
    // the LAN is refused to the VM).
    add("0.0.0.0:8083:80");
    assert_eq!(tcp_get(&w.inet, &format!("{HOST_UP}:8083")).unwrap(), INET);
    assert_eq!(tcp_get(&lan, &format!("{HOST_LAN}:8083")).unwrap(), LAN);
    assert_eq!(tcp_get(&w.host, "127.0.0.1:8083").unwrap(), gw);
    // Listed with their addresses; removing the named one removes its DNAT.
    let listed: Vec<String> = list_forwards(&w.cfg, "web")
        .unwrap()
        .iter()
        .map(|f| f.listen())
        .collect();
    assert_eq!(
        listed,
        [
            "127.0.0.1:8081".to_string(),
            format!("{HOST_UP}:8082"),
            "0.0.0.0:8083".to_string()
        ]
    );
    let f: PortForward = format!("{HOST_UP}:8082:80").parse().unwrap();
    let (cfg, p) = (w.cfg.clone(), proxy.clone());
    w.host.run(move || {
        remove_forward(&cfg, "web", &f).unwrap();
        p.remove(&f);
    });
    assert!(tcp_blocked(&w.inet, &format!("{HOST_UP}:8082")).is_err());
    assert!(!w.host.exec("nft list ruleset").contains("8082"));
}

#[test]
fn cleanup_and_reconcile_leave_the_host_as_it_was() {
    need_root!();
    let mut w = World::new("clean");
    let before = snapshot(&w.host);
    let cfg = w.cfg.clone();
    let (a, _b) = w.host.run(move || {
        setup_host(&cfg, 1000, 2).unwrap();
        let a = attach_vm(&cfg, &spec("a", true)).unwrap();
        let b = attach_vm(&cfg, &spec("b", false)).unwrap();
        add_forward(&cfg, "a", &"0.0.0.0:8080:80".parse().unwrap()).unwrap();
        add_forward(&cfg, "b", &"0.0.0.0:8081:80/udp".parse().unwrap()).unwrap();
        (a, b)
    });
    let _v = w.plug_vm(&a, true, true);
    let rules = w.host.exec("nft list ruleset");
    assert!(
        rules.contains("table inet mvm") && rules.contains("table ip mvm"),
        "{rules}"
    );
    assert!(rules.contains("comment \"vm=a\""), "{rules}");
    // Another table of someone else is never touched.
    w.host.exec("nft add table inet other");
    w.host.exec("nft add chain inet other c");
    let before_other = w.host.exec("nft list table inet other");

    // Crash: VM b's owner is a process that has exited.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let cfg = w.cfg.clone();
    let rep = w.host.run(move || {
        set_owner_pid(&cfg, "b", dead).unwrap();
        set_owner_pid(&cfg, "a", std::process::id()).unwrap();
        reconcile(&cfg.state_dir).unwrap()
    });
    assert_eq!(rep.detached, vec!["b".to_string()]);
    let links = w.host.exec("ip -o link");
    assert!(
        !links.contains("mvm-b") && links.contains("mvm-a"),
        "{links}"
    );
    let rules = w.host.exec("nft list ruleset");
    assert!(!rules.contains("8081") && rules.contains("8080"), "{rules}");
    // A leftover tap without any lease is removed too.
    w.host
        .run(|| netstack::lowlevel::create_persistent_tap("mvm-ghost", 0).unwrap());
    let cfg = w.cfg.clone();
    let rep = w.host.run(move || reconcile(&cfg.state_dir).unwrap());
    assert_eq!(rep.taps_removed, vec!["mvm-ghost".to_string()]);
    // Leases survive crashes.
    assert!(vm_net(&w.cfg, "b").unwrap().forwards.len() == 1);

    let cfg = w.cfg.clone();
    w.host.run(move || {
        detach_vm(&cfg, "a").unwrap();
        detach_vm(&cfg, "b").unwrap();
        let rules = std::process::Command::new("nft")
            .args(["list", "table", "ip", "mvm"])
            .output()
            .unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        assert!(!rules.contains("vm="), "{rules}");
        teardown_host(&cfg).unwrap();
        teardown_host(&cfg).unwrap(); // idempotent
    });
    assert_eq!(w.host.exec("nft list table inet other"), before_other);
    w.host.exec("nft delete table inet other");
    // The stand-in VM's veth port is ours to remove.
    w.host.exec("ip link del vp0");
    assert_eq!(snapshot(&w.host), before);
    assert_eq!(
        w.host
            .exec("cat /proc/sys/net/ipv4/conf/up0/forwarding")
            .trim(),
        "0"
    );
}

#[test]
fn subnet_overlap_is_refused_without_partial_state() {
    need_root!();
    let w = World::new("ovl");
    w.host.exec("ip link add d0 type veth peer name d1");
    w.host.exec("ip addr add 10.77.0.0/16 dev d0");
    w.host.exec("ip link set d0 up");
    let before = snapshot(&w.host);
    let cfg = w.cfg.clone();
    let e = w
        .host
        .run(move || setup_host(&cfg, 0, 2).unwrap_err().to_string());
    assert!(
        e.contains("10.77.0.0/24 overlaps") && e.contains("d0"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    assert_eq!(snapshot(&w.host), before);
    // A route (not an address) overlapping is refused too.
    let mut cfg = w.cfg.clone();
    cfg.subnet = "10.99.0.1/24".parse().unwrap();
    w.host
        .exec(&format!("ip route add 10.99.0.0/20 via {INET}"));
    let e = w
        .host
        .run(move || setup_host(&cfg, 0, 0).unwrap_err().to_string());
    assert!(e.contains("route 10.99.0.0/20") && e.contains("up0"), "{e}");
    // Another subnet works.
    let mut cfg = w.cfg.clone();
    cfg.subnet = "192.168.213.1/24".parse().unwrap();
    w.host.run(move || {
        setup_host(&cfg, 0, 0).unwrap();
        let n = attach_vm(&cfg, &spec("x", false)).unwrap();
        assert_eq!(n.ip, Ipv4Addr::new(192, 168, 213, 2));
        let mut rt = Rtnl::open().unwrap();
        assert!(rt.link("virbr-mvm").unwrap().is_some());
    });
}

#[test]
fn global_forwarding_turned_on_by_someone_else_is_left_alone() {
    need_root!();
    let w = World::new("gfw");
    let cfg = w.cfg.clone();
    w.host.run(move || setup_host(&cfg, 0, 0).unwrap());
    let set = w.host.exec("nft list set inet mvm uplinks");
    assert!(set.contains("\"up0\""), "{set}");
    // A router daemon (or Docker) enables forwarding for everything.
    w.host
        .exec("sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'");
    let cfg = w.cfg.clone();
    w.host.run(move || {
        attach_vm(&cfg, &spec("a", false)).unwrap();
        teardown_host(&cfg).unwrap();
    });
    assert_eq!(
        w.host
            .exec("cat /proc/sys/net/ipv4/conf/up0/forwarding")
            .trim(),
        "1"
    );
}

/// The state folder may be the users' to write (a NixOS host gives it the
/// VMs' user): root never deletes a link a lease names unless it is a tap
/// of ours, and reads only a configuration file that is root's own.
#[test]
fn root_acts_on_no_name_a_user_wrote() {
    need_root!();
    let w = World::new("trust");
    let cfg = w.cfg.clone();
    w.host.run(move || {
        setup_host(&cfg, 1000, 0).unwrap();
        attach_vm(&cfg, &spec("evil", false)).unwrap();
    });
    // The user rewrites its lease: its tap is the host's uplink, its
    // owner gone.
    let lease_path = w.cfg.state_dir.join("leases/evil.json");
    let mut lease: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lease_path).unwrap()).unwrap();
    lease["active"]["tap"] = "up0".into();
    lease["active"]["pooled"] = false.into();
    lease["active"]["owner_pid"] = 999_999_999u64.into();
    lease["active"]["attached_by"] = serde_json::Value::Null;
    std::fs::write(&lease_path, serde_json::to_vec(&lease).unwrap()).unwrap();
    std::os::unix::fs::chown(&lease_path, Some(1000), Some(1000)).unwrap();
    let cfg = w.cfg.clone();
    let rep = w.host.run(move || reconcile(&cfg.state_dir).unwrap());
    assert_eq!(rep.detached, vec!["evil".to_string()]);
    assert!(w.host.exec("ip -o link").contains("up0"), "the uplink went");
    // A configuration the user replaced is refused, by name.
    let net_json = w.cfg.state_dir.join("network.json");
    std::os::unix::fs::chown(&net_json, Some(1000), Some(1000)).unwrap();
    let cfg = w.cfg.clone();
    let err = w
        .host
        .run(move || reconcile(&cfg.state_dir).unwrap_err().to_string());
    assert!(
        err.contains("network.json") && err.contains("uid 1000"),
        "{err}"
    );
    std::os::unix::fs::chown(&net_json, Some(0), Some(0)).unwrap();
    let cfg = w.cfg.clone();
    w.host.run(move || teardown_host(&cfg).unwrap());
}
