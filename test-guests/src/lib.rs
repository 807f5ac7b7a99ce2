//! Hand-made guest "kernels" for tests on hosts whose KVM cannot boot
//! Linux: a few instructions in a minimal ELF, with or without the PVH note.
//! A crate of its own so that the vmm, cli and benchmark tests need not
//! depend on the end-to-end harness (`mvm-e2e`) for them; [`support`] holds
//! the few helpers those tests share.

pub mod support;

pub const ENTRY: u64 = 0x10_0000;

/// 32-bit code; the port I/O parts are also valid 64-bit code, so both
/// boot protocols run them (memory operands differ: PVH only).
pub mod code {
    /// mov dx, 0x3f8
    pub const DX_COM1: &[u8] = &[0x66, 0xba, 0xf8, 0x03];
    /// mov al, imm8; out dx, al
    pub fn putc(c: u8) -> [u8; 3] {
        [0xb0, c, 0xee]
    }
    /// mov al, 0xfe; out 0x64, al  (i8042: pulse the reset line)
    pub const RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64];
    /// mov word [0x472], 0x1234  (what Linux does before a warm reboot)
    pub const WARM_FLAG: &[u8] = &[0x66, 0xc7, 0x05, 0x72, 0x04, 0x00, 0x00, 0x34, 0x12];
    /// mov eax, [0xd0000000]  (the first virtio-mmio window's magic)
    pub const READ_VIRTIO_MAGIC: &[u8] = &[0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0xd0];
    /// out dx, al; shr eax, 8
    pub const PUT_AL_SHIFT: &[u8] = &[0xee, 0xc1, 0xe8, 0x08];
    pub const INT3: &[u8] = &[0xcc];
    pub const SPIN: &[u8] = &[0xeb, 0xfe];
    pub const HLT: &[u8] = &[0xf4];
}

pub fn program(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn print(text: &str) -> Vec<u8> {
    let mut v = code::DX_COM1.to_vec();
    for b in text.bytes() {
        v.extend_from_slice(&code::putc(b));
    }
    v
}

/// A minimal ELF "kernel": one PT_LOAD at 1 MiB and, with `pvh`, the Xen
/// PVH entry note that makes the VMM use the PVH protocol.
pub fn elf_kernel(code: &[u8], pvh: bool) -> Vec<u8> {
    let mut f = vec![0u8; 0x200];
    let phnum: u16 = if pvh { 2 } else { 1 };
    // ELF header.
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&ENTRY.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&phnum.to_le_bytes());
    // PT_LOAD of the code at file offset 0x200.
    let ph = 64;
    f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
    f[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes());
    f[ph + 8..ph + 16].copy_from_slice(&0x200u64.to_le_bytes());
    f[ph + 16..ph + 24].copy_from_slice(&ENTRY.to_le_bytes());
    f[ph + 24..ph + 32].copy_from_slice(&ENTRY.to_le_bytes());
    f[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    f[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    if pvh {
        // PT_NOTE at 0x100: "Xen", XEN_ELFNOTE_PHYS32_ENTRY, entry.
        let ph = 64 + 56;
        f[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&0x100u64.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&20u64.to_le_bytes());
        // p_align 4, as notes are (QEMU divides by it).
        f[ph + 48..ph + 56].copy_from_slice(&4u64.to_le_bytes());
        let n = 0x100;
        f[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
        f[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes());
        f[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes());
        f[n + 12..n + 16].copy_from_slice(b"Xen\0");
        f[n + 16..n + 20].copy_from_slice(&(ENTRY as u32).to_le_bytes());
    }
    f.extend_from_slice(code);
    f
}

/// What the start-up benchmark's guest ([`pvh_elf`]) prints first.
pub const GREETING: &str = "MVM-TINY\n";

/// After printing: reset (the VMM exits) or spin forever (the VMM stays up
/// to be measured, then is killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Reset,
    Spin,
}

/// The native start-up benchmark's guest, for mvm and QEMU microvm alike:
/// a PVH ELF that prints [`GREETING`] on COM1, then resets or spins. QEMU
/// 7.2 divides by the note segment's alignment (`QEMU_ALIGN_UP(namesz,
/// p_align)` in `get_elf_note_type`), which is why [`elf_kernel`] gives the
/// PT_NOTE `p_align = 4`.
pub fn pvh_elf(then: Then) -> Vec<u8> {
    let end: &[u8] = match then {
        Then::Reset => &[code::RESET, code::SPIN].concat(),
        Then::Spin => code::SPIN,
    };
    elf_kernel(&program(&[&print(GREETING), end]), true)
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
