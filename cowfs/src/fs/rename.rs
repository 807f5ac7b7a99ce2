//! RENAME / RENAME2 across layers.
//!
//! In a `cow` share the source is first brought fully into the upper layer
//! (a file is copied up; a directory with lower content has its whole
//! merged tree copied up and becomes opaque, bounded, EXDEV beyond), then
//! renamed within the upper layer; the old name gets a whiteout if the
//! lower layer has it, and a directory landing on a name the lower layer
//! has is made opaque. RENAME_EXCHANGE works the same way for both names.

use rustix::fs::{self as rfs, RenameFlags};
use rustix::io::Errno;

use super::Filesystem;
use crate::abi::{RENAME_EXCHANGE, RENAME_NOREPLACE};
use crate::inode::{is_at_or_below, Presence};
use crate::layer::{join, St};
use crate::name;

impl Filesystem {
    pub fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<(), Errno> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Errno::INVAL);
        }
        name::check(name)?;
        name::check(newname)?;
        self.upper()?;
        if self.cow() && name::is_reserved(name) {
            return Err(Errno::NOENT);
        }
        if self.cow() && name::is_reserved(newname) {
            return Err(Errno::INVAL);
        }
        let (ppath, pp) = self.inodes.linked(parent)?;
        let (npath, np) = self.inodes.linked(newparent)?;
        if !pp.is_dir || !np.is_dir {
            return Err(Errno::NOTDIR);
        }
        let (sp, _) = self.probe(&ppath, pp, name)?.ok_or(Errno::NOENT)?;
        let dst = self.probe(&npath, np, newname)?;
        let from = join(&ppath, name);
        let to = join(&npath, newname);
        // The checks in the order of Linux's renameat2.
        let exchange = flags & RENAME_EXCHANGE != 0;
        if exchange && dst.is_none() {
            return Err(Errno::NOENT);
        }
        if flags & RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(Errno::EXIST);
        }
        if from != to {
            // The source may not be an ancestor of the target, nor the
            // target an ancestor of the source.
            if is_at_or_below(&to, &from) {
                return Err(Errno::INVAL);
            }
            if is_at_or_below(&from, &to) {
                return Err(if exchange {
                    Errno::INVAL
                } else {
                    Errno::NOTEMPTY
                });
            }
        }
        if from == to {
            return Ok(());
        }
        if let Some((dp, _)) = dst {
            if exchange {
                return self.exchange(&from, pp, sp, &to, np, dp);
            }
            match (sp.is_dir, dp.is_dir) {
                (true, false) => return Err(Errno::NOTDIR),
                (false, true) => return Err(Errno::ISDIR),
                (true, true) if !self.list_merged(&to, dp, usize::MAX)?.is_empty() => {
                    return Err(Errno::NOTEMPTY)
                }
                _ => {}
            }
        }
        if !self.cow() {
            let up = self.upper()?;
            rfs::renameat_with(
                up.dir(&ppath)?,
                name,
                up.dir(&npath)?,
                newname,
                RenameFlags::empty(),
            )?;
            self.inodes.unlink(&to);
            self.inodes.rename(&from, &to, |_, p| p);
            return Ok(());
        }

        let src_lower = self.lower_has(pp, &from)?;
        let dst_lower = self.lower_has(np, &to)?;
        if src_lower.is_some() {
            name::whiteout(name)?;
        }
        // 1. The source, entirely in the upper layer.
        if sp.is_dir && sp.lower {
            self.copy_up_tree(&from, sp)?;
        } else {
            self.copy_up(&from, sp, true)?;
        }
        // 2. The target's parent in the upper layer; an upper directory
        //    being replaced must be empty on the host too.
        self.ensure_upper_dir(&npath)?;
        let mut replaced: Option<St> = None;
        if let Some((dp, _)) = dst {
            if dp.upper {
                if dp.is_dir {
                    self.clear_reserved(&to)?;
                }
                replaced = self.upper()?.stat(&to)?;
            }
        }
        if let (Some(l), Some(o)) = (&dst_lower, &mut self.origins) {
            o.snapshot(&to, l);
        }
        // 3. The rename itself.
        let up = self.upper()?;
        rfs::renameat_with(
            up.dir(&ppath)?,
            name,
            up.dir(&npath)?,
            newname,
            RenameFlags::empty(),
        )?;
        if let Some(st) = replaced {
            let node = self.inodes.id_of(&to);
            self.upper_deleted(&st, node);
        }
        // 4. Layer bookkeeping at both names.
        self.remove_whiteout(&npath, newname)?;
        if let Some(l) = src_lower {
            self.whiteout(&ppath, name, &l)?;
        }
        if sp.is_dir && dst_lower.is_some() {
            self.make_marker(&to, name::OPAQUE_MARKER)?;
        }
        self.inodes.unlink(&to);
        self.inodes
            .rename(&from, &to, |_, old| Presence::upper(old.is_dir));
        Ok(())
    }

    /// RENAME_EXCHANGE of two existing names.
    fn exchange(
        &mut self,
        from: &[u8],
        pp: Presence,
        sp: Presence,
        to: &[u8],
        np: Presence,
        dp: Presence,
    ) -> Result<(), Errno> {
        let (fparent, fname) = crate::layer::split(from).ok_or(Errno::INVAL)?;
        let (tparent, tname) = crate::layer::split(to).ok_or(Errno::INVAL)?;
        if self.cow() {
            let from_lower = self.lower_has(pp, from)?;
            let to_lower = self.lower_has(np, to)?;
            for (path, p) in [(from, sp), (to, dp)] {
                if p.is_dir && p.lower {
                    self.copy_up_tree(path, p)?;
                } else {
                    self.copy_up(path, p, true)?;
                }
            }
            if let Some(o) = &mut self.origins {
                if let Some(l) = &from_lower {
                    o.snapshot(from, l);
                }
                if let Some(l) = &to_lower {
                    o.snapshot(to, l);
                }
            }
            let up = self.upper()?;
            rfs::renameat_with(
                up.dir(fparent)?,
                fname,
                up.dir(tparent)?,
                tname,
                RenameFlags::EXCHANGE,
            )?;
            // A directory now sitting where the lower layer has something
            // must hide it.
            if sp.is_dir && to_lower.is_some() {
                self.make_marker(to, name::OPAQUE_MARKER)?;
            }
            if dp.is_dir && from_lower.is_some() {
                self.make_marker(from, name::OPAQUE_MARKER)?;
            }
        } else {
            let up = self.upper()?;
            rfs::renameat_with(
                up.dir(fparent)?,
                fname,
                up.dir(tparent)?,
                tname,
                RenameFlags::EXCHANGE,
            )?;
        }
        // Swap the two subtrees in the inode table through a name no guest
        // path can have (it contains NUL).
        let parked = b"\0exchange".to_vec();
        let fix = |_: &[u8], old: Presence| Presence::upper(old.is_dir);
        self.inodes.rename(from, &parked, fix);
        self.inodes.rename(to, from, fix);
        self.inodes.rename(&parked, to, fix);
        Ok(())
    }
}
