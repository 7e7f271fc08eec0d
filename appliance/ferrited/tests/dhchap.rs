//! DH-HMAC-CHAP end to end against a real `ferrited`: keys from files through the keyring
//! (`ferritectl keyring`, `host add --dhchap-key`), the host library authenticating every queue
//! (one-way and bidirectional, every hash, null and FFDHE groups), wrong secrets refused,
//! commands before authentication refused, re-authentication with changed keys, and the keys
//! surviving `save_config` by name only.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrite_auth::{AuthError, DhchapKey, FailureReason};
use ferrite_host::qpair::{Completed, Data, QueuePair, QueuePairConfig};
use ferrite_host::{ConnectOptions, Controller, DhchapSecrets, HostError};
use ferrite_nvme::fabrics::{property, PropertyGet, PropertySize};
use ferrite_nvme::Status;

mod common;

use common::{free_port, ram_config_for, start_with_config, CtlDaemon};

const NQN: &str = "nqn.2026-01.io.ferrite:auth";

fn uuid(n: u8) -> [u8; 16] {
    let mut u = [0x5au8; 16];
    u[15] = n;
    u[6] = 0x40; // version 4
    u[8] = 0x80;
    u
}

fn host_opts(d: &CtlDaemon, n: u8) -> ConnectOptions {
    let mut o = ConnectOptions::new(d.addr, NQN).with_host_uuid(uuid(n));
    o.io_queues = 2;
    o.timeout = Duration::from_secs(20);
    o
}

/// Generates a secret with ferritectl and stores it in a 0600 file.
fn key_file(d: &CtlDaemon, dir: &Path, name: &str, hmac: &str) -> (PathBuf, DhchapKey) {
    let text = d.ok(&["dhchap", "gen-key", "--hmac", hmac]);
    let key = DhchapKey::parse(&text).expect("ferritectl prints a valid DHHC-1 secret");
    assert_eq!(key.transform().map_or(0, |h| h.id()).to_string(), hmac);
    let path = dir.join(name);
    std::fs::write(&path, &text).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (path, key)
}

fn secrets(host: &DhchapKey, ctrl: Option<&DhchapKey>) -> Option<DhchapSecrets> {
    Some(DhchapSecrets {
        host: host.clone(),
        ctrl: ctrl.cloned(),
    })
}

fn write_read(c: &mut Controller, lba: u64) {
    let data = vec![lba as u8 ^ 0x3c; 4096];
    c.write(1, 1, lba, &data, false).expect("write");
    let mut back = vec![0u8; 4096];
    c.read(2, 1, lba, 8, &mut back).expect("read");
    assert_eq!(back, data);
}

