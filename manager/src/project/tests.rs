//! Config parsing and detection over fixture folders.

use std::path::{Path, PathBuf};

use super::config::{parse, CommandLine};
use super::detect::{compose_services, detect, devenv, Devenv};

/// A fresh folder with `files` (name, content).
fn fixture(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mvm-proj-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn err(text: &str) -> String {
    parse(Path::new("/p/mvm.toml"), text).unwrap_err()
}

#[test]
fn full_config_parses_and_orders_services() {
    let c = parse(
        Path::new("mvm.toml"),
        r#"
name = "shop"
cpus = 4
memory = "2G"
disk = "50G"
persistent = true
root = "host"
ports = ["8080:3000", "5353:53/udp"]
env = { NODE_ENV = "development" }
env_host = ["AWS_*", "GITHUB_TOKEN"]
shares = [{ host = "../data", guest = "/data", mode = "ro" }]
shell = ["bash", "-l"]

[services.web]
command = "npm run dev"
depends_on = ["db", "cache"]
ready = { port = 3000 }

[services.db]
command = ["postgres", "-D", "/var/lib/pg"]
restart = "always"
ready = { command = "pg_isready" }

[services.cache]
command = "redis-server"
cwd = "cache"
"#,
    )
    .unwrap();
    assert_eq!(c.cpus, Some(4));
    assert_eq!(c.memory.unwrap().0, 2048);
    assert_eq!(c.disk.unwrap().0, 50 * 1024);
    assert_eq!(c.ports.len(), 2);
    let (specs, deps) = super::services(&c).unwrap();
    let order: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["cache", "db", "web"]);
    assert_eq!(deps["web"], ["db", "cache"]);
    assert_eq!(specs[0].cwd.as_deref(), Some("/project/cache"));
    assert_eq!(specs[1].argv, ["postgres", "-D", "/var/lib/pg"]);
    assert_eq!(specs[2].argv, ["/bin/sh", "-c", "npm run dev"]);
    assert_eq!(
        specs[2].readiness,
        Some(agent_proto::Readiness::Tcp { port: 3000 })
    );
    assert_eq!(specs[1].restart, agent_proto::RestartPolicy::Always);
    assert_eq!(specs[0].restart, agent_proto::RestartPolicy::OnFailure);
    // It renders back to TOML that parses to the same thing.
    let again = parse(Path::new("x"), &toml::to_string_pretty(&c).unwrap()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn errors_name_file_line_and_key() {
    let e = err("cpus = 2\nbogus = 1\n");
    assert!(
        e.starts_with("/p/mvm.toml:2:1: key `bogus`: unknown field `bogus`"),
        "{e}"
    );
    let e = err("cpus = \"two\"\n");
    assert!(
        e.starts_with("/p/mvm.toml:1:8: key `cpus`: invalid type"),
        "{e}"
    );
    let e = err("[services.web]\ncommand = \"x\"\nrestart = \"sometimes\"\n");
    assert!(
        e.contains(":3:") && e.contains("`services.web.restart`") && e.contains("on-failure"),
        "{e}"
    );
    let e = err("[services.web]\ncommand = \"x\"\ncolour = 1\n");
    assert!(
        e.contains(":3:1: key `services.web.colour`: unknown field"),
        "{e}"
    );
    let e = err("memory = \"lots\"\n");
    assert!(e.contains(":1:") && e.contains("`memory`"), "{e}");
    let e = err("disk = \"1M\"\n");
    assert!(e.contains("`disk`") && e.contains("too small"), "{e}");
    let e = err("ports = [\"80\"]\n");
    assert!(e.contains("`ports`") && e.contains("\"80\""), "{e}");
    let e = err("volumes = [{ name = \"pg\", guest = \"/var/lib/pg\", owner = \"post gres\" }]\n");
    assert!(
        e.contains("volumes: volume 'pg': owner 'post gres' is not a user name or uid"),
        "{e}"
    );
    let e = err("env_host = [\"A-B\"]\n");
    assert!(e.contains("`env_host`") && e.contains("A-B"), "{e}");
    let e = err("[env]\n1BAD = \"x\"\n");
    assert!(e.contains(":2:") && e.contains("1BAD"), "{e}");
    let e = err("[services.web]\ncommand = []\n");
    assert!(
        e.contains("`services.web.command`") && e.contains("empty"),
        "{e}"
    );
    let e = err("[services.web]\ncommand = \"x\"\nready = { port = 1, command = \"y\" }\n");
    assert!(e.contains("exactly one"), "{e}");
    let e = err("[services.web]\ncommand = \"x\"\ndepends_on = [\"db\"]\n");
    assert_eq!(
        e,
        "/p/mvm.toml:3: services.web.depends_on: no service named 'db'"
    );
    let e = err("[services.a]\ncommand = \"x\"\ndepends_on = [\"a\"]\n");
    assert!(e.contains("cycle: a -> a"), "{e}");
    let e = err("name = \"Bad_Name\"\n");
    assert!(e.contains(":1: name: invalid VM name 'Bad_Name'"), "{e}");
    let e = err("ports = [\"80:1\", \"80:2\"]\n");
    assert!(e.contains("forwarded twice"), "{e}");
    let e = err("shares = [{ host = \"x\", guest = \"/project/x\" }]\n");
    assert!(e.contains("under /project"), "{e}");
    // Nothing reaches the kernel command line but one clean path.
    for guest in ["/x init=/bin/sh", "/x/../project", "/x:ro", "/x\\n"] {
        let e = err(&format!(
            "shares = [{{ host = \"x\", guest = \"{guest}\" }}]\n"
        ));
        assert!(e.contains("shares: guest path"), "{guest}: {e}");
    }
    let e = err("cpus = 2\ncpus = 3\n");
    assert!(e.contains(":2:"), "{e}");
}

#[test]
fn network_is_a_switch_or_a_table_with_allowed_networks() {
    let parse = |t: &str| parse(Path::new("/p/mvm.toml"), t).unwrap();
    let off = parse("network = false\n").network.unwrap();
    assert!(!off.enabled() && off.allow().is_empty());
    let n = parse("network.allow = [\"10.1.0.0/16\", \"169.254.169.254\"]\n")
        .network
        .unwrap();
    assert!(n.enabled());
    let shown: Vec<String> = n.allow().iter().map(|c| c.to_string()).collect();
    assert_eq!(shown, ["10.1.0.0/16", "169.254.169.254/32"]);
    let n = parse("[network]\nenable = false\nallow = [\"10.0.0.0/8\"]\n")
        .network
        .unwrap();
    assert!(!n.enabled());
    let e = err("network.allow = [\"10.1.2.3/16\"]\n");
    assert!(
        e.contains("10.1.2.3/16") && e.contains("did you mean 10.1.0.0/16") && !e.contains('\n'),
        "{e}"
    );
    let e = err("network.allow = [\"fd00::/8\"]\n");
    assert!(e.contains("fd00::/8") && e.contains("only IPv4"), "{e}");
    let e = err("network.allowed = []\n");
    assert!(e.contains("network"), "{e}");
}

#[test]
fn schema_lists_every_key() {
    let s = super::config::schema();
    let props = s["properties"].as_object().unwrap();
    for k in [
        "name",
        "cpus",
        "memory",
        "persistent",
        "root",
        "network",
        "ports",
        "env",
        "env_host",
        "shares",
        "shell",
        "services",
    ] {
        assert!(props.contains_key(k), "{k} missing from the schema");
    }
    let text = s.to_string();
    for k in ["depends_on", "restart", "ready", "on-failure", "cwd"] {
        assert!(text.contains(k), "{k} missing from the schema");
    }
}

#[test]
fn mvm_toml_wins_over_other_files() {
    let dir = fixture(
        "conflict",
        &[
            ("mvm.toml", "[services.api]\ncommand = \"./api\"\n"),
            ("package.json", r#"{"scripts":{"dev":"vite"}}"#),
            ("Procfile", "web: rails s\n"),
        ],
    );
    let d = detect(&dir, false).unwrap();
    assert_eq!(d.config.services.keys().collect::<Vec<_>>(), ["api"]);
    assert_eq!(d.found, ["mvm.toml"]);
    assert!(
        d.notes[0].contains("Procfile, package.json also present"),
        "{:?}",
        d.notes
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn common_files_are_detected() {
    let dir = fixture(
        "common",
        &[
            ("package.json", r#"{"scripts":{"start":"node index.js","test":"x"}}"#),
            ("manage.py", "#!/usr/bin/env python3\n"),
            ("Procfile", "# comment\nworker: python3 worker.py\n\n"),
            (
                "docker-compose.yml",
                "version: '3'\nservices:\n  db:\n    image: postgres\n  cache:\n    image: redis\nvolumes:\n  x:\n",
            ),
        ],
    );
    let d = detect(&dir, false).unwrap();
    let names: Vec<&String> = d.config.services.keys().collect();
    assert_eq!(names, ["web", "worker"]);
    // package.json came first: the Django server is noted, not run.
    let web = &d.config.services["web"];
    assert_eq!(web.command, CommandLine::Shell("npm run start".into()));
    assert_eq!(web.ready.as_ref().unwrap().port, Some(3000));
    assert!(
        d.notes
            .iter()
            .any(|n| n.starts_with("manage.py: service 'web'")),
        "{:?}",
        d.notes
    );
    assert!(
        d.notes.iter().any(|n| n.contains("(db, cache) are hints")),
        "{:?}",
        d.notes
    );
    assert_eq!(d.config.ports.len(), 1);
    std::fs::remove_dir_all(dir).unwrap();

    let dir = fixture("django", &[("manage.py", "")]);
    let d = detect(&dir, false).unwrap();
    assert_eq!(
        d.config.services["web"].command,
        CommandLine::Shell("python3 manage.py runserver 0.0.0.0:8000".into())
    );
    assert_eq!(d.config.ports[0].0.host_port, 8000);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn broken_project_files_are_clear_errors() {
    let dir = fixture("broken", &[("package.json", "{\"scripts\": ")]);
    let e = detect(&dir, false).unwrap_err();
    assert!(e.contains("package.json:1: invalid JSON"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
    let dir = fixture("badproc", &[("Procfile", "web: ok\njust a line\n")]);
    let e = detect(&dir, false).unwrap_err();
    assert!(
        e.contains("Procfile:2: expected NAME: COMMAND, found 'just a line'"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
    let dir = fixture("badtoml", &[("mvm.toml", "cpus = \n")]);
    let e = detect(&dir, false).unwrap_err();
    assert!(e.contains("mvm.toml:1:"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
    let dir = fixture("noscript", &[("package.json", r#"{"name":"x"}"#)]);
    let d = detect(&dir, false).unwrap();
    assert!(d.config.services.is_empty());
    assert!(d.notes[0].contains("no \"dev\" or \"start\" script"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn devenv_with_and_without_nix() {
    for (file, text, kind) in [
        ("devenv.nix", "{ pkgs, ... }: { }", Devenv::Cli),
        ("devenv.yaml", "inputs: {}", Devenv::Cli),
        ("devenv.lock", "{}", Devenv::Cli),
        (
            "flake.nix",
            "{ inputs.devenv.url = \"github:cachix/devenv\"; }",
            Devenv::Flake,
        ),
    ] {
        let dir = fixture("devenv", &[(file, text), ("Procfile", "web: ./serve\n")]);
        assert_eq!(devenv(&dir), Some(kind), "{file}");
        // No Nix: said plainly; the rest (the Procfile) still runs.
        let d = detect(&dir, false).unwrap();
        assert!(d.notes[0].contains("no Nix"), "{:?}", d.notes);
        assert_eq!(d.config.services.keys().collect::<Vec<_>>(), ["web"]);
        assert!(d.config.shell.is_none());
        // With Nix: the devenv shell and its processes as a service, the
        // store shared read-only.
        let d = detect(&dir, true).unwrap();
        assert!(d.notes.is_empty(), "{:?}", d.notes);
        let shell = d.config.shell.as_ref().unwrap().argv();
        let up = d.config.services["devenv"].command.argv();
        match kind {
            Devenv::Cli => {
                assert_eq!(shell, ["devenv", "shell"]);
                assert_eq!(up, ["devenv", "up"]);
            }
            Devenv::Flake => {
                assert_eq!(shell, ["nix", "develop", "--no-pure-eval"]);
                assert_eq!(up[..3], ["nix", "develop", "--no-pure-eval"]);
            }
        }
        assert_eq!(d.config.shares[0].guest, "/nix/store");
        std::fs::remove_dir_all(dir).unwrap();
    }
    let dir = fixture(
        "plainflake",
        &[("flake.nix", "{ inputs.nixpkgs.url = \"x\"; }")],
    );
    assert_eq!(devenv(&dir), None);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn compose_service_names() {
    let text = "services:\n  web:\n    build: .\n    ports:\n      - 80:80\n  \"db\":\n    image: pg\nnetworks:\n  a:\n";
    assert_eq!(compose_services(text), ["web", "db"]);
}

#[test]
fn vm_names_from_folders() {
    let n = |p: &str| super::name_from_folder(Path::new(p));
    assert_eq!(n("/src/My_Web App").unwrap(), "my-web-app");
    assert_eq!(n("/src/node-app").unwrap(), "node-app");
    assert_eq!(
        n(&format!("/src/{}", "a".repeat(40))).unwrap(),
        "a".repeat(32)
    );
    let e = n("/src/___").unwrap_err();
    assert!(format!("{e:#}").contains("pass --name"), "{e:#}");
}

#[test]
fn env_values_stay_off_the_kernel_command_line() {
    // The console log shows the kernel command line; environment values
    // travel over the agent's vsock channel only.
    let spec = crate::state::VmSpec {
        id: "0123abcd".into(),
        name: "web".into(),
        project: Some("/src/web".into()),
        cpus: 1,
        memory_mib: 512,
        persistent: false,
        disk_mib: crate::create::DEFAULT_DISK_MIB,
        host_root: true,
        network: true,
        net_backend: Default::default(),
        allow_vm_to_vm: false,
        allow_net: Vec::new(),
        kernel: None,
        ports: Vec::new(),
        env: [("API_TOKEN".to_string(), "s3cret-value".to_string())].into(),
        env_host: vec!["AWS_*".into()],
        services: Vec::new(),
        depends_on: Default::default(),
        shares: vec![crate::state::ExtraShare {
            host: "/nix/store".into(),
            guest: "/nix/store".into(),
            ro: true,
            xattr: false,
        }],
        volumes: Vec::new(),
        home: None,
        shell: None,
        created: 0,
        seccomp: vmm::seccomp::Seccomp::Kill,
        jail: true,
    };
    let c = crate::image::cmdline(&spec).to_string();
    assert!(
        !c.contains("s3cret") && !c.contains("API_TOKEN") && !c.contains("AWS"),
        "{c}"
    );
    assert!(c.contains("mvm.share=share0:/nix/store:ro"), "{c}");
}
