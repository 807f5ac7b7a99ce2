//! The nested end-to-end suite: everything runs in ONE boot of the L2 host
//! (tests/e2e/jobs/all.sh runs each area's job in turn); the tests in the
//! modules below read what their job left in the results folder.

mod boot;
mod fs;
mod lifecycle;
mod net;
mod projects;

use std::path::PathBuf;
use std::sync::OnceLock;

use mvm_e2e::{
    firecracker_ref, guest_initramfs_with, guest_kernel, l2_kernels, private_copy, run_l2_job,
    static_binaries, virtiofsd, workspace_root, Scenario,
};

fn out_dir() -> PathBuf {
    workspace_root().join("target/e2e/nested")
}

/// Runs the whole nested job once for all tests in this binary.
fn suite() -> &'static PathBuf {
    static SUITE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = SUITE.get_or_init(|| {
        let root = workspace_root();
        eprintln!("nested suite: checkout {}", root.display());
        let artifacts = root.join("target/e2e/artifacts");
        let (mvm, mvm_init) = static_binaries()?;
        let mvm = private_copy(&mvm, &artifacts)?;
        let mvm_init = private_copy(&mvm_init, &artifacts)?;
        let virtiofsd = private_copy(&virtiofsd()?, &artifacts)?;
        let kernel = guest_kernel()?;
        let initrd = guest_initramfs_with(
            &artifacts.join("guest-initramfs.cpio.gz"),
            &[
                (root.join("tests/e2e/guest/fs-workout.sh"), "/fs-workout.sh"),
                (root.join("tests/e2e/guest/net-dhcp.sh"), "/net-dhcp.sh"),
                (
                    root.join("tests/e2e/guest/vfs-workout.sh"),
                    "/vfs-workout.sh",
                ),
                (root.join("tests/e2e/guest/boot-probe.sh"), "/boot-probe.sh"),
            ],
        )?;
        // Debian's kernel that L2 runs is also the bzImage scenario's guest.
        let (bzimage, distro_elf) = l2_kernels()?;
        // The boot area compares L2's log of our boots with Firecracker's.
        let firecracker = match firecracker_ref() {
            Some(f) => private_copy(&f, &artifacts)?,
            None => PathBuf::new(),
        };
        // MVM_E2E_ONLY=boot,net runs only those areas' jobs (while
        // developing one area; the other areas' tests then fail).
        let only = std::env::var("MVM_E2E_ONLY").unwrap_or_default();
        let run = run_l2_job(
            &root.join("tests/e2e/jobs/all.sh"),
            &out_dir(),
            &[
                ("MVM_BIN", &mvm),
                ("KERNEL", &kernel),
                ("INITRD", &initrd),
                ("BZIMAGE", &bzimage),
                ("DISTRO_ELF", &distro_elf),
                ("FIRECRACKER", &firecracker),
                ("MVM_INIT", &mvm_init),
                ("VIRTIOFSD", &virtiofsd),
                ("E2E_DIR", &root.join("tests/e2e")),
                ("E2E_JOBS", &root.join("tests/e2e/jobs")),
                ("E2E_ONLY", std::path::Path::new(&only)),
            ],
        )?;
        if !run.attempts.is_empty() {
            eprintln!("L2 attempts:\n{}", run.attempts);
        }
        if run.status != 0 {
            return Err(format!(
                "the L2 job did not finish (status {}): {}; see {}",
                run.status,
                run.attempts.trim(),
                run.out.join("l2-console.log").display()
            ));
        }
        Ok(run.out)
    });
    match result {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// What a job wrote to `<area>/<file>` in the results folder.
fn result_file(area: &str, file: &str) -> String {
    std::fs::read_to_string(suite().join(area).join(file)).unwrap_or_default()
}

/// One step a job recorded as `<area>/<name>.{status,out,err}`.
fn recorded_step(area: &str, name: &str) -> (Option<i32>, String, String) {
    (
        result_file(area, &format!("{name}.status"))
            .trim()
            .parse()
            .ok(),
        result_file(area, &format!("{name}.out")),
        result_file(area, &format!("{name}.err")),
    )
}

/// One `mvm run` the jobs recorded under `<area>/<name>`.
fn scenario(name: &str) -> Scenario {
    Scenario::load(suite(), name)
}
