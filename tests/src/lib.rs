//! The end-to-end harness: builds what a nested run needs (a static `mvm`,
//! the guest kernel, a busybox initramfs), runs one job inside the L2 host
//! (tests/nested/run-l2.sh) and reads the results back.
//!
//! Everything is real: the guest kernel from guest-kernel/, our VMM, the
//! L2 host's real KVM. See tests/nested/README.md for the L2 plumbing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use mvm_test_guests::support::{proc_status_field, virtiofsd, workspace_root};

/// Where cargo builds for this checkout: $CARGO_TARGET_DIR (relative to
/// the workspace root when relative), else `target/`.
pub fn cargo_target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds `mvm` and the guest agent `mvm-init` as static release binaries
/// in their own target directory, `static/` in the cargo target dir (so
/// this works while `cargo test` holds the workspace's build lock;
/// scripts/quickstart.sh builds the same there); returns their paths.
pub fn static_binaries() -> Result<(PathBuf, PathBuf), String> {
    let root = workspace_root();
    let target_dir = cargo_target_dir().join("static");
    let target = "x86_64-unknown-linux-gnu";
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target_dir)
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "mvm",
                "-p",
                "mvm-init",
                "--target",
                target,
            ]),
        "cargo build of the static mvm and mvm-init",
    )?;
    let release = target_dir.join(target).join("release");
    Ok((release.join("mvm"), release.join("mvm-init")))
}

/// Copies `bin` into `dir` (L2 reads L1's files live: a binary relinked by
/// a concurrent build while a job runs would crash there).
pub fn private_copy(bin: &Path, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = bin.file_name().ok_or("binary without a name")?;
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::copy(bin, &tmp).map_err(|e| format!("cannot copy {}: {e}", bin.display()))?;
    std::fs::rename(&tmp, &dest).map_err(|e| format!("cannot copy {}: {e}", bin.display()))?;
    Ok(dest)
}

/// The guest kernel, built (or found in the cache) by guest-kernel/build.sh.
pub fn guest_kernel() -> Result<PathBuf, String> {
    if let Some(k) = std::env::var_os("MVM_E2E_KERNEL") {
        return Ok(k.into());
    }
    let root = workspace_root();
    let path = run(
        Command::new(root.join("guest-kernel/build.sh")).arg("--print-path"),
        "guest-kernel/build.sh",
    )?;
    Ok(PathBuf::from(path))
}

/// Prepares the L2 host (cached) and returns Debian's generic kernel as a
/// bzImage and as the ELF vmlinux extracted from it (`MVM_L2_VMLINUZ` and
/// `MVM_L2_KERNEL` from tests/nested/prepare-l2.sh).
pub fn l2_kernels() -> Result<(PathBuf, PathBuf), String> {
    let out = run(
        &mut Command::new(workspace_root().join("tests/nested/prepare-l2.sh")),
        "tests/nested/prepare-l2.sh",
    )?;
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|p| PathBuf::from(p.trim_matches(|c| c == '\'' || c == '"')))
            .ok_or_else(|| format!("prepare-l2.sh printed no {key}:\n{out}"))
    };
    Ok((value("MVM_L2_VMLINUZ=")?, value("MVM_L2_KERNEL=")?))
}

