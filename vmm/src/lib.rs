pub mod arch;
