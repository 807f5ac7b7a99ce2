//! Masked directories: what the host's root share hides from the guest
//! (/proc, /sys, mvm's own state, where the upper layer itself lives).

mod common;

use std::fs;

use common::{client_with, layers};
use cowfs::{CowfsError, Filesystem, Limits, ShareConfig, ShareMode};

const ROOT: u64 = 1;
const ENOENT: i32 = 2;

#[test]
fn masked_directories_look_empty_and_hold_the_upper() {
    let l = layers();
    // The upper lives inside the lower, under a masked directory, as it
    // does when the lower is the host's `/`.
    let state = l.lower.join("state");
    let upper = state.join("vm/upper");
    fs::create_dir_all(&upper).unwrap();
    fs::write(state.join("secret.txt"), b"host only").unwrap();
    fs::create_dir_all(l.lower.join("proc/1")).unwrap();

    let config = |masked: Vec<std::path::PathBuf>| ShareConfig {
        lower: l.lower.clone(),
        upper: Some(upper.clone()),
        mode: ShareMode::Cow,
        masked,
        visible: None,
        hidden: Vec::new(),
    };
    // Without the mask, an upper inside the lower is refused.
    assert!(matches!(
        Filesystem::new(&config(Vec::new())),
        Err(CowfsError::Nested(_))
    ));

    let mut c = client_with(
        config(vec![
            state.clone(),
            l.lower.join("proc"),
            "/elsewhere".into(),
        ]),
        Limits::default(),
    );
    // The masked directories exist (mount points) but are empty.
    let st = c.lookup(ROOT, b"state").unwrap();
    assert!(c
        .list(st.nodeid)
        .unwrap()
        .iter()
        .all(|e| e.name == b"." || e.name == b".."));
    assert_eq!(c.lookup(st.nodeid, b"secret.txt").err(), Some(ENOENT));
    assert_eq!(c.lookup(st.nodeid, b"vm").err(), Some(ENOENT));
    let proc = c.lookup(ROOT, b"proc").unwrap();
    assert_eq!(c.lookup(proc.nodeid, b"1").err(), Some(ENOENT));
    // The rest is there as usual, and writes land in the upper.
    let a = c.lookup(ROOT, b"a.txt").unwrap();
    c.chmod(a.nodeid, 0o600).unwrap();
    assert!(upper.join("a.txt").exists());
    // The guest may use a masked directory as a mount point or write into
    // it: its own files land in the upper, the host's stay hidden.
    c.mkdir(proc.nodeid, b"mine", 0o755).unwrap();
    let names: Vec<Vec<u8>> = c
        .list(proc.nodeid)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        names.contains(&b"mine".to_vec()) && !names.contains(&b"1".to_vec()),
        "{names:?}"
    );
}

#[test]
fn read_only_shares_mask_too() {
    let l = layers();
    let mut c = client_with(
        ShareConfig {
            lower: l.lower.clone(),
            upper: None,
            mode: ShareMode::Ro,
            masked: vec![l.lower.join("dir")],
            visible: None,
            hidden: Vec::new(),
        },
        Limits::default(),
    );
    let d = c.lookup(ROOT, b"dir").unwrap();
    assert_eq!(c.lookup(d.nodeid, b"b.txt").err(), Some(ENOENT));
    assert_eq!(c.lookup(d.nodeid, b"sub").err(), Some(ENOENT));
}
