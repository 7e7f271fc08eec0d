//! End-to-end test support for Ferrite: things that need more than one process.
//!
//! [`linux_host`] boots a real Linux NVMe/TCP host (this machine's Debian kernel in QEMU) that
//! tests drive with shell commands (`nvme connect`, `fio`, `mkfs.ext4`, ...); [`ferrited`] runs
//! the target under test as a real process; [`ansible`] runs the Ansible collection's test drivers.

pub mod ansible;
pub mod ferrited;
pub mod linux_host;
pub mod managed;

pub use linux_host::{CmdOutput, HostOptions, LinuxHost};
