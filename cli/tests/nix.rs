//! The Nix side (flake.nix, nix/) checked against the real mvm, as far as a
//! machine without nixpkgs can: every .nix file parses; the host module and
//! the devenv module are evaluated by the module system (`lib.evalModules`
//! of nixpkgs' lib, nix/tests/eval.nix, with the NixOS and devenv options
//! they set declared by nix/tests/stubs.nix), so option types, defaults and
//! the generated units are checked and a wrong value is an error; the units
//! the module generates run with this mvm; the VM options are generated from
//! the very schema `mvm config --schema` prints; the Nix kernel build reads
//! the same fragment and check as guest-kernel/build.sh.
//!
//! Needs `nix-instantiate` (Debian's nix-bin, which scripts/install-deps.sh
//! installs) and nixpkgs' lib (nix-community/nixpkgs.lib) at
//! `../shared/nix/nixpkgs-lib` beside the repository or `$MVM_NIXPKGS_LIB`;
//! without it the tests fail, they do not skip.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{text, Netns};
use mvm_test_guests::{code, elf_kernel, print, program};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn nix_instantiate() -> Command {
    let found = Command::new("nix-instantiate").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "nix-instantiate is missing: install Debian's nix-bin (scripts/install-deps.sh does)"
    );
    Command::new("nix-instantiate")
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() && name != "target" && name != ".git" {
            nix_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "nix") {
            out.push(p);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = vec![];
    nix_files(&root(), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("flake.nix"))
            && files.iter().any(|f| f.ends_with("nix/modules/host.nix")),
        "{files:?}"
    );
    for f in files {
        let out = nix_instantiate().arg("--parse").arg(&f).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.display(), text(&out));
    }
}

/// nixpkgs' lib (nix-community/nixpkgs.lib: the folder holding `lib/`):
/// `$MVM_NIXPKGS_LIB`, else `../shared/nix/nixpkgs-lib` beside the
/// repository, else these machines' shared folder (`/work/shared`, for a
/// clone made elsewhere). Missing: the test fails, it does not skip.
fn nixpkgs_lib() -> PathBuf {
    let dir = match std::env::var_os("MVM_NIXPKGS_LIB") {
        Some(d) => PathBuf::from(d),
        None => [
            root().join("../shared/nix/nixpkgs-lib"),
            PathBuf::from("/work/shared/nix/nixpkgs-lib"),
        ]
        .into_iter()
        .find(|d| d.join("lib/modules.nix").is_file())
        .unwrap_or_else(|| root().join("../shared/nix/nixpkgs-lib")),
    };
    assert!(
        dir.join("lib/modules.nix").is_file(),
        "nixpkgs' lib is missing at {}: set MVM_NIXPKGS_LIB to a checkout of \
         https://github.com/nix-community/nixpkgs.lib (the folder holding lib/)",
        dir.display()
    );
    dir.canonicalize().unwrap()
}

/// Evaluations of nix/tests/eval.nix (the modules under `lib.evalModules`,
/// NixOS/devenv options declared by nix/tests/stubs.nix). Each has a store
/// folder of its own, where the module's generated files (the VMs'
/// mvm.toml) are written, and the mvm package's stand-in, whose `bin/mvm`
/// is this mvm.
struct ModuleEval {
    dir: tempfile::TempDir,
}

