//! The example projects in the nested L2 host (tests/e2e/jobs/projects.sh):
//! each with one `mvm up` from a clean state, reached through its forwarded
//! port, host edits seen, guest writes kept in the VM, `mvm down` clean.

use super::result_file;

fn step(name: &str) -> (Option<i32>, String, String) {
    super::recorded_step("proj", name)
}

fn ok(name: &str) -> String {
    let (status, out, err) = step(name);
    assert_eq!(status, Some(0), "step {name} failed:\n{err}\n{out}");
    out
}

/// Nothing of the VM runs after `mvm down`.
fn down_clean(prefix: &str) {
    ok(&format!("{prefix}-down"));
    assert_eq!(
        result_file("proj", &format!("{prefix}-vmms-left")).trim(),
        "0",
        "{prefix}: a VMM still runs after mvm down"
    );
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn host_secrets_are_unreadable_while_host_tools_and_the_project_work() {
    let out = ok("iso-run");
    for p in [
        "/root/mvm-secret.txt",
        "/home/alice/.ssh/id_ed25519",
        "/home/alice",
        "/etc/shadow",
        "/etc/sudoers.d/mvm-test",
        "/etc/ssh/ssh_host_mvmtest_key",
    ] {
        assert!(out.contains(&format!("absent {p}\n")), "{p}: {out}");
    }
    assert!(!out.contains("VISIBLE") && !out.contains("FOUND"), "{out}");
    // The homes exist, with only what was shared in them.
    assert!(out.contains("root: .npmrc \n"), "{out}");
    assert!(out.contains("home: \n"), "{out}");
    assert!(
        out.contains("npmrc: registry=http://l2.example/\n"),
        "{out}"
    );
    assert!(out.contains("python3: 1\n"), "{out}");
    assert!(out.contains("project: project file\n"), "{out}");
    // Without --share-home, nothing of the home at all.
    let (status, out, err) = step("iso-plain");
    assert_ne!(status, Some(0), "{out}");
    assert!(out.trim().is_empty(), "{out}");
    assert!(err.contains("/root/.npmrc"), "{err}");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn node_web_detected_served_edited_and_isolated() {
    let dry = ok("node-dry");
    assert!(
        dry.contains("command = \"npm run dev\"") && dry.contains("3000:3000"),
        "{dry}"
    );
    let up = ok("node-up");
    assert!(up.contains("http://localhost:3000"), "{up}");
    assert!(ok("node-http").starts_with("hello from node-web (node v"));
    assert!(ok("node-edit").starts_with("changed on the host"));
    // A host variable passed by pattern reaches execs and the service, and
    // neither the console log nor vm.toml.
    assert_eq!(
        ok("node-env"),
        "exec:s3cret-from-l2\nMVM_DEMO_TOKEN=s3cret-from-l2\n"
    );
    let counts = result_file("proj", "node-secret-count");
    assert_eq!(counts.lines().count(), 2, "{counts}");
    assert!(counts.lines().all(|l| l.ends_with(":0")), "{counts}");
    // The guest wrote to the project; the host folder did not change.
    assert!(ok("node-guest-write").contains("guest"));
    let ls = result_file("proj", "node-host-ls");
    assert!(!ls.contains("guest-wrote.txt"), "{ls}");
    assert_eq!(
        result_file("proj", "node-host-page"),
        "changed on the host\n"
    );
    down_clean("node");
    let (status, out, _) = step("node-after-down");
    assert_ne!(status, Some(0), "port 3000 still answers after down: {out}");
    ok("node-rm");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn django_dev_server_reloads_on_host_edit() {
    ok("dj-up");
    assert_eq!(ok("dj-http"), "hello from django\n");
    assert_eq!(ok("dj-edit"), "hello edited on the host\n");
    assert!(ok("dj-guest-write").contains("guest-wrote.txt"));
    let ls = result_file("proj", "dj-host-ls");
    assert!(
        !ls.contains("guest-wrote.txt") && !ls.contains("__pycache__"),
        "{ls}"
    );
    down_clean("dj");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn db_tests_pass_against_postgres_in_the_vm() {
    let up = ok("db-up");
    assert!(up.contains("service db"), "{up}");
    let (status, _, err) = step("db-tests");
    assert_eq!(status, Some(0), "{err}");
    assert!(err.contains("Ran 5 tests") && err.contains("OK"), "{err}");
    // A test added on the host runs in the VM.
    let (status, _, err) = step("db-tests2");
    assert_eq!(status, Some(0), "{err}");
    assert!(
        err.contains("Ran 6 tests") && err.contains("test_added_on_the_host"),
        "{err}"
    );
    // The guest's write stays in the VM.
    assert!(ok("db-guest-write").contains("guest-wrote.txt"));
    let host = result_file("proj", "db-host-ls");
    assert!(!host.contains("guest-wrote.txt"), "{host}");
    // PostgreSQL's data is on the project's volume, given to postgres at
    // format time, and a committed row outlives `mvm down` and `up`.
    let vol = ok("db-volume");
    assert!(vol.starts_with("postgres "), "{vol}");
    assert!(vol.contains("/dev/vd") && vol.contains(" ext4 "), "{vol}");
    ok("db-keep");
    down_clean("db");
    ok("db-up2");
    assert_eq!(ok("db-kept"), "survives down\n");
    // `mvm down --rm` keeps the volume.
    let list = ok("db-vol-after-rm");
    assert!(list.contains("db-testing-pg"), "{list}");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn multi_service_parts_find_each_other() {
    let up = ok("ms-up");
    for s in ["db", "cache", "worker", "web"] {
        assert!(up.contains(&format!("service {s}")), "{up}");
    }
    assert!(ok("ms-web").contains("worker=ready"));
    assert_eq!(ok("ms-enqueue"), "queued 7\n");
    assert!(ok("ms-result").starts_with("7^2=49 (db rows: 1)"));
    // The worker's code edited on the host runs after a service restart.
    ok("ms-restart");
    assert_eq!(ok("ms-enqueue2"), "queued 8\n");
    assert!(ok("ms-result2").starts_with("8 squared is 64"));
    ok("ms-guest-write");
    let host = result_file("proj", "ms-host-ls");
    assert!(!host.contains("guest-wrote.txt"), "{host}");
    down_clean("ms");
    assert_eq!(result_file("proj", "vmms-left").trim(), "0");
    assert_eq!(result_file("proj", "vms-left").trim(), "");
}

#[test]
#[ignore = "nested end-to-end (QEMU L2 host); run by tests/run.sh"]
fn three_copies_of_one_folder_answer_through_their_own_ports() {
    let copies = ["web", "web-2", "web-3"];
    let mut ports = Vec::new();
    for c in copies {
        let up = ok(&format!("copies-up-{c}"));
        assert!(up.contains(&format!("VM '{c}' is up")), "{up}");
        let port: u16 = result_file("proj", &format!("copies-hostport-{c}"))
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{c}: no forward of guest port 3000"));
        assert!(
            up.contains(&format!("http://localhost:{port} -> guest port 3000")),
            "{up}"
        );
        ports.push(port);
    }
    // The first copy has the declared port; the others were moved, and said so.
    assert_eq!(ports[0], 3100, "{ports:?}");
    for (c, port) in copies.iter().zip(&ports).skip(1) {
        let (_, _, err) = step(&format!("copies-up-{c}"));
        assert!(
            err.contains(&format!(
                "host port 3100 is taken (VM 'web'); VM '{c}' forwards {port}:3000 instead"
            )),
            "{err}"
        );
    }
    let mut distinct = ports.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{ports:?}");
    // Each answered through its own port with its own page (its own upper
    // layer); the host's page did not change.
    for c in copies {
        ok(&format!("copies-page-{c}"));
        let body = ok(&format!("copies-http-{c}"));
        assert!(
            body.starts_with(&format!("served by {c} (node v")),
            "{c}: {body}"
        );
    }
    assert!(
        result_file("proj", "copies-host-page").starts_with("hello from node-web"),
        "the host's page changed"
    );
    // `mvm list --json` shows each copy's own forward.
    let list: Vec<serde_json::Value> = serde_json::from_str(&ok("copies-list")).unwrap();
    for (c, port) in copies.iter().zip(&ports) {
        let row = list.iter().find(|r| r["name"] == *c).expect(c);
        assert_eq!(
            row["ports"],
            serde_json::json!([format!("127.0.0.1:{port}->3000/tcp")]),
            "{c}"
        );
    }
    let exports = ok("copies-direnv");
    assert!(
        exports.contains(&format!("export MVM_PORT_3000='{}'", ports[1])),
        "{exports}"
    );
    for c in copies {
        ok(&format!("copies-down-{c}"));
        assert_eq!(
            result_file("proj", &format!("copies-vmms-left-{c}")).trim(),
            "0",
            "{c}: a VMM still runs after mvm down"
        );
    }
}
