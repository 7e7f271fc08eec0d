//! Work request ids: which connection, what kind of request, which entry or command slot.

/// What a work request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A receive of a command capsule into receive entry `index`.
    Recv = 1,
    /// The completion capsule of command slot `index` (after its RDMA WRITE, if any).
    Send = 2,
    /// The RDMA READ of command slot `index`'s data from the host.
    Read = 3,
}

pub(crate) fn encode(conn: u32, kind: Kind, index: u16) -> u64 {
    u64::from(conn) << 32 | (kind as u64) << 16 | u64::from(index)
}

pub(crate) fn decode(wr_id: u64) -> Option<(u32, Kind, u16)> {
    let kind = match (wr_id >> 16) & 0xFFFF {
        1 => Kind::Recv,
        2 => Kind::Send,
        3 => Kind::Read,
        _ => return None,
    };
    Some(((wr_id >> 32) as u32, kind, wr_id as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for (c, k, i) in [
            (0, Kind::Recv, 0),
            (u32::MAX, Kind::Read, u16::MAX),
            (7, Kind::Send, 135),
        ] {
            assert_eq!(decode(encode(c, k, i)), Some((c, k, i)));
        }
        assert_eq!(decode(0), None);
    }
}
