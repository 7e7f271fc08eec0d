//! The DH-HMAC-CHAP hook (NVMe Base 2.0, 8.13.5): which hosts must authenticate, the Fabrics
//! Authentication Send/Receive commands, and the "authentication required" gate.
//!
//! A host with secrets in its subsystem's `dhchap` table gets a [`ControllerAuth`] on every
//! queue it connects, and the Connect response says so (AUTHREQ.ATR). Until that queue's
//! exchange succeeds, every command but Authentication Send/Receive and Disconnect completes
//! with Authentication Required. A failed exchange answers AUTH_Failure1 and closes the queue.
//! The protocol itself lives in `ferrite-auth`; this file only moves bytes and keeps state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_auth::message::{auth_id, AuthCommand};
use ferrite_auth::{AuthPolicy, AuthState, ControllerAuth, HostKeys, Keyring};
use ferrite_nvme::Status;
use ferrite_reactor::TaskContext;

use crate::error::NvmfError;
use crate::poll_group::{ConnId, Exec, GroupEvent, PollGroup, Qpair};
use crate::request::{DataPlan, Request};
use crate::subsystem::DhchapHost;
use crate::target::Target;

/// Connect response dword 0, AUTHREQ: authentication transaction required.
pub const CONNECT_AUTHREQ_ATR: u32 = 1 << 17;

/// How long an authentication transaction may take when the controller has no keep-alive
/// timeout (SPDK's default); otherwise the keep-alive timeout bounds it, as in SPDK.
pub(crate) const AUTH_TIMEOUT_WITHOUT_KATO: Duration = Duration::from_secs(120);

/// The time limit of a transaction on a controller with keep-alive timeout `kato_ms`.
fn auth_timeout(kato_ms: u32) -> Duration {
    match kato_ms {
        0 => AUTH_TIMEOUT_WITHOUT_KATO,
        ms => Duration::from_millis(u64::from(ms)),
    }
}

/// Whether `qp`'s authentication transaction ran past its time limit: the host stopped in the
/// middle of the exchange, and the queue is disconnected (as SPDK does) rather than left
/// holding a slot it can use for nothing but authentication.
pub(crate) fn auth_expired(qp: &Qpair, now: Instant) -> bool {
    let expired = qp.auth_deadline.is_some_and(|d| now >= d)
        && qp.auth.as_ref().is_some_and(|a| !a.is_authenticated());
    if expired {
        if let Some(ctrl) = &qp.ctrl {
            log::warn!(
                "controller {} qid {}: host {} did not finish DH-HMAC-CHAP in time; disconnecting",
                ctrl.cntlid,
                qp.qid,
                ctrl.hostnqn
            );
        }
    }
    expired
}

fn keyring_error(e: ferrite_auth::AuthError) -> NvmfError {
    NvmfError::InvalidParameter {
        field: "key",
        reason: e.to_string(),
    }
}

impl Target {
    fn lock_keyring(&self) -> std::sync::MutexGuard<'_, Keyring> {
        self.keyring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `keyring_file_add_key`: loads a `DHHC-1:` secret from `path` under `name`.
    pub fn keyring_add_file(&self, name: &str, path: &Path) -> Result<(), NvmfError> {
        self.lock_keyring()
            .add_file(name, path)
            .map_err(keyring_error)
    }

    /// `keyring_file_remove_key`: refused while a host of a subsystem uses the key.
    pub fn keyring_remove(&self, name: &str) -> Result<(), NvmfError> {
        let cfg = self.config();
        for sub in cfg.subsystems.values() {
            for (host, d) in &sub.dhchap {
                if d.key_name == name || d.ctrlr_key_name.as_deref() == Some(name) {
                    return Err(NvmfError::InvalidParameter {
                        field: "name",
                        reason: format!("key {name:?} is in use by host {host} of {}", sub.nqn),
                    });
                }
            }
        }
        self.lock_keyring()
            .remove(name)
            .map(|_| ())
            .map_err(keyring_error)
    }

    /// (name, path) of every key, sorted by name.
    pub fn keyring_entries(&self) -> Vec<(String, PathBuf)> {
        self.lock_keyring()
            .entries()
            .map(|e| (e.name.clone(), e.path.clone()))
            .collect()
    }

