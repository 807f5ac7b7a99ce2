//! What reaches the guest from the host, checked with a real `mvm`: an
//! untrusted mvm.toml gets nothing beyond its folder until `mvm trust`,
//! home paths are shared only when asked and only from the home, and
//! pseudo file systems are never share sources.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("mvm-view-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["state", "home", "project", "outside"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        Env {
            dir: std::fs::canonicalize(&dir).unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn s(&self, p: &str) -> String {
        self.path(p).to_string_lossy().into_owned()
    }

    fn mvm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mvm"))
            .args(args)
            .env("MVM_HOME", self.path("state"))
            .env("HOME", self.path("home"))
            .env("MVM_KERNEL", "/nonexistent-kernel")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let o = self.mvm(args);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "mvm {args:?} failed: {err}");
        (out, err)
    }

    /// A one-line error naming `needle` (after what `mvm` says it found in
    /// the project), and no VM left behind.
    fn fails(&self, args: &[&str], needle: &str) {
        let o = self.mvm(args);
        let e = text(&o.stderr);
        assert!(!o.status.success(), "mvm {args:?} should fail");
        assert!(e.contains(needle), "mvm {args:?}: {needle:?} not in {e}");
        let lines = e.lines().filter(|l| !l.starts_with("mvm: found ")).count();
        assert_eq!(lines, 1, "one line expected: {e}");
        let vms = std::fs::read_dir(self.path("state/vms"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(vms, 0, "mvm {args:?} left a VM behind");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

#[test]
fn an_untrusted_mvm_toml_gets_nothing_beyond_its_folder() {
    let env = Env::new("trust");
    std::fs::create_dir(env.path("project/data")).unwrap();
    write(&env.path("home/.gitconfig"), "[user]\n");
    // A volume made by hand: not this project's.
    env.ok(&["volume", "create", "byhand", "--size", "16M"]);
    let toml = format!(
        "env_host = [\"AWS_*\", \"EDITOR\"]\nhome = [\"~/.gitconfig\"]\n\
         ports = [\"0.0.0.0:8080:80\", \"127.0.0.1:8081:81\", \"3000:3000\"]\n\
         network = {{ allow = [\"10.1.0.0/16\"] }}\n\
         volumes = [{{ name = \"byhand\", guest = \"/byhand\" }}, \
         {{ name = \"fresh\", guest = \"/fresh\", size = \"16M\" }}]\n\n\
         [[shares]]\nhost = \"data\"\nguest = \"/data\"\n\n\
         [[shares]]\nhost = \"{}\"\nguest = \"/outside\"\n",
        env.s("outside")
    );
    write(&env.path("project/mvm.toml"), &toml);
    let project = env.s("project");

    // Untrusted: one line says what was skipped and how to allow it.
    let (out, err) = env.ok(&["config", &project]);
    let line: Vec<&str> = err.lines().filter(|l| l.contains("not trusted")).collect();
    assert_eq!(line.len(), 1, "{err}");
    for said in [
        "share ",
        "/outside",
        "home ~/.gitconfig",
        "env_host AWS_*",
        "network.allow 10.1.0.0/16",
        "port 8080 on 0.0.0.0 (kept on loopback)",
        "volume byhand (not made by this project)",
        &format!("mvm trust {project}"),
    ] {
        assert!(line[0].contains(said), "{said:?} not in {}", line[0]);
    }
    assert!(!line[0].contains("EDITOR") && !line[0].contains("data\""));
    // Forwards on loopback and volumes it makes itself are its own.
    assert!(
        !line[0].contains("8081") && !line[0].contains("3000") && !line[0].contains("fresh"),
        "{}",
        line[0]
    );
    assert!(
        !out.contains("10.1.0.0") && !out.contains("0.0.0.0") && !out.contains("/byhand"),
        "{out}"
    );
    assert!(out.contains("/fresh") && out.contains("8080:80"), "{out}");
    assert!(out.contains("/data") && out.contains("EDITOR"), "{out}");
    assert!(
        !out.contains("/outside") && !out.contains("AWS_") && !out.contains("gitconfig"),
        "{out}"
    );
    // The VM made from it has none of it either.
    env.ok(&["create", "web", "--project", &project]);
    let spec = std::fs::read_to_string(env.path("state/vms/web/vm.toml")).unwrap();
    assert!(
        !spec.contains("/outside") && !spec.contains("AWS_") && !spec.contains("gitconfig"),
        "{spec}"
    );
    env.ok(&["rm", "web"]);

    // Trusted as it is: all of it applies, silently.
    let (said, _) = env.ok(&["trust", &project]);
    assert!(
        said.contains("trusted") && said.contains("env_host AWS_*"),
        "{said}"
    );
    let (out, err) = env.ok(&["config", &project]);
    assert!(!err.contains("not trusted"), "{err}");
    assert!(
        out.contains("/outside") && out.contains("AWS_*") && out.contains("gitconfig"),
        "{out}"
    );
    assert!(
        out.contains("10.1.0.0/16") && out.contains("0.0.0.0:8080:80") && out.contains("/byhand"),
        "{out}"
    );
    env.ok(&["create", "web", "--project", &project]);
    let spec = std::fs::read_to_string(env.path("state/vms/web/vm.toml")).unwrap();
    assert!(
        spec.contains("/outside") && spec.contains(".gitconfig"),
        "{spec}"
    );
    env.ok(&["rm", "web"]);

    // Any edit needs a new trust; --revoke withdraws it.
    write(
        &env.path("project/mvm.toml"),
        &format!("{toml}\n# edited\n"),
    );
    let (_, err) = env.ok(&["config", &project]);
    assert!(err.contains("not trusted"), "{err}");
    env.ok(&["allow", &project]);
    let (_, err) = env.ok(&["config", &project]);
    assert!(!err.contains("not trusted"), "{err}");
    env.ok(&["trust", "--revoke", &project]);
    let (_, err) = env.ok(&["config", &project]);
    assert!(err.contains("not trusted"), "{err}");

    // An mvm.toml that `mvm init` writes is trusted as written.
    std::fs::create_dir(env.path("fresh")).unwrap();
    write(&env.path("fresh/Procfile"), "web: python3 -m http.server\n");
    env.ok(&["init", &env.s("fresh")]);
    let records: Vec<String> = std::fs::read_dir(env.path("state/trust"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r.ends_with(&format!("{}\n", env.s("fresh/mvm.toml")))),
        "{records:?}"
    );

    // A folder without mvm.toml, or with a broken one, is not trusted.
    env.fails(&["trust", &env.s("outside")], "cannot trust");
    write(&env.path("outside/mvm.toml"), "cpus = \"many\"\n");
    env.fails(&["trust", &env.s("outside")], "mvm.toml");
}

#[test]
fn home_paths_are_shared_only_from_the_home_and_only_when_asked() {
    let env = Env::new("home");
    write(&env.path("home/.gitconfig"), "[user]\n");
    write(&env.path("home/.config/tool/a.toml"), "a = 1\n");
    write(&env.path("home/.ssh/id_ed25519"), "KEY\n");
    let project = env.s("project");
    // Off by default.
    env.ok(&["create", "plain", "--project", &project]);
    let spec = std::fs::read_to_string(env.path("state/vms/plain/vm.toml")).unwrap();
    assert!(!spec.contains("[home]"), "{spec}");
    env.ok(&[
        "create",
        "web",
        "--project",
        &project,
        "--share-home",
        "~/.gitconfig",
        "--share-home",
        &env.s("home/.config/tool"),
    ]);
    let spec = std::fs::read_to_string(env.path("state/vms/web/vm.toml")).unwrap();
    assert!(
        spec.contains("\".gitconfig\"") && spec.contains("\".config/tool\""),
        "{spec}"
    );
    assert!(!spec.contains(".ssh"), "{spec}");
    env.ok(&["rm", "web"]);
    env.ok(&["rm", "plain"]);
    // Bad values: one line naming the value and what is accepted.
    env.fails(
        &["create", "web", "--share-home", "/etc/passwd"],
        "--share-home '/etc/passwd': not inside your home folder",
    );
    env.fails(
        &["create", "web", "--share-home", "~/../x"],
        "invalid home path '~/../x'",
    );
    env.fails(
        &["create", "web", "--share-home", "~/.npmrc"],
        "does not exist",
    );
    env.fails(
        &[
            "create",
            "web",
            "--no-host-root",
            "--share-home",
            "~/.gitconfig",
        ],
        "need the host root",
    );
    write(&env.path("project/mvm.toml"), "home = [\"../etc\"]\n");
    env.fails(
        &["create", "web", "--project", &project],
        "invalid home path",
    );
}

#[test]
fn pseudo_file_systems_are_refused_as_share_sources() {
    let env = Env::new("pseudo");
    // A raw run refuses before anything boots.
    for (share, said) in [
        ("/proc:p", "/proc is on proc, a kernel pseudo file system"),
        ("/sys/kernel:k:ro", "pseudo file system"),
    ] {
        env.fails(
            &[
                "run",
                "--kernel",
                "/k",
                "--initrd",
                "/dev/null",
                "--share",
                share,
            ],
            said,
        );
    }
    // A (trusted) project's share.
    write(
        &env.path("project/mvm.toml"),
        "[[shares]]\nhost = \"/proc/self\"\nguest = \"/p\"\n",
    );
    let project = env.s("project");
    env.ok(&["trust", &project]);
    env.fails(
        &["create", "web", "--project", &project],
        "pseudo file system",
    );
}
