//! User lookup in the guest root's `/etc/passwd` and `/etc/group`.
//!
//! Parsed directly rather than through getpwnam(3): a static glibc cannot
//! load NSS modules, and the files are what the guest root says anyway.

use std::path::Path;

use agent_proto::User;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
    pub home: String,
    pub shell: String,
}

impl Identity {
    pub fn root() -> Self {
        Identity {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
            shell: "/bin/sh".into(),
        }
    }
}

/// Parses passwd(5) text; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

/// The groups of group(5) text that list `user` as a member, plus
/// `primary`, sorted and without duplicates.
pub fn groups_of(group_text: &str, user: &str, primary: u32) -> Vec<u32> {
    let mut gids: Vec<u32> = group_text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let gid: u32 = f[2].parse().ok()?;
            f[3].split(',').any(|m| m.trim() == user).then_some(gid)
        })
        .collect();
    gids.push(primary);
    gids.sort_unstable();
    gids.dedup();
    gids
}

/// Resolves `user` (default root) against `root/etc/passwd` and
/// `root/etc/group`. A numeric uid without an entry runs with gid = uid,
/// home `/`; an unknown name is an error.
pub fn resolve(root: &Path, user: Option<&User>) -> Result<Identity, String> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let entries = parse_passwd(&passwd);
    let entry = match user {
        None => entries.iter().find(|e| e.uid == 0),
        Some(User::Id(uid)) => entries.iter().find(|e| e.uid == *uid),
        Some(User::Name(name)) => {
            if let Some(e) = entries.iter().find(|e| &e.name == name) {
                Some(e)
            } else if let Ok(uid) = name.parse::<u32>() {
                entries.iter().find(|e| e.uid == uid)
            } else {
                return Err(format!(
                    "unknown user '{name}' (not in the guest's /etc/passwd)"
                ));
            }
        }
    };
    let Some(e) = entry else {
        let uid = match user {
            None => return Ok(Identity::root()),
            Some(User::Id(uid)) => *uid,
            Some(User::Name(n)) => n.parse().unwrap_or(0),
        };
        if uid == 0 {
            return Ok(Identity::root());
        }
        return Ok(Identity {
            name: uid.to_string(),
            uid,
            gid: uid,
            groups: vec![uid],
            home: "/".into(),
            shell: "/bin/sh".into(),
        });
    };
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    Ok(Identity {
        name: e.name.clone(),
        uid: e.uid,
        gid: e.gid,
        groups: groups_of(&group, &e.name, e.gid),
        home: if e.home.is_empty() {
            "/".into()
        } else {
            e.home.clone()
        },
        shell: if e.shell.is_empty() {
            "/bin/sh".into()
        } else {
            e.shell.clone()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line
alsobroken:x:notanumber:1::/:/bin/sh
dev:x:1000:1000:Dev,,,:/home/dev:/bin/zsh
nohome:x:1001:100:::
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:dev,other
docker:x:999:other, dev
users:x:100:
dev:x:1000:
";

    fn fixture() -> crate::testutil::TempDir {
        let d = crate::testutil::TempDir::new("passwd");
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(d.path().join("etc/group"), GROUP).unwrap();
        d
    }

    #[test]
    fn parses_passwd() {
        let e = parse_passwd(PASSWD);
        assert_eq!(e.len(), 4);
        assert_eq!(
            e[2],
            PasswdEntry {
                name: "dev".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/dev".into(),
                shell: "/bin/zsh".into()
            }
        );
    }

    #[test]
    fn groups() {
        assert_eq!(groups_of(GROUP, "dev", 1000), [10, 999, 1000]);
        assert_eq!(groups_of(GROUP, "nobody", 65534), [65534]);
    }

    #[test]
    fn resolves_users() {
        let d = fixture();
        let r = d.path();
        let dev = resolve(r, Some(&User::Name("dev".into()))).unwrap();
        assert_eq!(
            dev,
            Identity {
                name: "dev".into(),
                uid: 1000,
                gid: 1000,
                groups: vec![10, 999, 1000],
                home: "/home/dev".into(),
                shell: "/bin/zsh".into()
            }
        );
        assert_eq!(resolve(r, Some(&User::Id(1000))).unwrap(), dev);
        assert_eq!(resolve(r, Some(&User::Name("1000".into()))).unwrap(), dev);
        let root = resolve(r, None).unwrap();
        assert_eq!((root.uid, root.home.as_str()), (0, "/root"));
        assert_eq!(root.shell, "/bin/bash");
        let nohome = resolve(r, Some(&User::Name("nohome".into()))).unwrap();
        assert_eq!(
            (nohome.home.as_str(), nohome.shell.as_str()),
            ("/", "/bin/sh")
        );
        let anon = resolve(r, Some(&User::Id(4242))).unwrap();
        assert_eq!((anon.uid, anon.gid, anon.home.as_str()), (4242, 4242, "/"));
        let err = resolve(r, Some(&User::Name("bob".into()))).unwrap_err();
        assert!(err.contains("unknown user 'bob'"), "{err}");
    }

    #[test]
    fn no_passwd_file_means_root_defaults() {
        let d = crate::testutil::TempDir::new("nopasswd");
        assert_eq!(resolve(d.path(), None).unwrap(), Identity::root());
        assert!(resolve(d.path(), Some(&User::Name("x".into()))).is_err());
    }
}
