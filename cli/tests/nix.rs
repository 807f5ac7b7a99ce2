//! The Nix side (flake.nix, nix/) checked against the real mvm, as far as a
//! machine without a Nix store can: every .nix file parses; the host
//! module's VM options are generated from the very schema `mvm config
//! --schema` prints; the systemd units' command lines (nix/units.json) run
//! with this mvm; the Nix kernel build reads the same fragment and check as
//! guest-kernel/build.sh. Needs `nix-instantiate` (Debian's nix-bin, which
//! scripts/install-deps.sh installs).

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

/// units.json: argv lists without the mvm path, @placeholders@ to fill.
fn unit(group: &str, name: &str, values: &[(&str, &str)]) -> Vec<String> {
    let units: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("nix/units.json")).unwrap())
            .unwrap();
    let argv = units[group][name]
        .as_array()
        .unwrap_or_else(|| panic!("units.json has no {group}.{name}"));
    argv.iter()
        .map(|a| {
            let mut a = a.as_str().unwrap().to_string();
            for (k, v) in values {
                a = a.replace(&format!("@{k}@"), v);
            }
            assert!(!a.contains('@'), "unfilled placeholder in {a}");
            a
        })
        .collect()
}

#[test]
fn network_units_run_with_this_mvm() {
    let ns = Netns::new("nixunits");
    let net_dir = ns.home.join("net-plane");
    let setup = unit(
        "network",
        "setup",
        &[
            ("user", "nobody"),
            ("taps", "2"),
            ("subnet", "10.99.9.1/24"),
        ],
    );
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
    let daemon = unit("network", "daemon", &[]);
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

    let teardown = unit("network", "teardown", &[]);
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

/// A declared VM's unit: its generated mvm.toml, `ExecStart` (the VM's
/// VMM then runs, recorded in the PIDFile the unit names) and `ExecStop`,
/// run for real. The guest kernel cannot run on this host's PVM-backed
/// KVM, but the VMM starts and stops as it would anywhere.
#[test]
fn vm_units_run_with_this_mvm() {
    let tmp = std::env::temp_dir().join(format!("mvm-nix-vm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let project = tmp.join("project");
    std::fs::create_dir_all(&project).unwrap();
    let home = tmp.join("home");
    let config = tmp.join("web.toml");
    std::fs::write(
        &config,
        "cpus = 1\nmemory = \"256M\"\nnetwork = false\nname = \"web\"\n",
    )
    .unwrap();
    let kernel = tmp.join("vmlinux");
    // A hand-made guest that spins: the VM stays up until stopped.
    let guest = program(&[&print("tiny guest up\n"), code::SPIN]);
    std::fs::write(&kernel, elf_kernel(&guest, true)).unwrap();
    let mvm = |argv: &[String]| {
        Command::new(env!("CARGO_BIN_EXE_mvm"))
            .args(argv)
            .env("MVM_HOME", &home)
            .env("MVM_KERNEL", &kernel)
            .env("MVM_INIT", "/bin/true")
            .env("MVM_ALLOW_PVM_HOST", "1")
            .output()
            .unwrap()
    };
    let values = [
        ("name", "web"),
        ("project", project.to_str().unwrap()),
        ("config", config.to_str().unwrap()),
    ];
    let out = mvm(&unit("vm", "start", &values));
    assert!(out.status.success(), "{}", text(&out));
    // The unit's PIDFile: the VMM, alive.
    let pid = std::fs::read_to_string(home.join("vms/web/pid")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("_vmm"),
        "{cmdline:?}"
    );
    let out = mvm(&unit("vm", "stop", &values));
    assert!(out.status.success(), "{}", text(&out));
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
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The example host configuration's VM, as the module would write it,
/// is a valid mvm.toml (`mvm up --config ... --dry-run` reads it).
#[test]
fn example_host_vm_is_a_valid_config() {
    let expr = format!(
        "(import {}/nix/example-host/configuration.nix {{ }}).services.mvm.vms",
        root().display()
    );
    let out = nix_instantiate()
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let vms: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!vms.is_empty());
    let tmp = std::env::temp_dir().join(format!("mvm-nix-example-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (name, vm) in vms {
        let mut vm = vm.as_object().unwrap().clone();
        vm.remove("project");
        vm.remove("autostart");
        vm.insert("name".into(), Value::String(name.clone()));
        let file = tmp.join(format!("{name}.toml"));
        std::fs::write(&file, toml::to_string(&vm).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mvm"))
            .arg("up")
            .arg(&tmp)
            .arg("--config")
            .arg(&file)
            .args(["--name", &name, "--dry-run"])
            .env("MVM_HOME", tmp.join("home"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
        let printed = String::from_utf8_lossy(&out.stdout);
        for key in vm.keys() {
            assert!(printed.contains(key.as_str()), "{key} missing in {printed}");
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
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