    /// Sets the DH-HMAC-CHAP keys (keyring names) of a host on the allowed list of subsystem
    /// `nqn`; `None` for `key` stops requiring authentication. Queues connected before keep
    /// their state; new ones and re-authentications use the new keys.
    pub fn set_host_dhchap(
        &self,
        nqn: &str,
        host: &str,
        key: Option<&str>,
        ctrlr_key: Option<&str>,
    ) -> Result<(), NvmfError> {
        let entry = match key {
            None if ctrlr_key.is_some() => {
                return Err(NvmfError::InvalidParameter {
                    field: "dhchap_ctrlr_key",
                    reason: "a controller key needs a host key (dhchap_key)".into(),
                })
            }
            None => None,
            Some(name) => {
                let ring = self.lock_keyring();
                let host_key = ring.get(name).map_err(keyring_error)?.key.clone();
                let ctrl = ctrlr_key
                    .map(|n| ring.get(n).map(|e| e.key.clone()))
                    .transpose()
                    .map_err(keyring_error)?;
                Some(DhchapHost {
                    keys: Arc::new(HostKeys {
                        host: host_key,
                        ctrl,
                    }),
                    key_name: name.to_string(),
                    ctrlr_key_name: ctrlr_key.map(str::to_string),
                })
            }
        };
        self.update_subsystem(nqn, |sub, _| {
            if !sub.hosts.contains(host) {
                return Err(NvmfError::NoSuchHost {
                    nqn: nqn.to_string(),
                    host: host.to_string(),
                });
            }
            match entry {
                Some(d) => sub.dhchap.insert(host.to_string(), d),
                None => sub.dhchap.remove(host),
            };
            Ok(())
        })
    }

    /// The DH-HMAC-CHAP configuration of `host` on `nqn`, if it must authenticate.
    pub fn host_dhchap(&self, nqn: &str, host: &str) -> Option<DhchapHost> {
        self.config().subsystem(nqn)?.dhchap.get(host).cloned()
    }

    /// The hashes and DH groups DH-HMAC-CHAP may negotiate, in order of preference.
    pub fn set_dhchap_policy(&self, policy: AuthPolicy) -> Result<(), NvmfError> {
        if policy.digests.is_empty() || policy.dhgroups.is_empty() {
            return Err(NvmfError::InvalidParameter {
                field: "dhchap_digests/dhchap_dhgroups",
                reason: "at least one hash and one DH group must stay allowed".into(),
            });
        }
        self.update(|cfg| {
            cfg.dhchap_policy = Arc::new(policy);
            Ok(())
        })
    }

    pub fn dhchap_policy(&self) -> Arc<AuthPolicy> {
        Arc::clone(&self.config().dhchap_policy)
    }
}

impl PollGroup {
    /// After a successful Connect: starts an authentication transaction on the queue when the
    /// host has secrets. Returns the AUTHREQ bits for the Connect response.
    pub(crate) fn start_auth(&mut self, conn: ConnId) -> u32 {
        let policy = Arc::clone(&self.target.config().dhchap_policy);
        let Some(qp) = self.qpair_mut(conn) else {
            return 0;
        };
        let (Some(ctrl), Some(sub)) = (qp.ctrl.as_ref(), qp.subsystem.as_ref()) else {
            return 0;
        };
        let Some(keys) = sub.dhchap.get(&ctrl.hostnqn) else {
            qp.auth = None;
            return 0;
        };
        qp.auth = Some(Box::new(ControllerAuth::new(
            &ctrl.hostnqn,
            &ctrl.subnqn,
            Arc::clone(&keys.keys),
            policy,
        )));
        qp.auth_deadline = Some(Instant::now() + auth_timeout(ctrl.kato_ms()));
        CONNECT_AUTHREQ_ATR
    }

    /// Whether the queue still owes an authentication: its commands are refused.
    pub(crate) fn auth_pending(&self, conn: ConnId) -> bool {
        self.qpair(conn)
            .and_then(|qp| qp.auth.as_ref())
            .is_some_and(|a| !a.is_authenticated())
    }

    /// Checks SECP/SPSP/length; the queue's transaction or the status to complete with.
    fn auth_command(&mut self, conn: ConnId, req: &Request) -> Result<AuthCommand, Status> {
        let c = AuthCommand::from_dwords(req.cmd.cdw10.get(), req.cmd.cdw11.get());
        if !c.is_dhchap() || c.len == 0 {
            return Err(Status::INVALID_FIELD);
        }
        if self.qpair(conn).and_then(|qp| qp.auth.as_ref()).is_none() {
            // No secrets for this host: there is no transaction to take part in.
            return Err(Status::COMMAND_SEQUENCE_ERROR);
        }
        Ok(c)
    }

