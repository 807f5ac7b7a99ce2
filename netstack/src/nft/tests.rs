//! The generated ruleset, checked without root (nothing here runs nft).
