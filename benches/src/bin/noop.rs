//! The process-creation floor for the start-up benchmark: a static binary
//! that does nothing but, with `MVM_STARTUP_REPORT=FILE`, write the same
//! report `mvm run` writes before its first KVM_RUN, as soon as main()
//! starts.

use mvm_benches::clock::StartupReport;

fn main() {
    let report = StartupReport::now();
    if let Some(path) = std::env::var_os("MVM_STARTUP_REPORT") {
        if let Err(e) = std::fs::write(&path, report.to_json()) {
            eprintln!("noop: cannot write {}: {e}", path.to_string_lossy());
            std::process::exit(1);
        }
    }
}
