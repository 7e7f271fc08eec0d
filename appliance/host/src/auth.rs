//! DH-HMAC-CHAP on the host side: when a Connect response asks for authentication
//! (AUTHREQ.ATR), the queue runs AUTH_Negotiate / Challenge / Reply / Success1 (/ Success2)
//! over Fabrics Authentication Send/Receive before anything else. The protocol is
//! `ferrite-auth`'s [`HostAuth`]; this file moves its messages.

use std::sync::atomic::{AtomicU16, Ordering};

use ferrite_auth::message::{auth_id, AuthCommand};
use ferrite_auth::{AuthError, DhchapKey, HostAuth};
use ferrite_nvme::command::opcode::fabrics as fctype;
use ferrite_nvme::Command;

use crate::controller::{ConnectOptions, IoData, Queue};
use crate::error::{HostError, Result};
use crate::qpair::SglMode;

/// Connect response dword 0 AUTHREQ bits: ATR (17) and ASCR (18).
pub const CONNECT_AUTHREQ_MASK: u32 = 0b11 << 17;
/// Allocation length of each Authentication Receive: room for an ffdhe8192 challenge.
const RECEIVE_LEN: u32 = 4096;

/// The secrets a host authenticates with (`nvme connect --dhchap-secret` and
/// `--dhchap-ctrl-secret`).
#[derive(Debug, Clone)]
pub struct DhchapSecrets {
    pub host: DhchapKey,
    /// Set for bidirectional authentication: the controller must prove it knows this one.
    pub ctrl: Option<DhchapKey>,
}

/// Transaction ids: distinct per exchange of this process.
fn next_tid() -> u16 {
    static TID: AtomicU16 = AtomicU16::new(1);
    TID.fetch_add(1, Ordering::Relaxed)
}

fn auth_cmd(fc: u8, len: u32) -> Command {
    let mut cmd = Command::new_fabrics(fc, 0);
    let a = AuthCommand::dhchap(len);
    cmd.cdw10 = a.cdw10().into();
    cmd.cdw11 = len.into();
    cmd
}

fn send(q: &mut Queue, opts: &ConnectOptions, msg: &[u8]) -> Result<()> {
    let cmd = auth_cmd(fctype::AUTHENTICATION_SEND, msg.len() as u32);
    q.exec(&cmd, IoData::Write(msg), SglMode::Auto, opts.timeout)?
        .check()
}

fn receive(q: &mut Queue, opts: &ConnectOptions) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; RECEIVE_LEN as usize];
    let cmd = auth_cmd(fctype::AUTHENTICATION_RECEIVE, RECEIVE_LEN);
    q.exec(&cmd, IoData::Read(&mut buf), SglMode::Auto, opts.timeout)?
        .check()?;
    Ok(buf)
}

/// Runs one DH-HMAC-CHAP exchange on `q`. Errors from our side are reported to the controller
/// with AUTH_Failure2 before returning.
pub(crate) fn authenticate(q: &mut Queue, opts: &ConnectOptions) -> Result<()> {
    let secrets = opts.dhchap.as_ref().ok_or_else(|| {
        HostError::InvalidArgument(
            "the controller requires DH-HMAC-CHAP authentication and no secret was given".into(),
        )
    })?;
    let mut h = HostAuth::new(
        &opts.hostnqn,
        &opts.subnqn,
        secrets.host.clone(),
        secrets.ctrl.clone(),
        next_tid(),
    );
    send(q, opts, &h.negotiate())?;
    let challenge = receive(q, opts)?;
    let reply = h.reply(&challenge);
    let reply = give_up_on_error(q, opts, &h, reply)?;
    send(q, opts, &reply)?;
    let success1 = receive(q, opts)?;
    let success2 = h.success1(&success1);
    if let Some(s2) = give_up_on_error(q, opts, &h, success2)? {
        send(q, opts, &s2)?;
    }
    Ok(())
}

/// Sends AUTH_Failure2 for a local failure (not for a Failure1 the controller already sent).
fn give_up_on_error<T>(
    q: &mut Queue,
    opts: &ConnectOptions,
    h: &HostAuth,
    r: std::result::Result<T, AuthError>,
) -> Result<T> {
    r.map_err(|e| {
        if !matches!(e, AuthError::Refused(_)) {
            // Best effort: the controller closes the queue either way.
            let _ = send(q, opts, &h.failure2(&e));
        }
        HostError::Authentication(e)
    })
}

/// Whether bytes are an AUTH_Failure1 (for tests that inspect raw exchanges).
pub fn is_failure1(msg: &[u8]) -> bool {
    msg.get(1) == Some(&auth_id::FAILURE1)
}