    pub(crate) fn auth_send(&mut self, conn: ConnId, req: Request, cx: &mut TaskContext) -> Exec {
        let slot = req.slot;
        let c = match self.auth_command(conn, &req) {
            Ok(c) => c,
            Err(s) => return self.finish(conn, slot, s, 0, req.buf, cx),
        };
        let len = match req.plan {
            DataPlan::InCapsule { len } | DataPlan::FromHost { len } => len,
            _ => 0,
        };
        let Some(bytes) = req
            .buf
            .as_ref()
            .map(|b| b.as_slice())
            .filter(|_| len == c.len)
        else {
            return self.finish(conn, slot, Status::DATA_SGL_LENGTH_INVALID, 0, req.buf, cx);
        };
        let bytes = &bytes[..(len as usize).min(bytes.len())];
        let host_gave_up = bytes.get(1) == Some(&auth_id::FAILURE2);
        // A new transaction (re-authentication) uses the keys configured now.
        let fresh = if bytes.get(..2) == Some(&[0, auth_id::NEGOTIATE]) {
            let cfg = self.target.config();
            self.qpair(conn)
                .and_then(|qp| Some((qp.ctrl.as_ref()?, qp.subsystem.as_ref()?)))
                .and_then(|(c, s)| cfg.subsystem(&s.nqn)?.dhchap.get(&c.hostnqn).cloned())
                .map(|d| (d.keys, Arc::clone(&cfg.dhchap_policy)))
        } else {
            None
        };
        if fresh.is_some() {
            // A new transaction gets its own time limit.
            if let Some(qp) = self.qpair_mut(conn) {
                let kato = qp.ctrl.as_ref().map_or(0, |c| c.kato_ms());
                qp.auth_deadline = Some(Instant::now() + auth_timeout(kato));
            }
        }
        let (qid, auth) = self.transaction(conn);
        if let Some((keys, policy)) = fresh {
            auth.rekey(keys, policy);
        }
        let before = auth.state();
        auth.send(bytes);
        let (state, negotiated) = (auth.state(), auth.negotiated());
        // Logged once per completed exchange (re-authentications included).
        if state == AuthState::Authenticated && before != AuthState::Authenticated {
            self.log_authenticated(conn, qid, negotiated);
        }
        if host_gave_up && matches!(state, AuthState::Failed(_)) {
            self.defer(GroupEvent::Close(conn));
        }
        self.finish(conn, slot, Status::SUCCESS, 0, req.buf, cx)
    }

    pub(crate) fn auth_receive(
        &mut self,
        conn: ConnId,
        req: Request,
        cx: &mut TaskContext,
    ) -> Exec {
        let slot = req.slot;
        let c = match self.auth_command(conn, &req) {
            Ok(c) => c,
            Err(s) => return self.finish(conn, slot, s, 0, req.buf, cx),
        };
        let (DataPlan::ToHost { len }, Some(mut buf)) = (req.plan, req.buf) else {
            return self.finish(conn, slot, Status::DATA_SGL_LENGTH_INVALID, 0, None, cx);
        };
        if len != c.len {
            return self.finish(
                conn,
                slot,
                Status::DATA_SGL_LENGTH_INVALID,
                0,
                Some(buf),
                cx,
            );
        }
        let (qid, auth) = self.transaction(conn);
        let before = auth.state();
        let msg = auth.receive();
        let (state, negotiated) = (auth.state(), auth.negotiated());
        if msg.len() > len as usize {
            // The host's buffer cannot hold the message: the transaction cannot go on.
            log::info!(
                "Authentication Receive with {len} bytes for a {}-byte message",
                msg.len()
            );
            self.defer(GroupEvent::Close(conn));
            return self.finish(conn, slot, Status::INVALID_FIELD, 0, Some(buf), cx);
        }
        if state == AuthState::Authenticated && before != AuthState::Authenticated {
            self.log_authenticated(conn, qid, negotiated);
        }
        if msg.get(1) == Some(&auth_id::FAILURE1) {
            // Refused: the host reads AUTH_Failure1, then the queue goes away.
            self.defer(GroupEvent::Close(conn));
        }
        buf.set_len(len as usize);
        let out = buf.as_mut_slice();
        out.fill(0);
        out[..msg.len()].copy_from_slice(&msg);
        if let Some(qp) = self.qpair_mut(conn) {
            qp.slot_mut(slot).data_len = len;
        }
        self.finish(conn, slot, Status::SUCCESS, 0, Some(buf), cx)
    }

    /// The queue's id and transaction (present: `auth_command` checked).
    fn transaction(&mut self, conn: ConnId) -> (u16, &mut ControllerAuth) {
        let qp = self
            .qpair_mut(conn)
            .expect("auth_command checked the qpair");
        let auth = qp
            .auth
            .as_deref_mut()
            .expect("auth_command checked the transaction");
        (qp.qid, auth)
    }

    fn log_authenticated(
        &self,
        conn: ConnId,
        qid: u16,
        (hash, group): (ferrite_auth::HashId, ferrite_auth::DhGroup),
    ) {
        if let Some(ctrl) = self.qpair(conn).and_then(|qp| qp.ctrl.as_ref()) {
            log::info!(
                "controller {} qid {qid}: host {} authenticated (DH-HMAC-CHAP, {hash}, {group})",
                ctrl.cntlid,
                ctrl.hostnqn
            );
        }
    }
}
