//! A network namespace of its own for tests that run `mvm` on real bridges
//! and taps (needs root and `ip`, as CI has).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Netns {
    pub name: String,
    pub home: PathBuf,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
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

    /// `mvm ARGS` in the namespace, with MVM_HOME in a fresh folder.
    pub fn mvm(&self, args: &[&str], net_dir: Option<&Path>) -> Output {
        self.mvm_command(args, net_dir).output().expect("runs mvm")
    }

    pub fn mvm_command(&self, args: &[&str], net_dir: Option<&Path>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_mvm")])
            .args(args)
            .env("MVM_HOME", &self.home)
            .env_remove("MVM_NET_DIR");
        if let Some(d) = net_dir {
            c.env("MVM_NET_DIR", d);
        }
        c
    }

    /// `ip -n NS ARGS`, stdout.
    pub fn ip(&self, args: &[&str]) -> String {
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

/// Status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