impl ModuleEval {
    fn new() -> ModuleEval {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mvm/bin")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mvm"), dir.path().join("mvm/bin/mvm"))
            .unwrap();
        ModuleEval { dir }
    }

    /// The package's out path: the units' mvm is `OUT/bin/mvm`.
    fn out(&self) -> PathBuf {
        self.dir.path().join("mvm")
    }

    /// Where a /nix/store path the evaluation wrote is.
    fn store_file(&self, path: &str) -> PathBuf {
        assert!(path.starts_with("/nix/store/"), "{path}");
        self.dir.path().join("store").join(&path[1..])
    }

    /// `module`: "host" or "devenv"; `configuration`: a module expression
    /// (default: the example host's, nix/tests/devenv-example.nix);
    /// `extra`: one more module. Ok: the JSON; Err: Nix's error message.
    fn eval(
        &self,
        module: &str,
        configuration: Option<&str>,
        extra: Option<&str>,
    ) -> Result<Value, String> {
        let mut c = nix_instantiate();
        c.args([
            "--eval",
            "--strict",
            "--json",
            "--read-write-mode",
            "--store",
        ])
        .arg(self.dir.path().join("store"))
        .arg(root().join("nix/tests/eval.nix"))
        .arg("--argstr")
        .arg("nixpkgsLib")
        .arg(nixpkgs_lib())
        .args(["--argstr", "module", module])
        .arg("--argstr")
        .arg("mvmOutPath")
        .arg(self.out());
        if let Some(e) = configuration {
            c.args(["--arg", "configuration", e]);
        }
        if let Some(e) = extra {
            c.args(["--arg", "extra", e]);
        }
        let out = c.output().unwrap();
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn host(&self, configuration: Option<&str>, extra: Option<&str>) -> Value {
        self.eval("host", configuration, extra)
            .unwrap_or_else(|e| panic!("the host module does not evaluate: {e}"))
    }
}

/// A unit's command line (`ExecStart=` as `lib.escapeShellArgs` writes it:
/// words, single quotes, `'\''`) as argv.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word, mut quoted) = (vec![], String::new(), false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if !quoted => {
                word.extend(chars.next());
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes: {line}");
    if in_word {
        words.push(word);
    }
    words
}

/// `units.NAME.serviceConfig.KEY` of an evaluated host as argv, without
/// the leading mvm (checked to be the package's).
fn unit_argv(eval: &ModuleEval, host: &Value, name: &str, key: &str) -> Vec<String> {
    let line = host["units"][name]["serviceConfig"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{name}.{key}: {}", host["units"]));
    let mut argv = words(line);
    assert_eq!(
        Path::new(&argv.remove(0)),
        eval.out().join("bin/mvm"),
        "{line}"
    );
    argv
}

/// Paths in /nix/store the evaluation wrote, as the test can read them.
fn in_store(eval: &ModuleEval, argv: Vec<String>) -> Vec<String> {
    argv.into_iter()
        .map(|a| {
            if a.starts_with("/nix/store/") {
                eval.store_file(&a).to_str().unwrap().to_string()
            } else {
                a
            }
        })
        .collect()
}

/// A Nix string literal.
fn nix_str(s: &str) -> String {
    assert!(!s.contains("${"), "{s}");
    serde_json::to_string(s).unwrap()
}

/// The network units (mvm-net, mvm-netd) as the host module generates
/// them, run for real in a network namespace.
#[test]
fn network_units_run_with_this_mvm() {
    let eval = ModuleEval::new();
    let host = eval.host(
        Some(
            r#"{ services.mvm = { enable = true; user = "nobody";
                 network = { taps = 2; subnet = "10.99.9.1/24"; }; }; }"#,
        ),
        None,
    );
    let ns = Netns::new("nixunits");
    let net_dir = ns.home.join("net-plane");
    assert_eq!(
        host["units"]["mvm-net"]["environment"]["MVM_NET_DIR"],
        "/var/lib/mvm/net"
    );
    let setup = unit_argv(&eval, &host, "mvm-net", "ExecStart");
    let args: Vec<&str> = setup.iter().map(String::as_str).collect();
    let out = ns.mvm(&args, Some(&net_dir));
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    assert!(ns
        .ip(&["-br", "addr", "show", "virbr-mvm"])
        .contains("10.99.9.1/24"));
    assert!(ns
        .ip(&["-d", "link", "show", "mvmp-1"])
        .contains("user nobody"));

    // The DHCP/DNS daemon the mvm-netd unit runs: it serves and records its pid.
    let daemon = unit_argv(&eval, &host, "mvm-netd", "ExecStart");
    let args: Vec<&str> = daemon.iter().map(String::as_str).collect();
    let mut child = ns.mvm_command(&args, Some(&net_dir)).spawn().unwrap();
    let pid_file = net_dir.join("netd.pid");
    let mut recorded = None;
    // A bound for a daemon that never writes its pid, generous under load.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        // Non-empty: the file can be seen created before it is written.
        recorded = std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|p| !p.trim().is_empty());
        if recorded.is_some() {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "netd exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    // `ip netns exec` execs mvm, so the child's pid is mvm's.
    assert_eq!(
        recorded.as_deref().map(str::trim),
        Some(child.id().to_string().as_str())
    );

    let teardown = unit_argv(&eval, &host, "mvm-net", "ExecStop");
    let args: Vec<&str> = teardown.iter().map(String::as_str).collect();
    let out = ns.mvm(&args, Some(&net_dir));
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    assert!(!ns.ip(&["-br", "link"]).contains("virbr-mvm"));
}

