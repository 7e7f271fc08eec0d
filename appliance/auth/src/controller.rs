//! The controller side of DH-HMAC-CHAP for one queue.
//!
//! ```text
//!            Negotiate ok                  receive              Reply ok
//! Negotiate ------------> ChallengeReady ---------> AwaitReply ---------> Success1Ready
//!     ^                                                                       | receive
//!     |  (a Negotiate in any step restarts: re-authentication)      one-way   v  bidirectional
//!     |                                                        Done <---- (Success1 sent) ----> AwaitSuccess2
//!     |                                                         ^                                  | Success2
//!     |                                                         +----------------------------------+
//! any error -> Failure1Pending(reason) --receive--> Failed   (AUTH_Failure2 from the host -> Failed)
//! ```
//!
//! A queue counts as authenticated once the host's response checked out (one-way) or the host
//! acknowledged the controller's response (bidirectional, Success2); it stays authenticated
//! through a re-authentication until that one fails.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::dh::{DhGroup, DhKeyPair};
use crate::hash::HashId;
use crate::key::DhchapKey;
use crate::message::{
    Challenge, Failure, FailureReason, Message, Reply, Success1, REASON_AUTH_FAILURE,
};
use crate::response::{augmented_challenge, ctrl_response, host_response};

/// The secrets configured for one host of a subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeys {
    /// The host's secret: the host proves it knows it.
    pub host: DhchapKey,
    /// The controller's secret, for bidirectional authentication.
    pub ctrl: Option<DhchapKey>,
}

/// Which hashes and DH groups the controller accepts, in order of preference: the first one the
/// host also offers is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    pub digests: Vec<HashId>,
    pub dhgroups: Vec<DhGroup>,
}

impl Default for AuthPolicy {
    /// The strongest hash; the smallest real DH group first (an ffdhe8192 exchange costs far
    /// more CPU per queue), the null group only when the host offers nothing else.
    fn default() -> AuthPolicy {
        AuthPolicy {
            digests: vec![HashId::Sha512, HashId::Sha384, HashId::Sha256],
            dhgroups: vec![
                DhGroup::Ffdhe2048,
                DhGroup::Ffdhe3072,
                DhGroup::Ffdhe4096,
                DhGroup::Ffdhe6144,
                DhGroup::Ffdhe8192,
                DhGroup::Null,
            ],
        }
    }
}

/// Where the exchange stands, for the NVMe-oF layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    /// Messages are still expected (the queue may still be authenticated from an earlier
    /// exchange during a re-authentication).
    InProgress,
    Authenticated,
    /// A failure was reported; the queue must not be used.
    Failed(FailureReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Negotiate,
    ChallengeReady,
    AwaitReply,
    Success1Ready,
    AwaitSuccess2,
    Done,
    Failure1Pending(FailureReason),
    Failed(FailureReason),
}

/// Sequence numbers S1: process-wide, starting at a random value, never 0.
fn next_seqnum() -> u32 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    loop {
        let cur = SEQ.load(Ordering::Relaxed);
        let next = if cur == 0 {
            rand::thread_rng().next_u32()
        } else {
            cur.wrapping_add(1)
        };
        if next != 0
            && SEQ
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return next;
        }
    }
}

/// One queue's authentication transaction, controller side.
pub struct ControllerAuth {
    hostnqn: String,
    subnqn: String,
    keys: Arc<HostKeys>,
    policy: Arc<AuthPolicy>,
    step: Step,
    authenticated: bool,
    tid: u16,
    sc_c: u8,
    hash: HashId,
    group: DhGroup,
    c1: Vec<u8>,
    s1: u32,
    dh: Option<DhKeyPair>,
    session_key: Option<Vec<u8>>,
    /// (C2, S2) when the host asked for bidirectional authentication.
    host_challenge: Option<(Vec<u8>, u32)>,
}

