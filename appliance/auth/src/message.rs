//! The authentication messages carried by Fabrics Authentication Send/Receive (NVMe Base 2.0,
//! 8.13.5.5 / TP 8006), little-endian: AUTH_Negotiate, DH-HMAC-CHAP_Challenge, _Reply,
//! _Success1, _Success2, AUTH_Failure1 and AUTH_Failure2. Parsing is checked: every length is
//! bounded by the bytes present; trailing bytes (a receive buffer padded to its allocation
//! length) are ignored.

/// SECP of Authentication Send/Receive for NVMe in-band authentication.
pub const SECP_NVME_AUTH: u8 = 0xE9;
/// SPSP0 and SPSP1 for DH-HMAC-CHAP.
pub const SPSP0: u8 = 0x01;
pub const SPSP1: u8 = 0x01;
/// AUTH-ID of DH-HMAC-CHAP in a protocol descriptor.
pub const AUTHID_DHCHAP: u8 = 0x01;
/// AUTH_Failure reason code: authentication failure.
pub const REASON_AUTH_FAILURE: u8 = 0x01;

/// AUTH-Type byte.
pub mod auth_type {
    pub const COMMON: u8 = 0x00;
    pub const DHCHAP: u8 = 0x01;
}

/// AUTH-Id byte.
pub mod auth_id {
    pub const NEGOTIATE: u8 = 0x00;
    pub const CHALLENGE: u8 = 0x01;
    pub const REPLY: u8 = 0x02;
    pub const SUCCESS1: u8 = 0x03;
    pub const SUCCESS2: u8 = 0x04;
    pub const FAILURE2: u8 = 0xF0;
    pub const FAILURE1: u8 = 0xF1;
}

/// Header sizes.
const NEGOTIATE_HEADER: usize = 8;
const DESCRIPTOR: usize = 64;
const ID_LIST: usize = 30;
const CHALLENGE_HEADER: usize = 16;
const REPLY_HEADER: usize = 16;
const SUCCESS_HEADER: usize = 16;
const FAILURE_LEN: usize = 8;

/// Reason code explanations of AUTH_Failure1/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    Failed = 0x01,
    NotUsable = 0x02,
    ConcatMismatch = 0x03,
    HashUnusable = 0x04,
    DhGroupUnusable = 0x05,
    IncorrectPayload = 0x06,
    IncorrectMessage = 0x07,
}

impl FailureReason {
    pub fn from_code(code: u8) -> Option<FailureReason> {
        use FailureReason::*;
        [
            Failed,
            NotUsable,
            ConcatMismatch,
            HashUnusable,
            DhGroupUnusable,
            IncorrectPayload,
            IncorrectMessage,
        ]
        .into_iter()
        .find(|r| *r as u8 == code)
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureReason::Failed => "authentication failed",
            FailureReason::NotUsable => "authentication protocol not usable",
            FailureReason::ConcatMismatch => "secure channel concatenation mismatch",
            FailureReason::HashUnusable => "hash function not usable",
            FailureReason::DhGroupUnusable => "DH group not usable",
            FailureReason::IncorrectPayload => "incorrect payload",
            FailureReason::IncorrectMessage => "incorrect protocol message",
        })
    }
}

/// AUTH_Negotiate with its DH-HMAC-CHAP protocol descriptor: the ids the host offers, raw (an id
/// this side does not know is simply never chosen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiate {
    pub tid: u16,
    /// Secure channel concatenation requested (SC_C); 0 = none.
    pub sc_c: u8,
    pub hash_ids: Vec<u8>,
    pub dhgroup_ids: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub tid: u16,
    pub hash_id: u8,
    pub dhgroup_id: u8,
    pub seqnum: u32,
    /// C1, HL bytes.
    pub challenge: Vec<u8>,
    /// The controller's DH public value (empty for the null group).
    pub dh_value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub tid: u16,
    /// R1, HL bytes.
    pub response: Vec<u8>,
    /// C2 when the host asks the controller to authenticate itself (CVALID).
    pub ctrl_challenge: Option<Vec<u8>>,
    /// S2: 0 when bidirectional authentication is not requested.
    pub seqnum: u32,
    pub dh_value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success1 {
    pub tid: u16,
    pub hl: u8,
    /// R2 when the controller answers the host's challenge (RVALID).
    pub response: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub tid: u16,
    pub reason: u8,
    pub explanation: u8,
}

/// One authentication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Negotiate(Negotiate),
    Challenge(Challenge),
    Reply(Reply),
    Success1(Success1),
    Success2 {
        tid: u16,
    },
    /// Controller to host.
    Failure1(Failure),
    /// Host to controller.
    Failure2(Failure),
}

/// Why bytes are not a message, as the failure explanation the peer gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct ParseError {
    pub reason: FailureReason,
    pub detail: String,
}