#[test]
fn dhchap_end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let h1 = ferrite_host::controller::uuid_hostnqn(&uuid(1));
    let h2 = ferrite_host::controller::uuid_hostnqn(&uuid(2));
    let h3 = ferrite_host::controller::uuid_hostnqn(&uuid(3));
    let d = start_with_config(
        dir.path(),
        &ram_config_for(NQN, port, "16MiB", &[&h1]),
        port,
        &[],
    );

    let (p0, k0) = key_file(&d, dir.path(), "k0", "1");
    let (p1, k1) = key_file(&d, dir.path(), "k1", "0");
    let (p2, k2) = key_file(&d, dir.path(), "k2", "3");
    d.ok(&["keyring", "add", "k0", p0.to_str().unwrap()]);
    d.ok(&["keyring", "add", "k1", p1.to_str().unwrap()]);
    d.ok(&["keyring", "add", "k2", p2.to_str().unwrap()]);

    // Bad keys and names are refused with the reason.
    let loose = dir.path().join("loose");
    std::fs::write(&loose, k0.to_text()).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.fails(
        &["keyring", "add", "loose", loose.to_str().unwrap()],
        &["chmod 600"],
    );
    let bad = dir.path().join("bad");
    let mut text = k1.to_text().into_bytes();
    text[15] = if text[15] == b'A' { b'B' } else { b'A' };
    std::fs::write(&bad, &text).unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.fails(
        &["keyring", "add", "bad", bad.to_str().unwrap()],
        &["CRC mismatch"],
    );
    std::fs::write(&bad, "DHHC-1:00:c2hvcnQ=:").unwrap();
    d.fails(
        &["keyring", "add", "bad", bad.to_str().unwrap()],
        &["decoded length"],
    );
    d.fails(
        &["keyring", "add", "k0", p0.to_str().unwrap()],
        &["already exists"],
    );
    d.fails(
        &["host", "add", NQN, &h3, "--dhchap-key", "nope"],
        &["no key \"nope\""],
    );
    d.fails(&["dhchap", "config", "--digests", "md5"], &["unknown hash"]);
    d.fails(
        &["dhchap", "config", "--dhgroups", "ffdhe1024"],
        &["unknown group"],
    );

    // Host 1 must authenticate with k0 (one-way); host 2 with k1 and the controller with k2.
    d.ok(&["host", "set-keys", NQN, &h1, "--dhchap-key", "k0"]);
    d.ok(&[
        "host",
        "add",
        NQN,
        &h2,
        "--dhchap-key",
        "k1",
        "--dhchap-ctrlr-key",
        "k2",
    ]);
    d.fails(&["keyring", "remove", "k0"], &["in use"]);
    let subs = d.json(&["subsystem", "list", NQN]);
    let hosts = subs[0]["hosts"].as_array().expect("hosts").clone();
    assert!(
        hosts
            .iter()
            .any(|h| h["nqn"] == h2.as_str() && h["dhchap_ctrlr_key"] == "k2"),
        "{hosts:?}"
    );

    // No secret: the library says authentication is required.
    match Controller::connect(host_opts(&d, 1)) {
        Err(HostError::InvalidArgument(m)) => assert!(m.contains("requires DH-HMAC-CHAP"), "{m}"),
        other => panic!("connect without a secret: {other:?}"),
    }
    // Wrong secret: refused with AUTH_Failure1 (authentication failed).
    let mut o = host_opts(&d, 1);
    o.dhchap = secrets(&k1, None);
    match Controller::connect(o) {
        Err(HostError::Authentication(AuthError::Refused(FailureReason::Failed))) => {}
        other => panic!("wrong secret: {other:?}"),
    }
    // Right secret: every queue authenticates, I/O works.
    let mut o = host_opts(&d, 1);
    o.dhchap = secrets(&k0, None);
    let mut c = Controller::connect(o).unwrap_or_else(|e| panic!("{e}\n{}", d.log_text()));
    write_read(&mut c, 8);
    // Re-authentication on every queue, then with a changed key.
    c.reauthenticate(None).expect("re-authentication");
    d.ok(&["host", "set-keys", NQN, &h1, "--dhchap-key", "k2"]);
    assert!(
        c.reauthenticate(None).is_err(),
        "the old key no longer authenticates"
    );
    let mut o = host_opts(&d, 1);
    o.dhchap = secrets(&k2, None);
    let mut c = Controller::connect(o).expect("connect with the new key");
    write_read(&mut c, 16);
    c.disconnect();

    // Bidirectional: the controller proves k2; a host expecting another key refuses it.
    let mut o = host_opts(&d, 2);
    o.dhchap = secrets(&k1, Some(&k2));
    let mut c = Controller::connect(o).unwrap_or_else(|e| panic!("{e}\n{}", d.log_text()));
    write_read(&mut c, 24);
    c.disconnect();
    let mut o = host_opts(&d, 2);
    o.dhchap = secrets(&k1, Some(&k0));
    match Controller::connect(o) {
        Err(HostError::Authentication(AuthError::ControllerNotAuthenticated)) => {}
        other => panic!("wrong controller key: {other:?}"),
    }

    // Every hash and group the target is told to use.
    for (digest, group) in [
        ("sha256", "null"),
        ("sha384", "ffdhe3072"),
        ("sha512", "ffdhe2048"),
    ] {
        d.ok(&["dhchap", "config", "--digests", digest, "--dhgroups", group]);
        let mut o = host_opts(&d, 2);
        o.dhchap = secrets(&k1, Some(&k2));
        Controller::connect(o)
            .unwrap_or_else(|e| panic!("{digest}/{group}: {e}"))
            .disconnect();
        let line = format!("authenticated (DH-HMAC-CHAP, {digest}, {group})");
        assert!(d.log_text().contains(&line), "log lacks {line:?}");
    }

    // Before authentication only Authentication Send/Receive pass: Property Get is refused.
    let cfg = QueuePairConfig::admin(NQN, &h1, uuid(1));
    let mut qp = QueuePair::connect(d.addr, cfg, Duration::from_secs(10)).expect("admin queue");
    assert!(
        qp.negotiated().auth_required,
        "Connect response sets AUTHREQ.ATR"
    );
    let get = PropertyGet {
        size: PropertySize::Eight,
        offset: property::CAP,
    };
    let cid = qp.submit(&get.to_command(0), Data::None).expect("submit");
    let mut out: Vec<Completed> = Vec::new();
    for _ in 0..200 {
        qp.poll(&mut out).expect("poll");
        if !out.is_empty() {
            break;
        }
        qp.wait(Duration::from_millis(50)).expect("wait");
    }
    let done = out
        .iter()
        .find(|c| c.cid == cid)
        .expect("Property Get completes");
    assert_eq!(done.status().code(), Status::AUTHENTICATION_REQUIRED);

    // Keys are saved by name; no secret text appears.
    let saved = d.ok(&["save-config"]);
    assert!(
        saved.contains("host_keys") && saved.contains("dhchap_ctrlr_key = \"k2\""),
        "{saved}"
    );
    assert!(saved.contains("[[key]]"), "{saved}");
    assert!(!saved.contains("DHHC-1"), "secrets must not be saved");
    d.stop();
}
