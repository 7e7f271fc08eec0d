//! DH-HMAC-CHAP against a real `ferrited`: SPDK's `tgt_name` on the host RPCs, and the
//! transaction time limit: a host that connects to a
//! subsystem requiring authentication and then stops answering on a queue loses that queue
//! once the controller's keep-alive timeout (the transaction's limit, as in SPDK) has passed,
//! even while the controller is kept alive.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use ferrite_auth::DhchapKey;
use ferrite_host::qpair::{Completed, QueuePair, QueuePairConfig};
use ferrite_host::{ConnectOptions, Controller, DhchapSecrets};
use serde_json::json;

mod common;

use common::{free_port, ram_config_for, start_with_config};

const NQN: &str = "nqn.2026-01.io.ferrite:auth-timeout";

#[test]
fn a_host_that_stops_authenticating_is_disconnected() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let hostid = [0x42u8; 16];
    let host = ferrite_host::controller::uuid_hostnqn(&hostid);
    let d = start_with_config(
        dir.path(),
        &ram_config_for(NQN, port, "4MiB", &[&host]),
        port,
        &[],
    );
    let key = d.ok(&["dhchap", "gen-key", "--hmac", "1"]);
    let path = dir.path().join("k0");
    std::fs::write(&path, &key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.ok(&["keyring", "add", "k0", path.to_str().unwrap()]);
    // SPDK's optional tgt_name: its default target's name is accepted, another refused.
    let set_keys = |tgt: &str| {
        d.call(
            "nvmf_subsystem_set_keys",
            json!({"nqn": NQN, "host": host, "dhchap_key": "k0", "tgt_name": tgt}),
        )
    };
    set_keys("nvmf_tgt").expect("tgt_name nvmf_tgt");
    let err = set_keys("tgt2").expect_err("another target name");
    assert!(format!("{err:?}").contains("one NVMe-oF target"), "{err:?}");
    let other = ferrite_host::controller::uuid_hostnqn(&[0x43; 16]);
    let host_params = json!({"nqn": NQN, "host": other, "tgt_name": "nvmf_tgt"});
    d.call("nvmf_subsystem_add_host", host_params.clone())
        .expect("add_host with tgt_name");
    d.call("nvmf_subsystem_remove_host", host_params)
        .expect("remove_host with tgt_name");

    // The controller authenticates its admin queue and I/O queue 1 and keeps alive (KATO
    // 2 s); I/O queue 2 is connected by hand and then says nothing.
    let mut opts = ConnectOptions::new(d.addr, NQN).with_host_uuid(hostid);
    opts.io_queues = 2;
    opts.kato_ms = 2000;
    opts.dhchap = Some(DhchapSecrets {
        host: DhchapKey::parse(&key).unwrap(),
        ctrl: None,
    });
    let mut c = Controller::connect(opts).expect("authenticated controller");
    let mut ioqs = c.take_io_queues();
    drop(ioqs.pop()); // queue 2: its qid becomes free again
    let mut cfg = QueuePairConfig::admin(NQN, &host, hostid);
    cfg.qid = 2;
    cfg.cntlid = c.cntlid();
    cfg.in_capsule_max = 8192;
    let mut qp = None;
    for _ in 0..50 {
        match QueuePair::connect(d.addr, cfg.clone(), Duration::from_secs(10)) {
            Ok(q) => {
                qp = Some(q);
                break;
            }
            // The target may not have released the old queue 2 yet.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let mut qp = qp.expect("I/O queue 2 reconnects");
    assert!(qp.negotiated().auth_required, "authentication is required");
    let connected = Instant::now();
    // Say nothing on queue 2: the target ends it after the limit (the controller's KATO) plus
    // its 50 ms check period, while keep-alives hold the controller up.
    let mut out: Vec<Completed> = Vec::new();
    let closed = loop {
        if qp.poll(&mut out).is_err() {
            break connected.elapsed();
        }
        assert!(
            connected.elapsed() < Duration::from_secs(10),
            "the queue is still open after 10 s\n{}",
            d.log_text()
        );
        c.keep_alive().expect("keep alive");
        qp.wait(Duration::from_millis(100)).ok();
    };
    assert!(
        closed >= Duration::from_millis(1900),
        "closed after {closed:?}, before the 2 s limit"
    );
    assert!(out.is_empty(), "no command was sent: {out:?}");
    assert!(
        d.log_text().contains("qid 2: host")
            && d.log_text().contains("did not finish DH-HMAC-CHAP in time"),
        "{}",
        d.log_text()
    );
    // The controller is untouched.
    c.identify().expect("the admin queue still serves");
    drop(ioqs);
    d.stop();
}
