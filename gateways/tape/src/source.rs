//! Where backups read and restores write: a namespace reached over NVMe-oF with the host
//! library, one connection per worker thread.

use std::net::SocketAddr;

use ferrite_host::{ConnectOptions, Controller};
use serde::{Deserialize, Serialize};

/// One connection to a namespace.
pub trait Namespace: Send {
    /// Size in bytes and LBA size.
    fn geometry(&mut self) -> Result<(u64, u32), String>;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), String>;
    fn flush(&mut self) -> Result<(), String>;
}

/// Opens connections to one namespace (the extension point for other sources: a journal range
/// of the replicator, a local file).
pub trait Endpoint: Send + Sync + std::fmt::Debug {
    fn connect(&self) -> Result<Box<dyn Namespace>, String>;
    /// How the job header records the source.
    fn describe(&self) -> crate::format::Source;
}

/// A namespace of an NVMe/TCP subsystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeTcpEndpoint {
    pub address: SocketAddr,
    pub subnqn: String,
    pub nsid: u32,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug)]
struct NvmeNamespace {
    c: Controller,
    nsid: u32,
    lba: u32,
    /// Largest transfer per command the queue takes (whole LBAs).
    max: usize,
}

impl Endpoint for NvmeTcpEndpoint {
    fn connect(&self) -> Result<Box<dyn Namespace>, String> {
        let mut opts = ConnectOptions::new(self.address, self.subnqn.clone());
        opts.io_queues = 1;
        opts.timeout = std::time::Duration::from_secs(30);
        let mut c = Controller::connect(opts)
            .map_err(|e| format!("connect to {} {}: {e}", self.address, self.subnqn))?;
        let lba = c
            .block_size(self.nsid)
            .map_err(|e| format!("namespace {}: {e}", self.nsid))?;
        let max = (c.max_transfer() / lba * lba).max(lba) as usize;
        Ok(Box::new(NvmeNamespace {
            c,
            nsid: self.nsid,
            lba,
            max,
        }))
    }

    fn describe(&self) -> crate::format::Source {
        crate::format::Source {
            address: self.address.to_string(),
            subnqn: self.subnqn.clone(),
            nsid: self.nsid,
            name: self.name.clone(),
        }
    }
}

impl NvmeNamespace {
    fn lbas(&self, offset: u64, len: usize) -> Result<(u64, u32), String> {
        let lba = u64::from(self.lba);
        if offset % lba != 0 || len as u64 % lba != 0 {
            return Err(format!(
                "I/O at {offset}+{len} is not a multiple of the {lba} byte LBA"
            ));
        }
        Ok((offset / lba, (len as u64 / lba) as u32))
    }
}

impl Namespace for NvmeNamespace {
    fn geometry(&mut self) -> Result<(u64, u32), String> {
        let ns = self
            .c
            .identify_namespace(self.nsid)
            .map_err(|e| e.to_string())?;
        Ok((ns.nsze.get() * u64::from(self.lba), self.lba))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        // Every piece of the chunk in flight at once (up to the queue depth): one command at a
        // time left the link idle a round trip per piece.
        let (slba, _) = self.lbas(offset, buf.len())?;
        self.c
            .read_pipelined(1, self.nsid, slba, buf, self.max)
            .map_err(|e| format!("read lba {slba}: {e}"))
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let (slba, _) = self.lbas(offset, data.len())?;
        self.c
            .write_pipelined(1, self.nsid, slba, data, self.max)
            .map_err(|e| format!("write lba {slba}: {e}"))
    }

    fn flush(&mut self) -> Result<(), String> {
        self.c.flush(1, self.nsid).map_err(|e| e.to_string())
    }
}

impl Drop for NvmeNamespace {
    fn drop(&mut self) {
        let _ = self.c.shutdown();
    }
}

/// An in-memory namespace for unit tests of the jobs.
#[cfg(test)]
pub mod memory {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, Clone)]
    pub struct MemoryEndpoint {
        pub data: Arc<Mutex<Vec<u8>>>,
        pub fail_reads_at: Option<u64>,
    }

    impl MemoryEndpoint {
        pub fn new(data: Vec<u8>) -> MemoryEndpoint {
            MemoryEndpoint {
                data: Arc::new(Mutex::new(data)),
                fail_reads_at: None,
            }
        }
    }

    struct Conn(MemoryEndpoint);

    impl Namespace for Conn {
        fn geometry(&mut self) -> Result<(u64, u32), String> {
            Ok((self.0.data.lock().expect("mem").len() as u64, 512))
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
            if self
                .0
                .fail_reads_at
                .is_some_and(|f| f >= offset && f < offset + buf.len() as u64)
            {
                return Err(format!("injected read error at {offset}"));
            }
            let d = self.0.data.lock().expect("mem");
            let o = offset as usize;
            buf.copy_from_slice(d.get(o..o + buf.len()).ok_or("read past end")?);
            Ok(())
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
            let mut d = self.0.data.lock().expect("mem");
            let o = offset as usize;
            d.get_mut(o..o + data.len())
                .ok_or("write past end")?
                .copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    impl Endpoint for MemoryEndpoint {
        fn connect(&self) -> Result<Box<dyn Namespace>, String> {
            Ok(Box::new(Conn(self.clone())))
        }
        fn describe(&self) -> crate::format::Source {
            crate::format::Source {
                address: "memory".into(),
                subnqn: "mem".into(),
                nsid: 1,
                name: None,
            }
        }
    }
}
