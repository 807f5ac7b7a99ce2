//! Entry point: PID 1 in a guest, or `--test-listen-unix` on a host.

use std::path::PathBuf;

const USAGE: &str = "\
usage: mvm-init                 (as PID 1 inside an mvm guest)
       mvm-init --test-listen-unix PATH [--state-dir DIR]
                                serve the agent protocol on a Unix socket
                                (host-side tests; no mounts, no reboot)
       mvm-init --version";

fn main() {
    // As PID 1 the kernel passes unrecognised command-line words as
    // arguments: ignore them all.
    if mvm_init::sys::is_pid1() {
        mvm_init::boot::run_pid1();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen: Option<PathBuf> = None;
    let mut state: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--test-listen-unix" => listen = it.next().map(PathBuf::from),
            "--state-dir" => state = it.next().map(PathBuf::from),
            "--version" => {
                println!("{}", mvm_init::server::AGENT_VERSION);
                return;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("mvm-init: unknown argument '{other}'\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let Some(path) = listen else {
        eprintln!("mvm-init: not PID 1; use --test-listen-unix PATH to serve on a socket\n{USAGE}");
        std::process::exit(2);
    };
    let state = state
        .unwrap_or_else(|| std::env::temp_dir().join(format!("mvm-init-{}", std::process::id())));
    if let Err(e) = mvm_init::run_test_listen(&path, &state) {
        eprintln!("mvm-init: {e}");
        std::process::exit(1);
    }
}
