//! mvm.toml and vm.toml from a hostile project folder or state folder:
//! the first byte picks the file, the rest is its text. Parsing never
//! panics; an mvm.toml that parses also orders its services and renders
//! back to TOML that parses to the same configuration; a vm.toml is
//! loaded through `VmSpec::load` (with its guest-path checks).

use std::path::Path;

pub fn run(data: &[u8]) {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    if which % 2 == 0 {
        let Ok(config) = manager::project::config::parse(Path::new("mvm.toml"), &text) else {
            return;
        };
        let _ = manager::project::services(&config);
        let rendered = toml::to_string_pretty(&config).expect("a parsed mvm.toml renders");
        let again = manager::project::config::parse(Path::new("again.toml"), &rendered)
            .unwrap_or_else(|e| panic!("the rendering does not parse: {e}\n{rendered}"));
        assert_eq!(again, config, "the rendering parses to something else");
    } else {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("vm.toml");
        std::fs::write(&path, text.as_bytes()).expect("writing vm.toml");
        let _ = manager::state::VmSpec::load(&path);
    }
}