/// The reference Firecracker binary (`MVM_FIRECRACKER`, else
/// `../shared/ref/firecracker` beside the checkout, else the machines'
/// shared folder), if there is one.
pub fn firecracker_ref() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("MVM_FIRECRACKER").map(PathBuf::from),
        Some(workspace_root().join("../shared/ref/firecracker")),
        Some(PathBuf::from("/work/shared/ref/firecracker")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// A busybox initramfs whose /init is tests/nested/guest-init.sh, with
/// extra files (host path, path in the image).
pub fn guest_initramfs_with(out: &Path, extra: &[(PathBuf, &str)]) -> Result<PathBuf, String> {
    let root = workspace_root();
    let mut cmd = Command::new(root.join("tests/nested/make-guest-initramfs.sh"));
    cmd.arg(out)
        .arg("--init")
        .arg(root.join("tests/nested/guest-init.sh"));
    for (src, dest) in extra {
        cmd.arg("--add").arg(format!("{}:{dest}", src.display()));
    }
    run(&mut cmd, "tests/nested/make-guest-initramfs.sh")?;
    Ok(out.to_path_buf())
}

/// What an L2 run left behind.
#[derive(Debug)]
pub struct L2Run {
    /// The results folder (`/out` inside L2).
    pub out: PathBuf,
    /// run-l2.sh's exit status: the job's, or 124 when L2 hung twice.
    pub status: i32,
    /// run-l2.sh's account of its attempts (a hang and retry shows here).
    pub attempts: String,
}

/// Runs `job` inside one L2 boot, with `env` exported to it (L1 paths are
/// valid in L2: it sees L1's root).
pub fn run_l2_job(job: &Path, out: &Path, env: &[(&str, &Path)]) -> Result<L2Run, String> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut cmd = Command::new(workspace_root().join("tests/nested/run-l2.sh"));
    // The whole suite (with the four example projects) takes 11 to 21
    // minutes in L2 on an idle machine, and over 35 on a day the machine
    // under L1 is slower (2026-12-04: every nested boot 2.5x longer); a
    // stuck L2 is retried once, a slow one (still writing when the time
    // is up) is not.
    let timeout = std::env::var("MVM_E2E_L2_TIMEOUT").unwrap_or_else(|_| "3000".into());
    cmd.arg(job).arg(out).arg("--timeout").arg(timeout);
    for (k, v) in env {
        cmd.arg("--env").arg(format!("{k}={}", v.display()));
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run tests/nested/run-l2.sh: {e}"))?;
    Ok(L2Run {
        out: out.to_path_buf(),
        status: status.code().unwrap_or(-1),
        attempts: std::fs::read_to_string(out.join("l2-attempts.txt")).unwrap_or_default(),
    })
}

/// One `mvm run` inside L2, as the job recorded it.
#[derive(Debug, Default)]
pub struct Scenario {
    pub name: String,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub console: String,
    /// L2 uptime at start and end of the `mvm run`.
    pub times: Option<(f64, f64)>,
}

impl Scenario {
    pub fn load(out: &Path, name: &str) -> Scenario {
        let d = out.join(name);
        let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
        let times = read("times");
        let mut t = times
            .split_whitespace()
            .filter_map(|x| x.parse::<f64>().ok());
        Scenario {
            name: name.to_string(),
            status: read("status").trim().parse().ok(),
            stdout: read("stdout"),
            stderr: read("stderr"),
            console: read("console.log"),
            times: t.next().zip(t.next()),
        }
    }

    /// The `MVM-GUEST: key=value` lines the guest's init printed.
    pub fn guest(&self) -> HashMap<String, String> {
        guest_lines(&self.console)
    }

    /// Everything worth showing when an assertion fails.
    pub fn describe(&self) -> String {
        format!(
            "scenario {}: status {:?}\n--- stderr ---\n{}\n--- console ---\n{}",
            self.name, self.status, self.stderr, self.console
        )
    }
}

/// Parses `MVM-GUEST: key=value` lines (also `MVM-GUEST: text`).
pub fn guest_lines(console: &str) -> HashMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once("MVM-GUEST: "))
        .map(|(_, rest)| match rest.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.to_string()),
            None => (rest.trim().to_string(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guest_lines() {
        let m = guest_lines(
            "[    0.1] noise\nMVM-GUEST: init started\r\nMVM-GUEST: cpus=2\nMVM-GUEST: cmdline=a=b c\n",
        );
        assert_eq!(m["cpus"], "2");
        assert_eq!(m["cmdline"], "a=b c");
        assert!(m.contains_key("init started"));
    }
}
