//! Architecture-specific parts. Only x86_64 is supported today.

pub mod x86_64;
pub use self::x86_64::*;
