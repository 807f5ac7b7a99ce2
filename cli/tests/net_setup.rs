//! `mvm net setup|teardown` on a real bridge and real taps, inside a network
//! namespace of its own (needs root and `ip`, as CI has).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Netns {
    name: String,
    home: PathBuf,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("mvmcli-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("runs ip")
            .success();
        assert!(ok, "ip netns add {name}");
        let home = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&home);
        Netns { name, home }
    }

    fn mvm(&self, args: &[&str], net_dir: Option<&Path>) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_mvm")])
            .args(args)
            .env("MVM_HOME", &self.home)
            .env_remove("MVM_NET_DIR");
        if let Some(d) = net_dir {
            c.env("MVM_NET_DIR", d);
        }
        c.output().expect("runs mvm")
    }

    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("runs ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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