#[test]
fn nix_kernel_build_reads_the_same_fragment_and_check() {
    let nix = std::fs::read_to_string(root().join("nix/guest-kernel.nix")).unwrap();
    let sh = std::fs::read_to_string(root().join("guest-kernel/build.sh")).unwrap();
    for (file, var) in [
        ("../guest-kernel/kernel.fragment", "fragment"),
        ("../guest-kernel/verify-config.sh", "verify"),
    ] {
        assert!(nix.contains(&format!("{var} = {file};")), "{var}");
        assert!(nix.contains(&format!("${{{var}}}")), "{var} used");
    }
    assert!(nix.contains("tinyconfig") && sh.contains("tinyconfig"));
    assert!(sh.contains("fragment=\"$here/kernel.fragment\""));
    assert!(sh.contains("\"$here/verify-config.sh\" \"$fragment\""));
}

/// The option tree the module builds (nix/schema-tree.nix, evaluated by Nix)
/// against the JSON schema, key by key.
fn keys_of(tree: &Value) -> BTreeMap<String, Value> {
    tree["options"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

#[test]
fn module_vm_options_are_the_config_schema() {
    let schema_file = root().join("nix/mvm-config.schema.json");
    let checked_in = std::fs::read_to_string(&schema_file).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mvm"))
        .args(["config", "--schema"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stored: Value = serde_json::from_str(&checked_in).unwrap();
    assert_eq!(
        printed, stored,
        "nix/mvm-config.schema.json is stale: run `mvm config --schema > nix/mvm-config.schema.json`"
    );

    let out = nix_instantiate()
        .args(["--eval", "--strict", "--json"])
        .arg(root().join("nix/schema-tree.nix"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let tree: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tree["kind"], "submodule");
    let options = keys_of(&tree);
    let properties = printed["properties"].as_object().unwrap();
    assert_eq!(
        options.keys().collect::<Vec<_>>(),
        properties.keys().collect::<Vec<_>>(),
        "the module's VM options are not mvm.toml's keys"
    );
    // Services: a map of submodules whose options are the service keys.
    let service = &options["services"];
    assert_eq!(service["kind"], "attrs", "{service}");
    let service_keys: Vec<_> = keys_of(&service["elem"]).into_keys().collect();
    assert!(
        service_keys.contains(&"command".to_string())
            && service_keys.contains(&"depends_on".to_string()),
        "{service_keys:?}"
    );
    assert_eq!(service["elem"]["options"]["command"]["required"], true);
}

/// A declared VM's unit as the host module generates it: its mvm.toml,
/// `ExecStart` (the VM's VMM then runs, recorded in the PIDFile the unit
/// names) and `ExecStop`, run for real. The guest kernel cannot run on this
/// host's PVM-backed KVM, but the VMM starts and stops as it would anywhere.
#[test]
fn vm_units_run_with_this_mvm() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let eval = ModuleEval::new();
    let host = eval.host(
        Some(&format!(
            r#"{{ services.mvm = {{ enable = true; user = "nobody"; network.enable = false;
                 vms.web = {{ project = {}; cpus = 1; memory = "256M"; network = false; }}; }}; }}"#,
            nix_str(project.to_str().unwrap())
        )),
        None,
    );
    let unit = &host["units"]["mvm-vm-web"];
    let config = &unit["serviceConfig"];
    // The unit's MVM_HOME (/var/lib/mvm/declarative) is a folder of the test's.
    let unit_home = unit["environment"]["MVM_HOME"].as_str().unwrap();
    assert_eq!(config["PIDFile"], format!("{unit_home}/vms/web/pid"));
    let home = tmp.path().join("home");
    let kernel = tmp.path().join("vmlinux");
    // A hand-made guest that spins: the VM stays up until stopped.
    let guest = program(&[&print("tiny guest up\n"), code::SPIN]);
    std::fs::write(&kernel, elf_kernel(&guest, true)).unwrap();
    // The unit's own mvm: OUT/bin/mvm, this mvm.
    let mvm = |argv: &[String]| {
        Command::new(eval.out().join("bin/mvm"))
            .args(argv)
            .env("MVM_HOME", &home)
            .env("MVM_KERNEL", &kernel)
            .env("MVM_INIT", "/bin/true")
            .env("MVM_ALLOW_PVM_HOST", "1")
            .output()
            .unwrap()
    };
    let start = in_store(&eval, unit_argv(&eval, &host, "mvm-vm-web", "ExecStart"));
    let out = mvm(&start);
    assert!(out.status.success(), "{start:?}: {}", text(&out));
    // The unit's PIDFile: the VMM, alive.
    let pid = std::fs::read_to_string(home.join("vms/web/pid")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("_vmm"),
        "{cmdline:?}"
    );
    let stop = in_store(&eval, unit_argv(&eval, &host, "mvm-vm-web", "ExecStop"));
    let out = mvm(&stop);
    assert!(out.status.success(), "{stop:?}: {}", text(&out));
    // Gone, or a zombie until init reaps it (its parent, `mvm up`, exited).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
        "the VMM still runs: {stat}"
    );
}

