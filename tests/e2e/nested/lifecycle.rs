//! Managed VMs in the nested L2 host (tests/e2e/jobs/lifecycle.sh): two
//! VMs with the guest agent, exec and shell, streams, diff/commit, crash
//! and recovery, stop/restart/rm.

use super::result_file;
use mvm_e2e::proc_status_field as status_field;

/// One recorded `mvm` step: (status, stdout, stderr).
fn step(name: &str) -> (Option<i32>, String, String) {
    (
        result_file("life", &format!("{name}.status"))
            .trim()
            .parse()
            .ok(),
        result_file("life", &format!("{name}.out")),
        result_file("life", &format!("{name}.err")),
    )
}

fn ok(name: &str) -> String {
    let (status, out, err) = step(name);
    assert_eq!(status, Some(0), "step {name} failed:\n{err}\n{out}");
    out
}

fn states(list_step: &str) -> Vec<(String, String)> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ok(list_step)).unwrap_or_default();
    rows.iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                r["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn two_vms_start_and_list_as_running() {
    ok("create-a");
    ok("create-b");
    ok("start-a");
    ok("start-b");
    assert_eq!(
        states("list"),
        vec![
            ("a".into(), "running".into()),
            ("b".into(), "running".into())
        ]
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ok("list")).unwrap();
    assert_ne!(rows[0]["pid"], rows[1]["pid"]);
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn exec_passes_status_output_env_and_cwd() {
    let (status, out, err) = step("exec-status");
    assert_eq!(status, Some(3), "{err}");
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!(ok("exec-project"), "project file\n");
    assert_eq!(ok("exec-hostname"), "b\n");
    assert_eq!(ok("exec-root"), "host-root\n");
    assert_eq!(ok("exec-env"), "bar\n");
    assert_eq!(ok("exec-cwd"), "/project\n");
    assert_eq!(ok("pipeline"), "HELLO PIPELINE\n");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn ten_mib_stream_round_trips() {
    let sent = result_file("life", "10m.sent");
    assert_eq!(sent.trim().len(), 64);
    assert_eq!(ok("stream").trim(), sent.trim());
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn shell_has_a_real_terminal() {
    let out = ok("shell");
    for line in [
        "PTY: prompt=ok",
        "PTY: size1=30 100",
        "PTY: size2=50 132",
        "PTY: tty=pts",
        "PTY: ctrl_c=interrupted",
        "PTY: jobs=ok",
        "PTY: exit=5",
    ] {
        assert!(
            out.contains(line),
            "{line:?} missing:\n{out}\n{}",
            step("shell").2
        );
    }
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn diff_and_commit_apply_guest_changes_only_when_asked() {
    ok("guest-edit");
    assert_eq!(
        result_file("life", "host-hello-before-commit"),
        "project file\n"
    );
    let diff = ok("diff");
    for line in ["M hello.txt", "A new.txt", "D keep.txt"] {
        assert!(
            diff.lines().any(|l| l == line),
            "{line:?} not in diff:\n{diff}"
        );
    }
    assert!(ok("commit-dry").contains("M hello.txt"));
    assert_eq!(
        result_file("life", "host-hello-after-dry-run"),
        "project file\n"
    );
    ok("commit");
    assert_eq!(
        result_file("life", "host-hello-after-commit"),
        "project file\nchanged\n"
    );
    let ls = result_file("life", "host-ls-after-commit");
    assert!(ls.contains("new.txt") && !ls.contains("keep.txt"), "{ls}");
    let (status, _, err) = step("commit-conflict");
    assert_ne!(status, Some(0));
    assert!(err.contains("refusing to commit"), "{err}");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn a_guest_folder_for_file_swap_cannot_delete_a_deep_host_edit() {
    ok("guest-folder-to-file");
    let (status, _, err) = step("commit-deep");
    assert_ne!(status, Some(0), "commit applied over a deep host edit");
    assert!(
        err.contains("refusing to commit") && err.contains("deep/sub/file.txt"),
        "{err}"
    );
    assert_eq!(
        result_file("life", "host-deep-after-commit"),
        "original\nhost edit\n"
    );
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn killed_vmm_is_crashed_and_recovers() {
    assert!(states("list-crashed").contains(&("b".into(), "crashed".into())));
    ok("start-b2");
    assert_eq!(ok("exec-b2"), "back\n");
    let statuses = [
        result_file("life", "race1.status"),
        result_file("life", "race2.status"),
    ];
    let outs = [
        result_file("life", "race1.out"),
        result_file("life", "race2.out"),
    ];
    for (s, o) in statuses.iter().zip(&outs) {
        assert!(
            s.trim() == "0" || o.contains("another mvm command"),
            "{s} {o}"
        );
    }
    assert_eq!(result_file("life", "race-vmms").trim(), "1");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn stop_restart_rm_leave_nothing_behind() {
    ok("stop-a");
    ok("restart-b");
    assert_eq!(ok("exec-b3"), "restarted\n");
    let (status, _, err) = step("rm-running");
    assert_ne!(status, Some(0));
    assert!(err.contains("is running"), "{err}");
    ok("rm-force");
    ok("rm-a");
    assert_eq!(ok("list-end").trim(), "[]");
    assert_eq!(result_file("life", "vmms-left").trim(), "0");
    assert_eq!(result_file("life", "vms-left").trim(), "");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn declared_service_runs_and_is_restarted_after_being_killed() {
    let first = ok("svc-status");
    let line = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("ticker"))
            .map(String::from)
    };
    let l1 = line(&first).unwrap_or_else(|| panic!("no ticker in:\n{first}"));
    assert!(l1.contains("running"), "{l1}");
    let pid = result_file("life", "svc-pid");
    assert!(!pid.trim().is_empty() && pid.trim() != "-", "{pid}");
    ok("svc-kill");
    let second = ok("svc-status2");
    let l2 = line(&second).unwrap_or_else(|| panic!("no ticker in:\n{second}"));
    assert!(l2.contains("running"), "{l2}");
    let cols: Vec<&str> = l2.split_whitespace().collect();
    assert_ne!(cols[2], pid.trim(), "same pid after the kill: {l2}");
    assert!(
        cols[3].parse::<u32>().unwrap_or(0) >= 1,
        "no restart counted: {l2}"
    );
    assert!(ok("svc-logs").contains("tick"));
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn debug_dumps_a_running_vm_over_the_api_and_on_sigusr1() {
    // VM a: 2 vCPUs, the host root and a project over virtio-fs, vsock.
    let text = ok("debug-a");
    for want in [
        "vcpu0:",
        "vcpu1:",
        "IO-APIC:",
        "virtio-fs root",
        "virtio-fs project",
        "virtio-vsock",
        "muxer:",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let dump: serde_json::Value = serde_json::from_str(&ok("debug-a-json")).unwrap();
    let vcpus = dump["vcpus"].as_array().expect("vcpus");
    assert_eq!(vcpus.len(), 2, "{dump}");
    // A healthy VM: every vCPU answered with its registers.
    for v in vcpus {
        assert!(v["state"]["rip"].as_u64().is_some(), "{v}");
    }
    let vsock = dump["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "virtio-vsock"))
        .expect("the vsock device");
    assert_eq!(vsock["snapshot"]["activated"], true, "{vsock}");
    assert!(
        result_file("life", "a-vmm.log").contains("state dump (SIGUSR1)"),
        "SIGUSR1 wrote no dump to the VMM log"
    );
    let (status, _, err) = step("debug-stopped");
    assert_ne!(status, Some(0));
    assert!(err.contains("b-missing"), "{err}");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn the_vmm_runs_in_its_cgroup_filtered_with_its_bounds() {
    let (_, _, err) = step("start-a");
    assert!(!err.contains("without a cgroup"), "{err}");
    // VM a: 2 vCPUs, 512 MiB.
    let cgroup = result_file("life", "a-cgroup");
    assert!(cgroup.contains("0::/mvm/a."), "{cgroup}");
    assert_eq!(result_file("life", "a-cpu.max").trim(), "250000 100000");
    assert_eq!(
        result_file("life", "a-memory.max").trim(),
        ((512u64 + 256) << 20).to_string()
    );
    assert_eq!(result_file("life", "a-pids.max").trim(), "4096");
    let seccomp = result_file("life", "a-seccomp");
    let lines: Vec<&str> = seccomp.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("vcpu1 ")), "{seccomp}");
    // Jailed as root: capabilities cut to serving files (vmm::jail).
    let caps = format!(
        "{:016x}",
        vmm::jail::ROOT_CAPS.iter().fold(0u64, |m, &c| m | 1 << c)
    );
    for l in &lines {
        let (_, field) = l.split_once(' ').unwrap();
        match field.split_once(' ').unwrap() {
            ("Seccomp:", v) => assert_eq!(v, "2", "a thread without its filter: {l}"),
            ("NoNewPrivs:", v) => assert_eq!(v, "1", "{l}"),
            ("CapEff:" | "CapBnd:", v) => assert_eq!(v, caps, "{l}"),
            ("Uid:", _) => {}
            _ => panic!("unexpected line {l}"),
        }
    }
    let root = result_file("life", "a-root");
    let mut top: Vec<&str> = root.lines().collect();
    top.sort();
    assert_eq!(top, ["proc", "tmp"], "the VMM's root holds more: {root}");
    assert_eq!(result_file("life", "a-shadow").trim(), "gone");
    let nofile = result_file("life", "a-nofile");
    let soft: u64 = nofile.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(soft >= 2 * 4096, "{nofile}");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn a_guest_past_its_memory_bound_is_contained() {
    ok("start-c");
    let events = result_file("life", "c-memory.events");
    let oom_kills: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(oom_kills >= 1, "{events}");
    assert!(states("list-c").contains(&("c".into(), "crashed".into())));
    // The host and the other VM go on; rm takes the cgroup away.
    assert_eq!(ok("exec-a-after-oom"), "alive\n");
    ok("rm-c");
    assert_eq!(result_file("life", "c-cgroup-after-rm").trim(), "gone");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn writes_past_the_disk_budget_get_enospc() {
    ok("start-d");
    let (_, out, err) = step("fill-d");
    assert!(out.contains("No space left on device"), "{out}{err}");
    assert!(!out.contains("dd=0"), "{out}");
    // df: 1M-blocks, used, available: the size is the budget.
    let df = out.lines().last().unwrap_or_default();
    let size: u64 = df
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!((95..=100).contains(&size), "{df}");
    let du: u64 = result_file("life", "d-du")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(du <= 110, "the VM folder holds {du} MiB");
    assert_eq!(result_file("life", "d-host-project").trim(), "");
    ok("rm-d");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn a_users_project_runs_as_that_user_and_the_guest_keeps_its_owners() {
    ok("start-u");
    let status = result_file("life", "u-status");
    let field = |k: &str| status_field(&status, k);
    assert_eq!(field("Uid:"), "1000 1000 1000 1000", "{status}");
    assert_eq!(field("Gid:"), "1000 1000 1000 1000", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("Seccomp:"), "2", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    // A 0600 file of the user reads; owners as the guest gave them.
    assert_eq!(ok("exec-u"), "user file\n1000 1000\n123 456\n7 8\n");
    assert_eq!(result_file("life", "u-host-owner").trim(), "1000 1000");
    ok("restart-u");
    assert_eq!(ok("exec-u2"), "123 456\n7 8\n");
    ok("rm-u");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn a_vmm_started_by_a_user_where_user_namespaces_are_refused_says_so_and_works() {
    // L2's job is chrooted: unshare(CLONE_NEWUSER) is refused there.
    let (status, out, err) = step("start-n");
    assert_eq!(status, Some(0), "{err}{out}");
    let log = result_file("life", "n-vmm.log");
    assert!(log.contains("runs without its jail"), "{log}");
    let status = result_file("life", "n-status");
    let field = |k: &str| status_field(&status, k);
    assert_eq!(field("Uid:"), "1000 1000 1000 1000", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("Seccomp:"), "2", "{status}");
    assert_eq!(ok("exec-n"), "jailed\n");
    ok("rm-n");
    let (status, out, err) = step("raw-n");
    assert_eq!(status, Some(0), "{err}{out}");
    assert!(err.contains("runs without its jail"), "{err}");
    assert!(
        result_file("life", "raw-n.console").contains("init started"),
        "{}",
        result_file("life", "raw-n.console")
    );
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn a_volume_outlives_restart_and_its_vm_and_goes_with_rm_volumes() {
    ok("vol-create-v1");
    // Declared in mvm.toml: created (sparse) on first start.
    let (status, _, err) = step("vol-start-v1");
    assert_eq!(status, Some(0), "{err}");
    assert!(err.contains("created volume 'vdata' (256 MiB)"), "{err}");
    // The guest formatted it (ext4) and mounted the disk whose serial is
    // the volume's name.
    let out = ok("vol-write");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("/dev/vda ext4"), "{out}");
    assert_eq!(
        lines.next().map(|l| l.trim_end_matches('\0')),
        Some("vdata"),
        "{out}"
    );
    let ls = result_file("life", "vol-ls");
    assert!(ls.contains("vdata.img"), "{ls}");
    ok("vol-restart");
    assert_eq!(ok("vol-read1"), "volume-bytes-42\n");
    // A running VM's volume is not attached to a second VM, nor removed.
    ok("vol-create-v2");
    let (status, _, err) = step("vol-start-v2-refused");
    assert_ne!(status, Some(0));
    assert!(
        err.contains("volume 'vdata' is in use by running VM 'v1'"),
        "{err}"
    );
    let (status, _, err) = step("vol-rm-refused");
    assert_ne!(status, Some(0));
    assert!(err.contains("volume 'vdata' is attached to VM"), "{err}");
    // `rm` keeps it; the next VM reads what the first wrote.
    ok("vol-rm-v1");
    let list: Vec<serde_json::Value> = serde_json::from_str(&ok("vol-list")).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "vdata");
    assert_eq!(list[0]["attached_to"], serde_json::json!(["v2"]));
    assert!(list[0]["used_bytes"].as_u64().unwrap() > 0);
    ok("vol-start-v2");
    assert_eq!(ok("vol-read2"), "volume-bytes-42\n");
    let (status, _, err) = step("vol-rm-v2");
    assert_eq!(status, Some(0), "{err}");
    assert!(err.contains("removed volume 'vdata'"), "{err}");
    assert_eq!(result_file("life", "vol-left").trim(), "");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn persistent_vms_keep_root_and_project_writes_across_restart_others_do_not() {
    for vm in ["p1", "p2"] {
        ok(&format!("per-create-{vm}"));
        ok(&format!("per-start-{vm}"));
        assert_eq!(
            ok(&format!("per-write-{vm}")),
            format!("/etc/mvm-persist.txt: root-{vm}\n/project/p.txt: proj-{vm}\n")
        );
        ok(&format!("per-restart-{vm}"));
        // The host's project folder never got the guest's file.
        assert_eq!(result_file("life", &format!("per-host-{vm}")).trim(), "");
        ok(&format!("per-rm-{vm}"));
    }
    assert_eq!(
        ok("per-read-p1"),
        "/etc/mvm-persist.txt: root-p1\n/project/p.txt: proj-p1\n"
    );
    assert_eq!(
        ok("per-read-p2"),
        "/etc/mvm-persist.txt: absent\n/project/p.txt: absent\n"
    );
}