fn payload(detail: impl Into<String>) -> ParseError {
    ParseError {
        reason: FailureReason::IncorrectPayload,
        detail: detail.into(),
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn need(b: &[u8], len: usize, what: &str) -> Result<(), ParseError> {
    if b.len() < len {
        return Err(payload(format!(
            "{what} needs {len} bytes, {} present",
            b.len()
        )));
    }
    Ok(())
}

impl Message {
    /// The transaction identifier every message carries (bytes 4..6).
    pub fn tid(&self) -> u16 {
        match self {
            Message::Negotiate(m) => m.tid,
            Message::Challenge(m) => m.tid,
            Message::Reply(m) => m.tid,
            Message::Success1(m) => m.tid,
            Message::Success2 { tid } => *tid,
            Message::Failure1(m) | Message::Failure2(m) => m.tid,
        }
    }

    /// The message's name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Negotiate(_) => "AUTH_Negotiate",
            Message::Challenge(_) => "DH-HMAC-CHAP_Challenge",
            Message::Reply(_) => "DH-HMAC-CHAP_Reply",
            Message::Success1(_) => "DH-HMAC-CHAP_Success1",
            Message::Success2 { .. } => "DH-HMAC-CHAP_Success2",
            Message::Failure1(_) => "AUTH_Failure1",
            Message::Failure2(_) => "AUTH_Failure2",
        }
    }

    pub fn parse(b: &[u8]) -> Result<Message, ParseError> {
        need(b, 6, "a message header")?;
        let tid = le16(b, 4);
        match (b[0], b[1]) {
            (auth_type::COMMON, auth_id::NEGOTIATE) => parse_negotiate(b).map(Message::Negotiate),
            (auth_type::DHCHAP, auth_id::CHALLENGE) => parse_challenge(b).map(Message::Challenge),
            (auth_type::DHCHAP, auth_id::REPLY) => parse_reply(b).map(Message::Reply),
            (auth_type::DHCHAP, auth_id::SUCCESS1) => {
                need(b, SUCCESS_HEADER, "DH-HMAC-CHAP_Success1")?;
                let hl = b[6];
                let response = if b[8] & 1 != 0 {
                    need(
                        b,
                        SUCCESS_HEADER + hl as usize,
                        "Success1 with its response",
                    )?;
                    Some(b[SUCCESS_HEADER..SUCCESS_HEADER + hl as usize].to_vec())
                } else {
                    None
                };
                Ok(Message::Success1(Success1 { tid, hl, response }))
            }
            (auth_type::DHCHAP, auth_id::SUCCESS2) => {
                need(b, SUCCESS_HEADER, "DH-HMAC-CHAP_Success2")?;
                Ok(Message::Success2 { tid })
            }
            (
                auth_type::COMMON | auth_type::DHCHAP,
                id @ (auth_id::FAILURE1 | auth_id::FAILURE2),
            ) => {
                need(b, FAILURE_LEN, "AUTH_Failure")?;
                let f = Failure {
                    tid,
                    reason: b[6],
                    explanation: b[7],
                };
                Ok(if id == auth_id::FAILURE1 {
                    Message::Failure1(f)
                } else {
                    Message::Failure2(f)
                })
            }
            (t, id) => Err(ParseError {
                reason: FailureReason::IncorrectMessage,
                detail: format!("unknown message type {t:#04x} id {id:#04x}"),
            }),
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out;
        match self {
            Message::Negotiate(m) => {
                out = vec![0u8; NEGOTIATE_HEADER + DESCRIPTOR];
                out[6] = m.sc_c;
                out[7] = 1; // NAPD: one protocol descriptor
                let d = &mut out[NEGOTIATE_HEADER..];
                d[0] = AUTHID_DHCHAP;
                let hashes = &m.hash_ids[..m.hash_ids.len().min(ID_LIST)];
                let groups = &m.dhgroup_ids[..m.dhgroup_ids.len().min(ID_LIST)];
                d[2] = hashes.len() as u8;
                d[3] = groups.len() as u8;
                d[4..4 + hashes.len()].copy_from_slice(hashes);
                d[4 + ID_LIST..4 + ID_LIST + groups.len()].copy_from_slice(groups);
                header(&mut out, auth_type::COMMON, auth_id::NEGOTIATE, m.tid);
            }
            Message::Challenge(m) => {
                out = vec![0u8; CHALLENGE_HEADER];
                out[6] = m.challenge.len() as u8;
                out[8] = m.hash_id;
                out[9] = m.dhgroup_id;
                out[10..12].copy_from_slice(&(m.dh_value.len() as u16).to_le_bytes());
                out[12..16].copy_from_slice(&m.seqnum.to_le_bytes());
                out.extend_from_slice(&m.challenge);
                out.extend_from_slice(&m.dh_value);
                header(&mut out, auth_type::DHCHAP, auth_id::CHALLENGE, m.tid);
            }
            Message::Reply(m) => {
                let hl = m.response.len();
                out = vec![0u8; REPLY_HEADER];
                out[6] = hl as u8;
                out[8] = m.ctrl_challenge.is_some() as u8;
                out[10..12].copy_from_slice(&(m.dh_value.len() as u16).to_le_bytes());
                out[12..16].copy_from_slice(&m.seqnum.to_le_bytes());
                out.extend_from_slice(&m.response);
                match &m.ctrl_challenge {
                    Some(c) => out.extend_from_slice(c),
                    None => out.resize(REPLY_HEADER + 2 * hl, 0),
                }
                out.extend_from_slice(&m.dh_value);
                header(&mut out, auth_type::DHCHAP, auth_id::REPLY, m.tid);
            }
            Message::Success1(m) => {
                out = vec![0u8; SUCCESS_HEADER];
                out[6] = m.hl;
                if let Some(r) = &m.response {
                    out[8] = 1;
                    out.extend_from_slice(r);
                }
                header(&mut out, auth_type::DHCHAP, auth_id::SUCCESS1, m.tid);
            }
            Message::Success2 { tid } => {
                out = vec![0u8; SUCCESS_HEADER];
                header(&mut out, auth_type::DHCHAP, auth_id::SUCCESS2, *tid);
            }
            Message::Failure1(f) | Message::Failure2(f) => {
                out = vec![0u8; FAILURE_LEN];
                out[6] = f.reason;
                out[7] = f.explanation;
                let id = if matches!(self, Message::Failure1(_)) {
                    auth_id::FAILURE1
                } else {
                    auth_id::FAILURE2
                };
                header(&mut out, auth_type::COMMON, id, f.tid);
            }
        }
        out
    }
}

fn header(out: &mut [u8], t: u8, id: u8, tid: u16) {
    out[0] = t;
    out[1] = id;
    out[4..6].copy_from_slice(&tid.to_le_bytes());
}

fn parse_negotiate(b: &[u8]) -> Result<Negotiate, ParseError> {
    need(b, NEGOTIATE_HEADER, "AUTH_Negotiate")?;
    let napd = b[7] as usize;
    if napd == 0 {
        return Err(payload("AUTH_Negotiate without a protocol descriptor"));
    }
    need(
        b,
        NEGOTIATE_HEADER + napd * DESCRIPTOR,
        "AUTH_Negotiate's descriptors",
    )?;
    let d = (0..napd)
        .map(|i| &b[NEGOTIATE_HEADER + i * DESCRIPTOR..NEGOTIATE_HEADER + (i + 1) * DESCRIPTOR])
        .find(|d| d[0] == AUTHID_DHCHAP)
        .ok_or(ParseError {
            reason: FailureReason::NotUsable,
            detail: "no DH-HMAC-CHAP protocol descriptor".into(),
        })?;
    let (halen, dhlen) = (d[2] as usize, d[3] as usize);
    if halen > ID_LIST || dhlen > ID_LIST {
        return Err(payload(format!(
            "HALEN {halen} / DHLEN {dhlen} exceed {ID_LIST}"
        )));
    }
    Ok(Negotiate {
        tid: le16(b, 4),
        sc_c: b[6],
        hash_ids: d[4..4 + halen].to_vec(),
        dhgroup_ids: d[4 + ID_LIST..4 + ID_LIST + dhlen].to_vec(),
    })
}

fn parse_challenge(b: &[u8]) -> Result<Challenge, ParseError> {
    need(b, CHALLENGE_HEADER, "DH-HMAC-CHAP_Challenge")?;
    let hl = b[6] as usize;
    let dhvlen = le16(b, 10) as usize;
    if hl == 0 {
        return Err(payload("challenge with HL 0"));
    }
    need(
        b,
        CHALLENGE_HEADER + hl + dhvlen,
        "the challenge and DH value",
    )?;
    let c = CHALLENGE_HEADER;
    Ok(Challenge {
        tid: le16(b, 4),
        hash_id: b[8],
        dhgroup_id: b[9],
        seqnum: le32(b, 12),
        challenge: b[c..c + hl].to_vec(),
        dh_value: b[c + hl..c + hl + dhvlen].to_vec(),
    })
}

fn parse_reply(b: &[u8]) -> Result<Reply, ParseError> {
    need(b, REPLY_HEADER, "DH-HMAC-CHAP_Reply")?;
    let hl = b[6] as usize;
    let dhvlen = le16(b, 10) as usize;
    if hl == 0 {
        return Err(payload("reply with HL 0"));
    }
    need(
        b,
        REPLY_HEADER + 2 * hl + dhvlen,
        "the response, challenge and DH value",
    )?;
    let r = REPLY_HEADER;
    Ok(Reply {
        tid: le16(b, 4),
        response: b[r..r + hl].to_vec(),
        ctrl_challenge: (b[8] != 0).then(|| b[r + hl..r + 2 * hl].to_vec()),
        seqnum: le32(b, 12),
        dh_value: b[r + 2 * hl..r + 2 * hl + dhvlen].to_vec(),
    })
}

/// CDW10/CDW11 of Authentication Send (TL) and Receive (AL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthCommand {
    pub secp: u8,
    pub spsp0: u8,
    pub spsp1: u8,
    /// Transfer length (Send) or allocation length (Receive).
    pub len: u32,
}