/// The example host configuration under the module system: the units,
/// users, device rules and kernel modules it makes, and its VM's mvm.toml,
/// which mvm reads (`mvm up --config ... --dry-run`).
#[test]
fn example_host_evaluates() {
    let eval = ModuleEval::new();
    let host = eval.host(None, None);
    let package = eval.out();
    let mvm = package.join("bin/mvm");
    let mvm = mvm.to_str().unwrap();
    let units = host["units"].as_object().unwrap();
    assert_eq!(
        units.keys().collect::<Vec<_>>(),
        ["mvm-net", "mvm-netd", "mvm-vm-web"],
        "{units:?}"
    );
    let net = &units["mvm-net"];
    assert_eq!(
        net["serviceConfig"]["ExecStart"],
        format!("{mvm} net setup --user alice --pool 8 --subnet 10.77.0.1/24")
    );
    assert_eq!(
        net["serviceConfig"]["ExecStop"],
        format!("{mvm} net teardown")
    );
    assert_eq!(net["serviceConfig"]["Type"], "oneshot");
    assert_eq!(net["serviceConfig"]["RemainAfterExit"], true);
    assert_eq!(net["wantedBy"], serde_json::json!(["multi-user.target"]));
    let netd = &units["mvm-netd"];
    assert_eq!(netd["serviceConfig"]["ExecStart"], format!("{mvm} _netd"));
    assert_eq!(netd["requires"], serde_json::json!(["mvm-net.service"]));
    assert_eq!(netd["after"], serde_json::json!(["mvm-net.service"]));

    let vm = &units["mvm-vm-web"];
    let sc = &vm["serviceConfig"];
    assert_eq!(sc["User"], "alice");
    assert_eq!(sc["Group"], "mvm");
    assert_eq!(sc["Type"], "forking");
    assert_eq!(sc["PIDFile"], "/var/lib/mvm/declarative/vms/web/pid");
    assert_eq!(
        sc["AmbientCapabilities"],
        serde_json::json!(["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"])
    );
    assert_eq!(
        vm["environment"],
        serde_json::json!({"MVM_HOME": "/var/lib/mvm/declarative", "MVM_NET_DIR": "/var/lib/mvm/net"})
    );
    assert_eq!(vm["wantedBy"], serde_json::json!(["multi-user.target"]));
    assert_eq!(vm["wants"], serde_json::json!(["mvm-netd.service"]));
    let start = unit_argv(&eval, &host, "mvm-vm-web", "ExecStart");
    assert_eq!(start[..2], ["up", "/home/alice/src/web"]);
    assert_eq!(start[4..], ["--name", "web"]);
    assert_eq!(
        unit_argv(&eval, &host, "mvm-vm-web", "ExecStop"),
        ["down", "/home/alice/src/web", "--name", "web"]
    );

    // The VM's mvm.toml, generated by the module into the store.
    assert_eq!(start[2], "--config");
    let file = eval.store_file(&start[3]);
    let written: toml::Value = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let written: Value = serde_json::to_value(written).unwrap();
    assert_eq!(
        written,
        serde_json::json!({
            "name": "web", "cpus": 2, "memory": "2G", "persistent": true,
            "ports": ["0.0.0.0:8080:8080"],
            "services": {"dev": {"command": "npm run dev", "ready": {"port": 8080}}}
        })
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mvm"))
        .arg("up")
        .arg(tmp.path())
        .arg("--config")
        .arg(&file)
        .args(["--name", "web", "--dry-run"])
        .env("MVM_HOME", tmp.path().join("home"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    for key in written.as_object().unwrap().keys() {
        assert!(printed.contains(key.as_str()), "{key} missing in {printed}");
    }

    let modules = host["kernelModules"].as_array().unwrap();
    for m in [
        "kvm-intel",
        "kvm-amd",
        "tun",
        "vhost_net",
        "bridge",
        "nf_tables",
    ] {
        assert!(modules.contains(&Value::from(m)), "{m}: {modules:?}");
    }
    assert_eq!(
        host["tmpfiles"],
        serde_json::json!([
            "d /var/lib/mvm 0755 root root -",
            "d /var/lib/mvm/net 0750 alice mvm -",
            "d /var/lib/mvm/declarative 0750 alice mvm -"
        ])
    );
    let udev = host["udevRules"].as_str().unwrap();
    assert!(
        udev.contains(r#"KERNEL=="kvm", GROUP="mvm", MODE="0660""#),
        "{udev}"
    );
    assert!(
        udev.contains(r#"KERNEL=="vhost-net", GROUP="mvm", MODE="0660""#),
        "{udev}"
    );
    assert!(udev.contains(r#"KERNEL=="tun", MODE="0666""#), "{udev}");
    assert_eq!(host["groups"], serde_json::json!(["mvm"]));
    assert_eq!(
        host["users"]["alice"],
        serde_json::json!({"extraGroups": ["mvm"], "isNormalUser": true})
    );
    assert_eq!(
        host["systemPackages"],
        serde_json::json!([package.to_str().unwrap()])
    );
    assert_eq!(
        host["variables"],
        serde_json::json!({"MVM_NET_DIR": "/var/lib/mvm/net"})
    );
    assert_eq!(
        host["firewall"],
        serde_json::json!({"virbr-mvm": {"allowedTCPPorts": [53], "allowedUDPPorts": [53, 67]}})
    );
    assert_eq!(host["warnings"], serde_json::json!([]));
}

/// Options that change the units: no network plane, no autostart, another group.
#[test]
fn host_module_options_shape_the_units() {
    let eval = ModuleEval::new();
    let host = eval.host(
        None,
        Some(
            r#"{ services.mvm = { network.enable = false; group = "vmusers";
                 vms.web.autostart = false; }; }"#,
        ),
    );
    let units = host["units"].as_object().unwrap();
    assert_eq!(units.keys().collect::<Vec<_>>(), ["mvm-vm-web"]);
    let vm = &units["mvm-vm-web"];
    assert_eq!(vm["wantedBy"], serde_json::json!([]));
    assert_eq!(vm["wants"], serde_json::json!([]));
    assert_eq!(vm["after"], serde_json::json!([]));
    assert_eq!(vm["serviceConfig"]["Group"], "vmusers");
    assert_eq!(host["groups"], serde_json::json!(["vmusers"]));
    assert!(host["udevRules"]
        .as_str()
        .unwrap()
        .contains(r#"GROUP="vmusers""#));
    assert_eq!(host["firewall"], serde_json::json!({}));

    // A project path with a quote, systemd's %specifier and $VARIABLE
    // signs: one word, the signs doubled (literal for systemd).
    let host = eval.host(
        None,
        Some(
            r#"{ lib, ... }: { services.mvm.vms.web.project = lib.mkForce "/home/alice/50%'s $HOME"; }"#,
        ),
    );
    assert_eq!(
        unit_argv(&eval, &host, "mvm-vm-web", "ExecStop"),
        ["down", "/home/alice/50%%'s $$HOME", "--name", "web"]
    );

    // Disabled: the module sets nothing.
    let host = eval.host(
        None,
        Some("{ lib, ... }: { services.mvm.enable = lib.mkForce false; }"),
    );
    assert_eq!(host["units"], serde_json::json!({}));
    assert_eq!(host["kernelModules"], serde_json::json!([]));
    assert_eq!(host["groups"], serde_json::json!([]));
}

/// A wrong value in a host configuration is an evaluation error that names
/// the option.
#[test]
fn host_module_refuses_wrong_values() {
    let eval = ModuleEval::new();
    let cases = [
        (
            None,
            "{ services.mvm.network.taps = 5000; }",
            &["`services.mvm.network.taps' is not of type `integer between 0 and 1024"][..],
        ),
        (
            None,
            r#"{ services.mvm.vms.web.cpus = "four"; }"#,
            &["`services.mvm.vms.web.cpus' is not of type", "\"four\""][..],
        ),
        (
            None,
            "{ services.mvm.vms.web.cpus = 1000; }",
            &["`services.mvm.vms.web.cpus' is not of type `null or integer between 1 and"][..],
        ),
        (
            None,
            "{ services.mvm.vms.web.cpu = 2; }",
            &["The option `services.mvm.vms.web.cpu' does not exist"][..],
        ),
        (
            None,
            r#"{ services.mvm.vms.web.ports = "8080:8080"; }"#,
            &["`services.mvm.vms.web.ports' is not of type `null or (list of string)'"][..],
        ),
        (
            None,
            r#"{ services.mvm.vms.web.services.dev.ready.port = "http"; }"#,
            &["`services.mvm.vms.web.services.dev.ready.port' is not of type"][..],
        ),
        (
            None,
            r#"{ services.mvm.vms.db.memory = "1G"; }"#,
            &["`services.mvm.vms.db.project' was accessed but has no value defined"][..],
        ),
        (
            Some("{ services.mvm.enable = true; }"),
            "{ }",
            &["`services.mvm.user' was accessed but has no value defined"][..],
        ),
    ];
    for (configuration, extra, expected) in cases {
        let err = eval
            .eval("host", configuration, Some(extra))
            .expect_err(extra);
        for e in expected {
            assert!(err.contains(e), "{extra}: expected {e:?} in\n{err}");
        }
    }
}

/// The devenv module, imported as devenv.yaml does (nix/devenv/devenv.nix):
/// the project's mvm.toml (devenv's processes as the VM's services), the
/// package, `mvm up` on entering the shell.
#[test]
fn devenv_module_evaluates() {
    let eval = ModuleEval::new();
    let devenv = |extra: Option<&str>| {
        eval.eval("devenv", None, extra)
            .unwrap_or_else(|e| panic!("the devenv module does not evaluate: {e}"))
    };
    let env = devenv(None);
    let file = &env["files"]["mvm.toml"];
    let expected = serde_json::json!({
        "ports": ["8000:8000"],
        "services": {"web": {"command": "python3 -m http.server 8000"}}
    });
    assert_eq!(file["toml"], expected);
    let toml_text = file["text"].as_str().unwrap();
    let parsed: toml::Value = toml::from_str(toml_text).unwrap();
    assert_eq!(serde_json::to_value(parsed).unwrap(), expected);
    assert_eq!(
        env["packages"],
        serde_json::json!([eval.out().to_str().unwrap()])
    );
    assert!(env["enterShell"].as_str().unwrap().starts_with("mvm up "));

    // mvm reads the written mvm.toml.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("mvm.toml"), toml_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mvm"))
        .arg("up")
        .arg(project.path())
        .arg("--dry-run")
        .env("MVM_HOME", project.path().join(".home"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("http.server"));

    // mvm.config.services, when set, wins over devenv's processes.
    let env = devenv(Some(
        r#"{ lib, ... }: { mvm.config.services.api.command = "./serve"; mvm.autostart = lib.mkForce false; }"#,
    ));
    assert_eq!(
        env["files"]["mvm.toml"]["toml"]["services"],
        serde_json::json!({"api": {"command": "./serve"}})
    );
    assert_eq!(env["enterShell"], "");

    // Disabled: nothing written, nothing added.
    let env = devenv(Some("{ lib, ... }: { mvm.enable = lib.mkForce false; }"));
    assert_eq!(env["files"], serde_json::json!({}));
    assert_eq!(env["packages"], serde_json::json!([]));
}

/// A wrong value in devenv.nix is an evaluation error naming the option.
#[test]
fn devenv_module_refuses_wrong_values() {
    let eval = ModuleEval::new();
    for (extra, expected) in [
        (
            r#"{ mvm.config.cpus = "four"; }"#,
            "`mvm.config.cpus' is not of type",
        ),
        (
            "{ mvm.config.port = 8000; }",
            "The option `mvm.config.port' does not exist",
        ),
        (
            r#"{ mvm.autostart = "yes"; }"#,
            "`mvm.autostart' is not of type `boolean'",
        ),
    ] {
        let err = eval.eval("devenv", None, Some(extra)).expect_err(extra);
        assert!(
            err.contains(expected),
            "{extra}: expected {expected:?} in\n{err}"
        );
    }
}

/// nix/envrc (the devenv + mvm .envrc template) ends with exactly what
/// `mvm direnv` prints.
#[test]
fn envrc_template_is_what_mvm_direnv_prints() {
    let template = std::fs::read_to_string(root().join("nix/envrc")).unwrap();
    let dir = std::env::temp_dir().join(format!("mvm-nix-envrc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mvm"))
        .arg("direnv")
        .arg(&dir)
        .env("MVM_HOME", dir.join("home"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        template.ends_with(printed.as_ref()),
        "nix/envrc is stale: its end should be\n{printed}"
    );
    assert!(template.contains("use devenv"));
}

/// Every unit runs in systemd's sandbox; a VM's unit (its `mvm` and VMM
/// run as the user, which mvm's own jail cannot take) gets the tighter
/// one: only KVM, taps and vhost-net, two capabilities, no namespaces.
#[test]
fn units_run_in_systemd_sandboxes() {
    let eval = ModuleEval::new();
    let host = eval.host(None, None);
    let units = host["units"].as_object().unwrap();
    for (name, unit) in units {
        let sc = &unit["serviceConfig"];
        for (key, want) in [
            ("NoNewPrivileges", serde_json::json!(true)),
            ("ProtectSystem", serde_json::json!("full")),
            ("PrivateTmp", serde_json::json!(true)),
            ("ProtectKernelModules", serde_json::json!(true)),
            ("RestrictSUIDSGID", serde_json::json!(true)),
            ("SystemCallArchitectures", serde_json::json!("native")),
        ] {
            assert_eq!(sc[key], want, "{name}: {key}");
        }
    }
    let vm = &units["mvm-vm-web"]["serviceConfig"];
    assert_eq!(
        vm["CapabilityBoundingSet"],
        serde_json::json!(["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"])
    );
    // What it may hold is within what it may ever get.
    for cap in vm["AmbientCapabilities"].as_array().unwrap() {
        assert!(
            vm["CapabilityBoundingSet"]
                .as_array()
                .unwrap()
                .contains(cap),
            "{cap}"
        );
    }
    assert_eq!(vm["DevicePolicy"], "closed");
    assert_eq!(
        vm["DeviceAllow"],
        serde_json::json!(["/dev/kvm rw", "/dev/net/tun rw", "/dev/vhost-net rw"])
    );
    assert_eq!(vm["RestrictNamespaces"], "user mnt ipc uts");
    assert_eq!(vm["ProtectHome"], "read-only");
    // The network units keep root's powers (bridge, nftables, sysctls).
    assert!(units["mvm-net"]["serviceConfig"]
        .get("CapabilityBoundingSet")
        .is_none());
}
