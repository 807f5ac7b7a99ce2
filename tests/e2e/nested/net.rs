//! Networking in the nested L2 host (tests/e2e/jobs/net.sh): DHCP leases,
//! DNS for VM names, NAT to "the internet" but not to the LAN or the cloud
//! metadata address unless allowed, isolation between VMs unless both
//! allow, port forwards on loopback or a named address added and removed
//! while running, nothing left behind.

use super::result_file;

fn step(name: &str) -> (Option<i32>, String, String) {
    (
        result_file("net", &format!("{name}.status"))
            .trim()
            .parse()
            .ok(),
        result_file("net", &format!("{name}.out")),
        result_file("net", &format!("{name}.err")),
    )
}

fn ok(name: &str) -> String {
    let (status, out, err) = step(name);
    assert_eq!(
        status,
        Some(0),
        "step {name} failed:\n{err}\n{out}\nnetd.log:\n{}",
        result_file("net", "netd.log")
    );
    out
}

/// curl's "couldn't connect" (7): refused at once by a reset or an ICMP
/// error, not a timeout (28).
fn refused(name: &str) {
    let (status, out, err) = step(name);
    assert_eq!(
        status,
        Some(7),
        "step {name} should be refused:\n{err}\n{out}"
    );
}

fn fails(name: &str) -> String {
    let (status, out, err) = step(name);
    assert_ne!(status, Some(0), "step {name} should fail:\n{out}");
    err
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn vms_get_leases_from_our_dhcp_server() {
    ok("start-a");
    ok("start-b");
    let addr = ok("addr-a");
    assert!(addr.contains("10.77.0."), "{addr}");
    assert!(ok("resolv-a").contains("10.77.0.1"));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ok("list")).unwrap();
    let ips: Vec<&str> = rows.iter().filter_map(|r| r["ip"].as_str()).collect();
    assert_eq!(ips.len(), 2, "{rows:?}");
    assert_ne!(ips[0], ips[1]);
    ok("ping-gw");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn dns_resolves_vm_names_and_nat_reaches_the_internet() {
    let b_ip = result_file("net", "b-ip");
    let dns = ok("dns-b");
    assert!(dns.contains(b_ip.trim()), "{dns} vs {b_ip}");
    assert_eq!(ok("nat"), "hello from the internet\n");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn vms_are_isolated_from_each_other_unless_both_allow() {
    fails("isolation");
    ok("start-c");
    ok("start-d");
    assert_eq!(ok("vm2vm"), result_file("net", "d-hostname-file"));
    ok("rm-c");
    ok("rm-d");
}

/// The LAN and the metadata address are refused at once (a reset, not a
/// timeout), unless the VM allows them.
#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn lan_and_metadata_are_refused_unless_allowed() {
    assert_eq!(ok("nat"), "hello from the internet\n");
    for step in ["lan-refused", "metadata-refused", "metadata-still-refused"] {
        refused(step);
    }
    assert_eq!(ok("lan-allowed"), "hello from the lan\n");
    let err = fails("create-bad");
    assert!(err.contains("did you mean 10.1.0.0/16"), "{err}");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn port_forwards_work_while_running_from_loopback_and_other_hosts_when_asked() {
    ok("port-add");
    let want = result_file("net", "b-hostname-file");
    assert!(!want.is_empty());
    // Loopback only by default.
    assert_eq!(ok("fwd-loopback"), want);
    assert_eq!(ok("fwd-loopback6"), want);
    refused("fwd-other");
    // 0.0.0.0: every interface; one address: that one only.
    ok("port-add-any");
    assert_eq!(ok("fwd-any-other"), want);
    assert_eq!(ok("fwd-any-lan"), want);
    ok("port-add-at");
    assert_eq!(ok("fwd-at-other"), want);
    refused("fwd-at-lan");
    let listed = ok("port-list");
    for l in [
        "127.0.0.1:18080->8080/tcp",
        "0.0.0.0:18081->8080/tcp",
        "192.0.2.1:18082->8080/tcp",
    ] {
        assert!(listed.contains(l), "{listed}");
    }
    assert!(ok("list-ports").contains("127.0.0.1:18080->8080/tcp"));
    assert!(fails("port-dup").contains("already forwarded to VM 'b'"));
    assert!(fails("port-bad").contains("0:80"));
    ok("port-rm");
    fails("fwd-after-rm");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn stop_kill_and_rm_leave_no_tap_or_rule() {
    ok("stop-a");
    ok("start-a2");
    ok("stop-a2");
    ok("rm-a");
    ok("rm-b");
    let before = result_file("net", "links-before");
    let after = result_file("net", "links-after");
    let taps: Vec<&str> = after.lines().filter(|l| l.starts_with("mvm-")).collect();
    assert!(taps.is_empty(), "taps left: {taps:?}");
    for l in before.lines() {
        assert!(after.lines().any(|a| a == l), "link {l} disappeared");
    }
    let rules = result_file("net", "ruleset-after");
    assert!(
        !rules.contains("10.77.0.2 ") && !rules.contains("vm="),
        "{rules}"
    );
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn upstream_names_resolve_through_our_forwarder() {
    let out = ok("dns-upstream");
    assert!(out.contains("198.51.100.7"), "{out}");
    let stub = result_file("net", "dns-stub.log");
    assert!(stub.contains("upstream.example 1 hit"), "{stub}");
}

/// A kernel+initramfs run with `--net ARGS`: the busybox guest's udhcpc
/// got a lease, pinged the gateway and resolved the upstream name; the run
/// ended cleanly and left no tap or lease.
fn raw_run_networked(step: &str) -> String {
    let (status, out, err) = self::step(step);
    let console = result_file("net", &format!("{step}.console"));
    assert_eq!(status, Some(0), "{step}: {err}\n{out}\n{console}");
    let guest = |key: &str| {
        console
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("MVM-GUEST: net_{key}=")))
            .unwrap_or("")
            .to_string()
    };
    assert!(guest("lease").starts_with("10.77.0."), "{console}");
    assert!(
        err.contains(&format!("DHCP address {} ", guest("lease"))),
        "{err}"
    );
    assert_eq!(guest("router"), "10.77.0.1", "{console}");
    assert_eq!(guest("dns"), "10.77.0.1", "{console}");
    assert_eq!(guest("ping"), "ok", "{console}");
    assert_eq!(guest("upstream"), "198.51.100.7", "{console}");
    let links = result_file("net", &format!("{step}.links-after"));
    assert!(links.lines().all(|l| !l.starts_with("mvm-")), "{links}");
    let leases = result_file("net", &format!("{step}.leases-after"));
    assert_eq!(leases.trim(), "", "leases left: {leases}");
    err
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn kernel_initramfs_run_with_net_gets_a_lease_and_cleans_up() {
    let err = raw_run_networked("raw-tap");
    assert!(!err.contains("vhost"), "{err}");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn vhost_net_carries_a_guest_that_gets_a_lease() {
    let dev = result_file("net", "vhost-dev");
    assert!(
        dev.contains("/dev/vhost-net"),
        "modprobe vhost_net in L2: {dev}"
    );
    let err = raw_run_networked("raw-vhost");
    assert!(err.contains("using vhost-net"), "{err}");
    assert!(!err.contains("unavailable"), "{err}");
}
