//! Transport IDs in the `spdk_nvme_perf -r` form:
//! `trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.... [hostnqn:...] [ns:1]`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ferrite_host::Trtype;

use crate::error::PerfError;

/// One target: where to connect and which namespace to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportId {
    /// NVMe/TCP or NVMe/RDMA.
    pub trtype: Trtype,
    /// Address and port.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN (None: the host library's UUID NQN).
    pub hostnqn: Option<String>,
    /// Namespace to load.
    pub nsid: u32,
}

impl FromStr for TransportId {
    type Err = PerfError;

    fn from_str(s: &str) -> Result<TransportId, PerfError> {
        let bad = |m: String| PerfError::Config(format!("transport ID {s:?}: {m}"));
        let mut trtype = None;
        let mut traddr = None;
        let mut trsvcid = None;
        let mut subnqn = None;
        let mut hostnqn = None;
        let mut nsid = 1;
        for kv in s.split_whitespace() {
            // The key ends at the first ':' or '=' (IPv6 values contain ':').
            let at = kv
                .find([':', '='])
                .ok_or_else(|| bad(format!("{kv:?} is not key:value")))?;
            let (k, v) = (&kv[..at], &kv[at + 1..]);
            match k.to_ascii_lowercase().as_str() {
                "trtype" => trtype = Some(v.to_ascii_lowercase()),
                "adrfam" => {}
                "traddr" => {
                    traddr = Some(
                        v.parse::<IpAddr>()
                            .map_err(|e| bad(format!("traddr {v:?}: {e}")))?,
                    )
                }
                "trsvcid" => {
                    trsvcid = Some(
                        v.parse::<u16>()
                            .map_err(|e| bad(format!("trsvcid {v:?}: {e}")))?,
                    )
                }
                "subnqn" => subnqn = Some(v.to_owned()),
                "hostnqn" => hostnqn = Some(v.to_owned()),
                "ns" | "nsid" => {
                    nsid = v
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n != 0)
                        .ok_or_else(|| bad(format!("ns {v:?} is not a namespace ID")))?
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        let trtype = match trtype.as_deref() {
            Some("tcp") | None => Trtype::Tcp,
            Some("rdma") => Trtype::Rdma,
            Some(t) => return Err(bad(format!("trtype {t:?} is not supported (tcp or rdma)"))),
        };
        let ip = traddr.ok_or_else(|| bad("traddr missing".into()))?;
        let subnqn = subnqn.ok_or_else(|| bad("subnqn missing".into()))?;
        Ok(TransportId {
            trtype,
            addr: SocketAddr::new(ip, trsvcid.unwrap_or(4420)),
            subnqn,
            hostnqn,
            nsid,
        })
    }
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trtype:{} traddr:{} trsvcid:{} subnqn:{}",
            self.trtype,
            self.addr.ip(),
            self.addr.port(),
            self.subnqn
        )?;
        if let Some(h) = &self.hostnqn {
            write!(f, " hostnqn:{h}")?;
        }
        if self.nsid != 1 {
            write!(f, " ns:{}", self.nsid)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spdk_form() {
        let t: TransportId = "trtype:tcp traddr:127.0.0.1 trsvcid:4421 subnqn:nqn.x:y ns:2"
            .parse()
            .expect("valid");
        assert_eq!(t.addr, "127.0.0.1:4421".parse().expect("addr"));
        assert_eq!((t.subnqn.as_str(), t.nsid), ("nqn.x:y", 2));
        assert_eq!(t.to_string().parse::<TransportId>().expect("round trip"), t);
        let t: TransportId = "traddr=::1 subnqn=nqn.a".parse().expect("defaults");
        assert_eq!((t.addr.port(), t.trtype), (4420, Trtype::Tcp));
        let t: TransportId = "trtype:RDMA traddr:10.0.2.15 trsvcid:4420 subnqn:nqn.x:y"
            .parse()
            .expect("rdma");
        assert_eq!(t.trtype, Trtype::Rdma);
        assert_eq!(t.to_string().parse::<TransportId>().expect("round trip"), t);
    }

    #[test]
    fn rejects_bad_ids() {
        for s in [
            "trtype:fc traddr:1.2.3.4 subnqn:n",
            "traddr:1.2.3.4",
            "subnqn:n",
            "traddr:host subnqn:n",
            "traddr:1.2.3.4 subnqn:n trsvcid:99999",
            "traddr:1.2.3.4 subnqn:n bogus:1",
            "traddr:1.2.3.4 subnqn:n ns:0",
            "traddr",
        ] {
            let e = s.parse::<TransportId>().expect_err(s);
            assert!(e.to_string().contains("transport ID"), "{e}");
        }
    }
}
