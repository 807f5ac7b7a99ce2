//! The tiny guests of the native start-up benchmark, built with
//! `mvm_e2e::tiny`: print a line on COM1, then reset or spin.

use mvm_e2e::tiny::{code, elf_kernel, print, program};

/// What the tiny guest prints first.
pub const GREETING: &str = "MVM-TINY\n";

/// After printing: reset (the VMM exits) or spin forever (the VMM stays up
/// to be measured, then is killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Reset,
    Spin,
}

/// The guest as a PVH ELF. Its PT_NOTE gets `p_align = 4`: QEMU 7.2 divides
/// by the note segment's alignment (`QEMU_ALIGN_UP(namesz, p_align)` in
/// `get_elf_note_type`) and dies of SIGFPE on the 0 that `elf_kernel`
/// leaves there; mvm does not care.
pub fn pvh_elf(then: Then) -> Vec<u8> {
    let end: &[u8] = match then {
        Then::Reset => &[code::RESET, code::SPIN].concat(),
        Then::Spin => code::SPIN,
    };
    let mut elf = elf_kernel(&program(&[&print(GREETING), end]), true);
    // Program header 1 (the note) starts at 64 + 56; p_align is its last
    // field, at +48.
    let p_align = 64 + 56 + 48;
    elf[p_align..p_align + 8].copy_from_slice(&4u64.to_le_bytes());
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_is_aligned() {
        let elf = pvh_elf(Then::Spin);
        assert_eq!(&elf[..4], b"\x7fELF");
        // The second program header is the PT_NOTE.
        assert_eq!(u32::from_le_bytes(elf[120..124].try_into().unwrap()), 4);
        assert_eq!(u64::from_le_bytes(elf[168..176].try_into().unwrap()), 4);
        assert!(pvh_elf(Then::Reset).len() > elf.len());
    }
}
