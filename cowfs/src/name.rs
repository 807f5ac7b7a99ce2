//! Names from the guest, and the reserved names the copy-on-write layout
//! keeps in the upper layer.
//!
//! Whiteout format (works without privileges on the host, like aufs and
//! overlayfs's userxattr mode, but with plain files only):
//! - `.wh.NAME`, an empty regular file in an upper directory: `NAME` from the
//!   lower layer is deleted;
//! - `.wh..wh..opq`, an empty regular file inside an upper directory: the
//!   directory is opaque, nothing of the lower directory at the same path
//!   shows through;
//! - `.wh..wh..mvm-origins` at the upper root: the copy-up log (see
//!   [`crate::origin`]);
//! - `.wh..wh..tmp.N`: a copy-up in progress (renamed into place when done).
//!
//! In a `cow` share every name starting with `.wh.` is reserved: the guest
//! never sees one and cannot create one (EINVAL), so nothing it does can be
//! mistaken for a whiteout. Because a whiteout adds four bytes, names longer
//! than 251 bytes cannot be whited out (deleting such a lower entry fails
//! with ENAMETOOLONG); they can be created, read and written normally.

use rustix::io::Errno;

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
pub const ORIGIN_LOG: &[u8] = b".wh..wh..mvm-origins";
pub const TMP_PREFIX: &[u8] = b".wh..wh..tmp.";

/// `NAME_MAX` on Linux.
pub const NAME_MAX: usize = 255;

/// Checks a single path component sent by the guest.
pub fn check(name: &[u8]) -> Result<(), Errno> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err(Errno::INVAL);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    if name.iter().any(|&b| b == b'/' || b == 0) {
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// Whether `name` is reserved for the layout (hidden from the guest).
pub fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(WHITEOUT_PREFIX)
}

/// The whiteout file name for `name`.
pub fn whiteout(name: &[u8]) -> Result<Vec<u8>, Errno> {
    if name.len() + WHITEOUT_PREFIX.len() > NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    let mut w = WHITEOUT_PREFIX.to_vec();
    w.extend_from_slice(name);
    Ok(w)
}

/// If `name` is a whiteout (not the opaque marker or another special
/// file), the name it hides.
pub fn whited_out(name: &[u8]) -> Option<&[u8]> {
    let rest = name.strip_prefix(WHITEOUT_PREFIX)?;
    if rest.is_empty() || rest.starts_with(WHITEOUT_PREFIX) {
        None
    } else {
        Some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names() {
        assert!(check(b"a").is_ok());
        assert!(check(&[b'x'; 255]).is_ok());
        assert_eq!(check(&[b'x'; 256]), Err(Errno::NAMETOOLONG));
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert_eq!(check(bad), Err(Errno::INVAL), "{bad:?}");
        }
        assert!(check(b"...").is_ok());
    }

    #[test]
    fn whiteouts() {
        assert_eq!(whiteout(b"foo").unwrap(), b".wh.foo");
        assert_eq!(whited_out(b".wh.foo"), Some(&b"foo"[..]));
        assert_eq!(whited_out(OPAQUE_MARKER), None);
        assert_eq!(whited_out(ORIGIN_LOG), None);
        assert_eq!(whited_out(b".wh."), None);
        assert_eq!(whited_out(b"foo"), None);
        assert!(is_reserved(b".wh.x"));
        assert!(whiteout(&[b'x'; 252]).is_err());
        assert!(whiteout(&[b'x'; 251]).is_ok());
    }
}
