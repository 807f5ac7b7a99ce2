//! Share tags and guest mount points. Both reach the kernel command line
//! (`mvm.share=TAG:/mnt[:ro]`), and a tag is also a host path component
//! (the share's upper folder), so neither may carry a path separator,
//! `..`, spaces, control characters or the command line's own separators.

/// Longest virtio-fs tag (the config space field).
const TAG_MAX: usize = 36;

/// A share tag: 1 to 36 of `A-Z a-z 0-9 _ - .`, not starting with `.`.
pub fn validate_share_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= TAG_MAX
        && !tag.starts_with('.')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid share tag '{}': use 1 to {TAG_MAX} letters, digits, '_', '-' and '.', not starting with '.'",
            tag.escape_debug()
        ))
    }
}

/// A guest mount point: absolute, normalised (no empty, `.` or `..`
/// component), printable ASCII without spaces, `:` or `,`, not `/` and
/// not under `/project`.
pub fn validate_guest_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("guest path '{}' {why}", path.escape_debug()));
    let Some(rest) = path.strip_prefix('/') else {
        return bad("must be absolute");
    };
    if rest.is_empty() {
        return bad("must not be /");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b','))
    {
        return bad("must be printable characters without spaces, ':' or ','");
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return bad("must have no empty, '.' or '..' component");
    }
    if parts[0] == "project" {
        return bad("must not be under /project");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in ["project", "share0", "my-data_1.v2", &"t".repeat(36)] {
            assert!(validate_share_tag(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a b",
            "a\tb",
            "a\nb",
            "a:b",
            "a,b",
            ".hidden",
            "x\u{7f}",
            "é",
            &"t".repeat(37),
        ] {
            let e = validate_share_tag(bad).unwrap_err();
            assert!(e.starts_with("invalid share tag"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn guest_paths() {
        for ok in ["/data", "/nix/store", "/opt/x-1.2/y_z", "/projects"] {
            assert!(validate_guest_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "data",
            "/",
            "/project",
            "/project/x",
            "//x",
            "/x/",
            "/x/../project",
            "/x/./y",
            "/a b",
            "/x init=/bin/sh",
            "/x\n",
            "/x\u{1b}",
            "/x:ro",
            "/x,y",
            "/é",
        ] {
            assert!(validate_guest_path(bad).is_err(), "{bad:?}");
        }
    }
}
