//! `mvm net setup|teardown` on a real bridge and real taps, inside a network
//! namespace of its own.

mod common;

use common::{text, Netns};

#[test]
fn setup_takes_a_subnet_and_teardown_removes_everything() {
    let ns = Netns::new("subnet");
    let out = ns.mvm(
        &["net", "setup", "--subnet", "10.99.7.1/24", "--pool", "2"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("bridge virbr-mvm at 10.99.7.1/24, taps for uid 0: mvmp-0 mvmp-1"),
        "{}",
        text(&out)
    );
    let addr = ns.ip(&["-br", "addr", "show", "virbr-mvm"]);
    assert!(addr.contains("10.99.7.1/24"), "bridge address: {addr}");
    let saved = std::fs::read_to_string(ns.home.join("net/network.json")).unwrap();
    assert!(saved.contains("10.99.7.1"), "network.json: {saved}");

    // Another subnet while this one is in use: refused, nothing changed.
    let out = ns.mvm(&["net", "setup", "--subnet", "10.98.0.1/24"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--subnet 10.98.0.1/24") && err.contains("mvm net teardown"),
        "{err}"
    );
    assert!(ns
        .ip(&["-br", "addr", "show", "virbr-mvm"])
        .contains("10.99.7.1/24"));

    let out = ns.mvm(&["net", "teardown"], None);
    assert!(out.status.success(), "{}", text(&out));
    let links = ns.ip(&["-br", "link"]);
    assert!(
        !links.contains("virbr-mvm") && !links.contains("mvmp-"),
        "left behind: {links}"
    );
}

#[test]
fn bad_subnets_are_one_line_errors() {
    let ns = Netns::new("badsubnet");
    for bad in ["10.1.2.3/40", "nonsense", "300.1.1.1/24"] {
        let out = ns.mvm(&["net", "setup", "--subnet", bad], None);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.lines().next().unwrap_or("").contains(bad), "{err}");
    }
    assert!(!ns.ip(&["-br", "link"]).contains("virbr-mvm"));
}

#[test]
fn mvm_net_dir_moves_the_network_state() {
    let ns = Netns::new("netdir");
    let shared = ns.home.join("shared-net");
    let out = ns.mvm(&["net", "setup", "--pool", "0"], Some(&shared));
    assert!(out.status.success(), "{}", text(&out));
    assert!(shared.join("network.json").exists());
    assert!(!ns.home.join("net/network.json").exists());
    let out = ns.mvm(&["net", "teardown"], Some(&shared));
    assert!(out.status.success(), "{}", text(&out));
}