impl AuthCommand {
    pub fn dhchap(len: u32) -> AuthCommand {
        AuthCommand {
            secp: SECP_NVME_AUTH,
            spsp0: SPSP0,
            spsp1: SPSP1,
            len,
        }
    }

    /// From CDW10 (SECP 31:24, SPSP1 23:16, SPSP0 15:8) and CDW11.
    pub fn from_dwords(cdw10: u32, cdw11: u32) -> AuthCommand {
        AuthCommand {
            secp: (cdw10 >> 24) as u8,
            spsp1: (cdw10 >> 16) as u8,
            spsp0: (cdw10 >> 8) as u8,
            len: cdw11,
        }
    }

    pub fn cdw10(&self) -> u32 {
        (self.secp as u32) << 24 | (self.spsp1 as u32) << 16 | (self.spsp0 as u32) << 8
    }

    /// Whether SECP/SPSP select DH-HMAC-CHAP.
    pub fn is_dhchap(&self) -> bool {
        self.secp == SECP_NVME_AUTH && self.spsp0 == SPSP0 && self.spsp1 == SPSP1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte layout Linux's nvme-auth host sends for its AUTH_Negotiate: three hashes,
    /// six groups, transaction 0.
    #[test]
    fn negotiate_layout() {
        let m = Message::Negotiate(Negotiate {
            tid: 0x0102,
            sc_c: 0,
            hash_ids: vec![1, 2, 3],
            dhgroup_ids: vec![0, 1, 2, 3, 4, 5],
        });
        let b = m.encode();
        assert_eq!(b.len(), 72);
        assert_eq!(&b[..8], &[0, 0, 0, 0, 0x02, 0x01, 0, 1]);
        assert_eq!(&b[8..12], &[1, 0, 3, 6]);
        assert_eq!(&b[12..15], &[1, 2, 3]);
        assert_eq!(&b[42..48], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(Message::parse(&b).unwrap(), m);
    }

    #[test]
    fn reply_always_carries_two_hl_blocks() {
        let m = Message::Reply(Reply {
            tid: 7,
            response: vec![0xaa; 32],
            ctrl_challenge: None,
            seqnum: 0,
            dh_value: vec![],
        });
        let b = m.encode();
        assert_eq!(b.len(), 16 + 64);
        assert_eq!(Message::parse(&b).unwrap(), m);
        assert!(Message::parse(&b[..16 + 63]).is_err());
    }

    #[test]
    fn failure1_layout_and_reasons() {
        let f = Message::Failure1(Failure {
            tid: 3,
            reason: REASON_AUTH_FAILURE,
            explanation: FailureReason::IncorrectMessage.code(),
        });
        assert_eq!(f.encode(), vec![0, 0xf1, 0, 0, 3, 0, 1, 7]);
        for code in 1..=7 {
            assert_eq!(FailureReason::from_code(code).unwrap().code(), code);
        }
        assert!(FailureReason::from_code(8).is_none());
    }

    #[test]
    fn unknown_and_short_messages() {
        assert_eq!(
            Message::parse(&[1, 9, 0, 0, 0, 0]).unwrap_err().reason,
            FailureReason::IncorrectMessage
        );
        assert_eq!(
            Message::parse(&[0, 0, 0]).unwrap_err().reason,
            FailureReason::IncorrectPayload
        );
        // Challenge claiming a DH value longer than the bytes present.
        let mut c = vec![1u8, 1, 0, 0, 0, 0, 32, 0, 1, 1, 0, 1, 0, 0, 0, 0];
        c.extend_from_slice(&[0u8; 32]);
        assert!(Message::parse(&c).is_err());
    }

    #[test]
    fn command_dwords() {
        let c = AuthCommand::dhchap(72);
        assert_eq!(c.cdw10(), 0xE901_0100);
        assert_eq!(AuthCommand::from_dwords(c.cdw10(), 72), c);
        assert!(c.is_dhchap());
        assert!(!AuthCommand::from_dwords(0xE902_0100, 1).is_dhchap());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_reencodes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(m) = Message::parse(&bytes) {
                let again = Message::parse(&m.encode()).expect("own encoding parses");
                prop_assert_eq!(again, m);
            }
        }
    }
}
