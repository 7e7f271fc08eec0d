//! The host side of DH-HMAC-CHAP for one queue: builds AUTH_Negotiate, answers the challenge,
//! checks the controller's response.

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::dh::{DhGroup, DhKeyPair};
use crate::hash::HashId;
use crate::key::DhchapKey;
use crate::message::{Failure, FailureReason, Message, Negotiate, Reply, REASON_AUTH_FAILURE};
use crate::response::{augmented_challenge, ctrl_response, host_response};
use crate::AuthError;

/// One host-side exchange. Call [`negotiate`](HostAuth::negotiate), pass the controller's
/// challenge to [`reply`](HostAuth::reply), then its Success1 to
/// [`success1`](HostAuth::success1) (which returns the Success2 to send when bidirectional).
pub struct HostAuth {
    hostnqn: String,
    subnqn: String,
    host_key: DhchapKey,
    ctrl_key: Option<DhchapKey>,
    /// Offered in this order.
    pub digests: Vec<HashId>,
    pub dhgroups: Vec<DhGroup>,
    tid: u16,
    hash: Option<HashId>,
    /// (C2, S2, session key) kept to check R2.
    pending: Option<(Vec<u8>, u32, Option<Vec<u8>>)>,
}

impl std::fmt::Debug for HostAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAuth")
            .field("hostnqn", &self.hostnqn)
            .field("subnqn", &self.subnqn)
            .field("bidirectional", &self.ctrl_key.is_some())
            .field("tid", &self.tid)
            .finish_non_exhaustive()
    }
}

fn protocol(reason: FailureReason, detail: impl Into<String>) -> AuthError {
    AuthError::Protocol {
        reason,
        detail: detail.into(),
    }
}

impl HostAuth {
    /// Offers every hash and group, as Linux does.
    pub fn new(
        hostnqn: &str,
        subnqn: &str,
        host_key: DhchapKey,
        ctrl_key: Option<DhchapKey>,
        tid: u16,
    ) -> HostAuth {
        HostAuth {
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
            host_key,
            ctrl_key,
            digests: HashId::ALL.to_vec(),
            dhgroups: DhGroup::ALL.to_vec(),
            tid,
            hash: None,
            pending: None,
        }
    }

    pub fn tid(&self) -> u16 {
        self.tid
    }

    /// The hash the controller chose (after [`reply`](HostAuth::reply)).
    pub fn hash(&self) -> Option<HashId> {
        self.hash
    }

    pub fn negotiate(&self) -> Vec<u8> {
        Message::Negotiate(Negotiate {
            tid: self.tid,
            sc_c: 0,
            hash_ids: self.digests.iter().map(|h| h.id()).collect(),
            dhgroup_ids: self.dhgroups.iter().map(|g| g.id()).collect(),
        })
        .encode()
    }

    /// Answers the controller's DH-HMAC-CHAP_Challenge with a DH-HMAC-CHAP_Reply.
    pub fn reply(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AuthError> {
        let c = match Message::parse(challenge).map_err(|e| protocol(e.reason, e.detail))? {
            Message::Challenge(c) => c,
            Message::Failure1(f) => return Err(refused(f)),
            m => {
                return Err(protocol(
                    FailureReason::IncorrectMessage,
                    format!("expected a challenge, got {}", m.name()),
                ))
            }
        };
        if c.tid != self.tid {
            return Err(protocol(
                FailureReason::IncorrectPayload,
                format!("transaction {} instead of {}", c.tid, self.tid),
            ));
        }
        let hash = HashId::from_id(c.hash_id)
            .filter(|h| self.digests.contains(h))
            .ok_or_else(|| {
                protocol(
                    FailureReason::HashUnusable,
                    format!("hash id {}", c.hash_id),
                )
            })?;
        let group = DhGroup::from_id(c.dhgroup_id)
            .filter(|g| self.dhgroups.contains(g))
            .ok_or_else(|| {
                protocol(
                    FailureReason::DhGroupUnusable,
                    format!("DH group id {}", c.dhgroup_id),
                )
            })?;
        if c.challenge.len() != hash.len() {
            return Err(protocol(
                FailureReason::IncorrectPayload,
                "challenge length differs from the hash length",
            ));
        }
        let (dh_value, session_key) = match DhKeyPair::generate(group) {
            None if c.dh_value.is_empty() => (Vec::new(), None),
            None => {
                return Err(protocol(
                    FailureReason::IncorrectPayload,
                    "DH value with the null group",
                ))
            }
            Some(kp) => {
                let skey = kp.shared_secret(&c.dh_value)?;
                (kp.public().to_vec(), Some(skey))
            }
        };
        let c1 = match &session_key {
            Some(s) => augmented_challenge(hash, s, &c.challenge),
            None => c.challenge.clone(),
        };
        let response = host_response(
            hash,
            &self.host_key.transformed(&self.hostnqn),
            &c1,
            c.seqnum,
            self.tid,
            0,
            &self.hostnqn,
            &self.subnqn,
        );
        let (ctrl_challenge, seqnum) = match self.ctrl_key {
            Some(_) => {
                let mut c2 = vec![0u8; hash.len()];
                rand::thread_rng().fill_bytes(&mut c2);
                let s2 = (rand::thread_rng().next_u32() | 1).max(1);
                self.pending = Some((c2.clone(), s2, session_key));
                (Some(c2), s2)
            }
            None => (None, 0),
        };
        self.hash = Some(hash);
        Ok(Message::Reply(Reply {
            tid: self.tid,
            response,
            ctrl_challenge,
            seqnum,
            dh_value,
        })
        .encode())
    }

    /// Checks DH-HMAC-CHAP_Success1; returns the DH-HMAC-CHAP_Success2 to send when the
    /// controller authenticated itself (bidirectional), `None` when the exchange is complete.
    pub fn success1(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, AuthError> {
        let s = match Message::parse(bytes).map_err(|e| protocol(e.reason, e.detail))? {
            Message::Success1(s) => s,
            Message::Failure1(f) => return Err(refused(f)),
            m => {
                return Err(protocol(
                    FailureReason::IncorrectMessage,
                    format!("expected Success1, got {}", m.name()),
                ))
            }
        };
        if s.tid != self.tid {
            return Err(protocol(
                FailureReason::IncorrectPayload,
                "Success1 for another transaction",
            ));
        }
        let Some((c2, s2, skey)) = self.pending.take() else {
            return Ok(None);
        };
        let hash = self.hash.expect("reply() chose the hash");
        let r2 = s.response.ok_or(AuthError::ControllerNotAuthenticated)?;
        let c2 = match &skey {
            Some(k) => augmented_challenge(hash, k, &c2),
            None => c2,
        };
        let key = self
            .ctrl_key
            .as_ref()
            .expect("pending implies a controller key");
        let expected = ctrl_response(
            hash,
            &key.transformed(&self.subnqn),
            &c2,
            s2,
            self.tid,
            &self.hostnqn,
            &self.subnqn,
        );
        if !bool::from(expected.ct_eq(&r2)) {
            return Err(AuthError::ControllerNotAuthenticated);
        }
        Ok(Some(Message::Success2 { tid: self.tid }.encode()))
    }

    /// The AUTH_Failure2 that reports `err` to the controller.
    pub fn failure2(&self, err: &AuthError) -> Vec<u8> {
        Message::Failure2(Failure {
            tid: self.tid,
            reason: REASON_AUTH_FAILURE,
            explanation: err.failure_reason().code(),
        })
        .encode()
    }
}

fn refused(f: Failure) -> AuthError {
    AuthError::Refused(FailureReason::from_code(f.explanation).unwrap_or(FailureReason::Failed))
}