impl std::fmt::Debug for ControllerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerAuth")
            .field("hostnqn", &self.hostnqn)
            .field("step", &self.step)
            .field("authenticated", &self.authenticated)
            .field("hash", &self.hash)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl ControllerAuth {
    pub fn new(
        hostnqn: &str,
        subnqn: &str,
        keys: Arc<HostKeys>,
        policy: Arc<AuthPolicy>,
    ) -> ControllerAuth {
        ControllerAuth {
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
            keys,
            policy,
            step: Step::Negotiate,
            authenticated: false,
            tid: 0,
            sc_c: 0,
            hash: HashId::Sha256,
            group: DhGroup::Null,
            c1: Vec::new(),
            s1: 0,
            dh: None,
            session_key: None,
            host_challenge: None,
        }
    }

    /// Replaces the keys and policy for the next exchange (a re-authentication after the
    /// host's keys changed).
    pub fn rekey(&mut self, keys: Arc<HostKeys>, policy: Arc<AuthPolicy>) {
        self.keys = keys;
        self.policy = policy;
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    pub fn state(&self) -> AuthState {
        match self.step {
            Step::Failed(r) | Step::Failure1Pending(r) => AuthState::Failed(r),
            Step::Done => AuthState::Authenticated,
            _ => AuthState::InProgress,
        }
    }

    /// The negotiated hash and group (meaningful once a Negotiate was accepted).
    pub fn negotiated(&self) -> (HashId, DhGroup) {
        (self.hash, self.group)
    }

    fn fail(&mut self, reason: FailureReason, why: &str) {
        log::info!(
            "authentication of {} to {} failed: {reason} ({why})",
            self.hostnqn,
            self.subnqn
        );
        self.authenticated = false;
        self.step = Step::Failure1Pending(reason);
        self.clear_secrets();
    }

    fn clear_secrets(&mut self) {
        self.c1.clear();
        self.dh = None;
        self.session_key = None;
        self.host_challenge = None;
    }

    /// Consumes an Authentication Send payload. Protocol errors do not fail the command: they
    /// are answered by AUTH_Failure1 on the next Authentication Receive.
    pub fn send(&mut self, bytes: &[u8]) {
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => return self.fail(e.reason, &e.detail),
        };
        if let Message::Negotiate(n) = msg {
            return self.negotiate(n);
        }
        if let Message::Failure2(f) = msg {
            let reason = FailureReason::from_code(f.explanation).unwrap_or(FailureReason::Failed);
            log::info!("host {} aborted authentication: {reason}", self.hostnqn);
            self.authenticated = false;
            self.step = Step::Failed(reason);
            self.clear_secrets();
            return;
        }
        match (self.step, msg) {
            (_, m) if !matches!(self.step, Step::AwaitReply | Step::AwaitSuccess2) => self.fail(
                FailureReason::IncorrectMessage,
                &format!("unexpected {}", m.name()),
            ),
            (_, m) if m.tid() != self.tid => self.fail(
                FailureReason::IncorrectPayload,
                &format!("transaction {} instead of {}", m.tid(), self.tid),
            ),
            (Step::AwaitReply, Message::Reply(r)) => self.reply(r),
            (Step::AwaitSuccess2, Message::Success2 { .. }) => {
                self.authenticated = true;
                self.step = Step::Done;
                self.clear_secrets();
            }
            (_, m) => self.fail(
                FailureReason::IncorrectMessage,
                &format!("unexpected {}", m.name()),
            ),
        }
    }

    fn negotiate(&mut self, n: crate::message::Negotiate) {
        self.clear_secrets();
        self.tid = n.tid;
        self.sc_c = n.sc_c;
        if n.sc_c != 0 {
            return self.fail(
                FailureReason::ConcatMismatch,
                "secure channel concatenation is not supported",
            );
        }
        let Some(hash) = self
            .policy
            .digests
            .iter()
            .copied()
            .find(|h| n.hash_ids.contains(&h.id()))
        else {
            return self.fail(FailureReason::HashUnusable, "no common hash function");
        };
        let Some(group) = self
            .policy
            .dhgroups
            .iter()
            .copied()
            .find(|g| n.dhgroup_ids.contains(&g.id()))
        else {
            return self.fail(FailureReason::DhGroupUnusable, "no common DH group");
        };
        self.hash = hash;
        self.group = group;
        self.step = Step::ChallengeReady;
    }

    fn reply(&mut self, r: Reply) {
        let hl = self.hash.len();
        if r.response.len() != hl {
            return self.fail(
                FailureReason::IncorrectPayload,
                "response length differs from the hash length",
            );
        }
        let challenge = match (&self.dh, r.dh_value.is_empty()) {
            (None, true) => self.c1.clone(),
            (None, false) => {
                return self.fail(
                    FailureReason::IncorrectPayload,
                    "DH value with the null group",
                )
            }
            (Some(_), true) => return self.fail(FailureReason::IncorrectPayload, "no DH value"),
            (Some(dh), false) => match dh.shared_secret(&r.dh_value) {
                Ok(skey) => {
                    let c = augmented_challenge(self.hash, &skey, &self.c1);
                    self.session_key = Some(skey);
                    c
                }
                Err(e) => return self.fail(FailureReason::DhGroupUnusable, &e.to_string()),
            },
        };
        let expected = host_response(
            self.hash,
            &self.keys.host.transformed(&self.hostnqn),
            &challenge,
            self.s1,
            self.tid,
            self.sc_c,
            &self.hostnqn,
            &self.subnqn,
        );
        if !bool::from(expected.ct_eq(&r.response)) {
            return self.fail(
                FailureReason::Failed,
                "host response does not match its key",
            );
        }
        match r.ctrl_challenge {
            Some(c2) if r.seqnum != 0 => {
                if self.keys.ctrl.is_none() {
                    return self.fail(
                        FailureReason::Failed,
                        "host asked for bidirectional authentication; no controller key is set",
                    );
                }
                self.host_challenge = Some((c2, r.seqnum));
            }
            _ => self.authenticated = true,
        }
        self.step = Step::Success1Ready;
    }

    /// Produces the Authentication Receive payload for the current step, and advances.
    pub fn receive(&mut self) -> Vec<u8> {
        match self.step {
            Step::ChallengeReady => {
                let mut c1 = vec![0u8; self.hash.len()];
                rand::thread_rng().fill_bytes(&mut c1);
                self.s1 = next_seqnum();
                self.dh = DhKeyPair::generate(self.group);
                self.c1 = c1.clone();
                self.step = Step::AwaitReply;
                Message::Challenge(Challenge {
                    tid: self.tid,
                    hash_id: self.hash.id(),
                    dhgroup_id: self.group.id(),
                    seqnum: self.s1,
                    challenge: c1,
                    dh_value: self
                        .dh
                        .as_ref()
                        .map(|d| d.public().to_vec())
                        .unwrap_or_default(),
                })
                .encode()
            }
            Step::Success1Ready => {
                let response = self.host_challenge.as_ref().map(|(c2, s2)| {
                    let c2 = match &self.session_key {
                        Some(skey) => augmented_challenge(self.hash, skey, c2),
                        None => c2.clone(),
                    };
                    let key = self.keys.ctrl.as_ref().expect("checked in reply()");
                    ctrl_response(
                        self.hash,
                        &key.transformed(&self.subnqn),
                        &c2,
                        *s2,
                        self.tid,
                        &self.hostnqn,
                        &self.subnqn,
                    )
                });
                self.step = if response.is_some() {
                    Step::AwaitSuccess2
                } else {
                    self.clear_secrets();
                    Step::Done
                };
                Message::Success1(Success1 {
                    tid: self.tid,
                    hl: self.hash.len() as u8,
                    response,
                })
                .encode()
            }
            Step::Failure1Pending(reason) => {
                self.step = Step::Failed(reason);
                failure1(self.tid, reason)
            }
            _ => {
                self.fail(
                    FailureReason::IncorrectMessage,
                    "Authentication Receive with no message due",
                );
                self.step = Step::Failed(FailureReason::IncorrectMessage);
                failure1(self.tid, FailureReason::IncorrectMessage)
            }
        }
    }
}

fn failure1(tid: u16, reason: FailureReason) -> Vec<u8> {
    Message::Failure1(Failure {
        tid,
        reason: REASON_AUTH_FAILURE,
        explanation: reason.code(),
    })
    .encode()
}
