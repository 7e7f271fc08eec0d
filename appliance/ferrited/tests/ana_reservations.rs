//! ANA and persistent reservations over NVMe/TCP with the host library against an in-process
//! daemon: Identify fields, the ANA log per path, the ANA change event, path statuses on an
//! inaccessible path; reservation commands from two hosts, Reservation Conflict, the
//! notification log and its event, the state across a daemon restart from its state directory;
//! Preempt and Abort aborting the victim's command held in a `delay` bdev, a plain Preempt not.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::free_port;
use ferrite_daemon::{Config, Daemon, DaemonOptions, RpcSocket, StateDir};
use ferrite_host::{ConnectOptions, Controller, IoData};
use ferrite_nvme::command::opcode::io as iop;
use ferrite_nvme::log::{ana_state, decode_ana_log, LID_ANA};
use ferrite_nvme::{Command, Status};
use ferrite_nvmf::{AnaState, Listener, Trtype};

const NQN: &str = "nqn.2026-01.io.ferrite:ana-resv";

fn config(p1: u16, p2: u16) -> Config {
    let text = format!(
        r#"cores = "0"
listen = ["127.0.0.1:{p1}"]
[[bdev]]
name = "ram0"
kind = "malloc"
size = "4MiB"
block_size = 4096
[[bdev]]
name = "ram1"
kind = "malloc"
size = "4MiB"
block_size = 4096
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
listen = ["127.0.0.1:{p1}", "127.0.0.1:{p2}"]
namespaces = [{{ nsid = 1, bdev = "ram0" }}, {{ nsid = 2, bdev = "ram1", anagrpid = 7 }}]
"#
    );
    Config::parse(&text, Path::new("ana-resv.toml")).expect("config")
}

fn connect(port: u16, host: u8) -> Controller {
    let mut opts =
        ConnectOptions::new(([127, 0, 0, 1], port).into(), NQN).with_host_uuid([host; 16]);
    opts.io_queues = 1;
    Controller::connect(opts).expect("connect")
}

fn listener(port: u16) -> Listener {
    Listener {
        trtype: Trtype::Tcp,
        addr: ([127, 0, 0, 1], port).into(),
    }
}

/// Groups and states of the ANA log as this controller reads it.
fn ana(c: &mut Controller) -> Vec<(u32, u8, Vec<u32>)> {
    let page = c.get_log_page(LID_ANA, 0, 4096, 0).expect("ANA log");
    let (_, groups) = decode_ana_log(&page).expect("decodes");
    groups
        .into_iter()
        .map(|g| (g.descriptor.anagrpid.get(), g.descriptor.state, g.nsids))
        .collect()
}

fn io(c: &mut Controller, opcode: u8, nsid: u32, data: IoData<'_>) -> Status {
    let mut cmd = Command::new(opcode, 0);
    cmd.nsid.set(nsid);
    c.raw_io(1, &cmd, data).expect("completion").status()
}

fn read(c: &mut Controller, nsid: u32) -> Status {
    let mut buf = vec![0u8; 4096];
    io(c, iop::READ, nsid, IoData::Read(&mut buf))
}

fn write(c: &mut Controller, nsid: u32) -> Status {
    io(c, iop::WRITE, nsid, IoData::Write(&[0x5A; 4096]))
}

/// A reservation command with its key data: `cdw10` and two keys.
fn resv(c: &mut Controller, opcode: u8, cdw10: u32, k1: u64, k2: u64) -> Status {
    let mut data = k1.to_le_bytes().to_vec();
    if opcode != 0x15 {
        data.extend_from_slice(&k2.to_le_bytes());
    }
    let mut cmd = Command::new(opcode, 0);
    cmd.nsid.set(1);
    cmd.cdw10.set(cdw10);
    c.raw_io(1, &cmd, IoData::Write(&data))
        .expect("completion")
        .status()
}

const REGISTER: u8 = 0x0D;
const REPORT: u8 = 0x0E;
const ACQUIRE: u8 = 0x11;
const RELEASE: u8 = 0x15;

fn report(c: &mut Controller, extended: bool) -> (Status, Vec<u8>) {
    let mut buf = vec![0u8; 4096];
    let mut cmd = Command::new(REPORT, 0);
    cmd.nsid.set(1);
    cmd.cdw10.set(4096 / 4 - 1);
    cmd.cdw11.set(extended as u32);
    let st = c
        .raw_io(1, &cmd, IoData::Read(&mut buf))
        .expect("completion")
        .status();
    (st, buf)
}

/// Waits for an AER completion with dword 0 `dw0`.
fn wait_event(c: &mut Controller, dw0: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = c.take_admin_events().expect("admin events");
        if events.iter().any(|e| e.cqe.result() == dw0) {
            return;
        }
        assert!(Instant::now() < deadline, "no event {dw0:#x}: {events:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ana_states_per_path_reach_identify_the_log_events_and_io() {
    let (p1, p2) = (free_port(), free_port());
    let d = Daemon::start(&config(p1, p2), false).expect("daemon");
    let mut a = connect(p1, 1);
    let mut b = connect(p2, 1);
    let id = a.identify().expect("identify").clone();
    assert_eq!(id.cmic & (1 << 3), 1 << 3, "ANA reporting");
    assert_eq!(id.anacap, ferrite_nvmf::ANACAP);
    assert_eq!(id.anagrpmax.get(), ferrite_nvmf::MAX_ANA_GROUP);
    assert_eq!(id.nanagrpid.get(), ferrite_nvmf::MAX_ANA_GROUP);
    assert!(id.anatt > 0);
    assert_eq!(a.identify_namespace(1).expect("ns 1").anagrpid.get(), 1);
    assert_eq!(a.identify_namespace(2).expect("ns 2").anagrpid.get(), 7);
    let opt = ana_state::OPTIMIZED;
    assert_eq!(ana(&mut a), vec![(1, opt, vec![1]), (7, opt, vec![2])]);

    // Asynchronous Event Configuration: namespace attribute and ANA change notices (as Linux).
    for c in [&mut a, &mut b] {
        c.set_features(0x0B, 0, (1 << 8) | (1 << 11), false)
            .expect("AEC");
        c.submit_async_event_request().expect("AER");
    }
    let changed = d
        .target
        .set_ana_state(NQN, &listener(p1), Some(7), AnaState::Inaccessible)
        .expect("set");
    assert!(changed);
    // ANA change notice: type 2, info 03h, log page 0Ch.
    wait_event(&mut a, 0x000C_0302);
    wait_event(&mut b, 0x000C_0302);
    let inacc = ana_state::INACCESSIBLE;
    assert_eq!(ana(&mut a), vec![(1, opt, vec![1]), (7, inacc, vec![2])]);
    assert_eq!(ana(&mut b), vec![(1, opt, vec![1]), (7, opt, vec![2])]);
    // Only group 7 through the first path is closed.
    assert_eq!(read(&mut a, 2), Status::ANA_INACCESSIBLE);
    assert_eq!(write(&mut a, 2), Status::ANA_INACCESSIBLE);
    assert_eq!(read(&mut a, 1), Status::SUCCESS);
    assert_eq!(write(&mut b, 2), Status::SUCCESS);
    // Every group of a path at once; persistent loss and change have their own statuses.
    d.target
        .set_ana_state(NQN, &listener(p2), None, AnaState::PersistentLoss)
        .expect("set");
    assert_eq!(read(&mut b, 1), Status::ANA_PERSISTENT_LOSS);
    d.target
        .set_ana_state(NQN, &listener(p2), None, AnaState::Change)
        .expect("set");
    assert_eq!(read(&mut b, 2), Status::ANA_TRANSITION);
    d.target
        .set_ana_state(NQN, &listener(p2), None, AnaState::NonOptimized)
        .expect("set");
    assert_eq!(read(&mut b, 2), Status::SUCCESS);
    assert_eq!(
        ana(&mut b),
        vec![
            (1, ana_state::NON_OPTIMIZED, vec![1]),
            (7, ana_state::NON_OPTIMIZED, vec![2])
        ]
    );
    // Bad input: a listener the subsystem does not have, group 0.
    assert!(d
        .target
        .set_ana_state(NQN, &listener(free_port()), None, AnaState::Optimized)
        .is_err());
    assert!(d
        .target
        .set_ana_state(NQN, &listener(p1), Some(0), AnaState::Optimized)
        .is_err());
    a.disconnect();
    b.disconnect();
    d.shutdown().expect("shutdown");
}

#[test]
fn reservations_conflict_notify_and_survive_a_restart() {
    let (p1, p2) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tmp");
    let opts = || DaemonOptions {
        pin: false,
        rpc: RpcSocket::Disabled,
        state: Some(StateDir::open(dir.path()).expect("state dir")),
    };
    let d = Daemon::start_with(&config(p1, p2), opts()).expect("daemon");
    let mut a = connect(p1, 0xA);
    let mut b = connect(p1, 0xB);
    let id = a.identify().expect("identify").clone();
    assert_ne!(
        id.oncs.get() & ferrite_nvme::identify::oncs::RESERVATIONS,
        0
    );
    assert_eq!(a.identify_namespace(1).expect("ns").rescap, 0xFF);

    // Unregistered: acquire and unregister are conflicts; a bad action is Invalid Field.
    assert_eq!(
        resv(&mut b, ACQUIRE, 1 << 8, 0xB, 0),
        Status::RESERVATION_CONFLICT
    );
    assert_eq!(
        resv(&mut b, REGISTER, 1, 0xB, 0),
        Status::RESERVATION_CONFLICT
    );
    assert_eq!(resv(&mut b, REGISTER, 5, 0, 0xB), Status::INVALID_FIELD);
    assert_eq!(resv(&mut a, ACQUIRE, 9 << 8, 0xA, 0), Status::INVALID_FIELD);

    assert_eq!(resv(&mut a, REGISTER, 0, 0, 0xA), Status::SUCCESS);
    assert_eq!(resv(&mut b, REGISTER, 0, 0, 0xB), Status::SUCCESS);
    // Exclusive Access by A.
    assert_eq!(resv(&mut a, ACQUIRE, 2 << 8, 0xA, 0), Status::SUCCESS);
    assert_eq!(read(&mut b, 1), Status::RESERVATION_CONFLICT);
    assert_eq!(write(&mut b, 1), Status::RESERVATION_CONFLICT);
    assert_eq!(write(&mut a, 1), Status::SUCCESS);
    assert_eq!(
        read(&mut b, 2),
        Status::SUCCESS,
        "other namespaces are free"
    );
    let (st, _) = report(&mut b, false);
    assert_eq!(st, Status::HOST_ID_INCONSISTENT_FORMAT);
    let (st, r) = report(&mut b, true);
    assert_eq!(st, Status::SUCCESS);
    assert_eq!(r[4], 2, "rtype");
    assert_eq!(u16::from_le_bytes([r[5], r[6]]), 2, "registrants");
    assert_eq!(&r[64 + 16..64 + 32], &[0xA; 16]);
    assert_eq!(r[64 + 2], 1, "A holds");

    // Restart from the state directory: the reservation is back.
    a.disconnect();
    b.disconnect();
    d.shutdown().expect("shutdown");
    let saved = StateDir::open(dir.path())
        .expect("state dir")
        .load()
        .expect("state")
        .expect("saved");
    let d = Daemon::start_with(&saved, opts()).expect("daemon restarts");
    let mut a = connect(p1, 0xA);
    let mut b = connect(p1, 0xB);
    assert_eq!(write(&mut b, 1), Status::RESERVATION_CONFLICT);
    assert_eq!(write(&mut a, 1), Status::SUCCESS);

    // B preempts A: A's registration goes, A gets a notification and its event.
    a.submit_async_event_request().expect("AER");
    assert_eq!(
        resv(&mut b, ACQUIRE, (1 << 8) | 1, 0xB, 0xA),
        Status::SUCCESS
    );
    wait_event(&mut a, 0x0080_0006);
    let log = a.get_log_page(0x80, 0, 64, 0).expect("notification log");
    assert_eq!(log[8], 1, "Registration Preempted");
    assert_eq!(u32::from_le_bytes([log[12], log[13], log[14], log[15]]), 1);
    assert_ne!(u64::from_le_bytes(log[0..8].try_into().expect("8")), 0);
    let empty = a.get_log_page(0x80, 0, 64, 0).expect("notification log");
    assert_eq!(empty[8], 0, "read once");
    // B holds Write Exclusive now: A, no longer registered, reads but cannot write.
    assert_eq!(read(&mut a, 1), Status::SUCCESS);
    assert_eq!(write(&mut a, 1), Status::RESERVATION_CONFLICT);
    assert_eq!(
        resv(&mut a, RELEASE, 1 << 8, 0xA, 0),
        Status::RESERVATION_CONFLICT
    );
    // A registers again and masks "reservation preempted" (feature 82h): B's Clear then
    // leaves nothing in A's log.
    assert_eq!(resv(&mut a, REGISTER, 0, 0, 0xA), Status::SUCCESS);
    a.set_features(0x82, 1, 1 << 3, false).expect("mask");
    assert_eq!(a.get_features(0x82, 1, 0).expect("mask"), 1 << 3);
    assert_eq!(resv(&mut b, RELEASE, 1, 0xB, 0), Status::SUCCESS, "clear");
    let log = a.get_log_page(0x80, 0, 64, 0).expect("notification log");
    assert_eq!(log[8], 0, "masked");
    assert_eq!(write(&mut a, 1), Status::SUCCESS);
    // Reservation Persistence (83h): on by default with a state directory; a host clears it.
    assert_eq!(a.get_features(0x83, 1, 0).expect("ptpl"), 1);
    a.set_features(0x83, 1, 0, false).expect("clear ptpl");
    assert_eq!(b.get_features(0x83, 1, 0).expect("ptpl"), 0);
    assert!(a.get_features(0x83, 9, 0).is_err(), "no namespace 9");
    a.disconnect();
    b.disconnect();
    d.shutdown().expect("shutdown");
}

/// Bad input through the control plane and the configuration file: unknown ANA states, a
/// group out of range, a listener the subsystem does not have; the accepted state is in
/// `save_config` and a restart from it reproduces it.
#[test]
fn ana_rpc_and_config_refuse_bad_input_and_round_trip() {
    use ferrite_rpc::methods::dispatch;
    use serde_json::json;
    let (p1, p2) = (free_port(), free_port());
    let d = Daemon::start(&config(p1, p2), false).expect("daemon");
    let app: &dyn ferrite_rpc::Appliance = &*d.control;
    let addr =
        |port: u16| json!({"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
    let call = |state: &str, port: u16, group: Option<u32>| {
        let mut p = json!({"nqn": NQN, "listen_address": addr(port), "ana_state": state});
        if let Some(g) = group {
            p["anagrpid"] = json!(g);
        }
        dispatch(app, "nvmf_subsystem_listener_set_ana_state", p)
    };
    let e = call("standby", p1, None).expect_err("unknown state");
    assert!(
        e.message.contains("standby") && e.message.contains("non_optimized"),
        "{e:?}"
    );
    let e = call("inaccessible", p1, Some(0)).expect_err("group 0");
    assert!(e.message.contains("anagrpid"), "{e:?}");
    let e = call("inaccessible", free_port(), None).expect_err("not a listener");
    assert!(e.message.contains("not listening"), "{e:?}");
    call("non-optimized", p2, Some(7)).expect("accepted");
    let listeners =
        dispatch(app, "nvmf_subsystem_get_listeners", json!({"nqn": NQN})).expect("listeners");
    let p2s = p2.to_string();
    let second = listeners
        .as_array()
        .expect("array")
        .iter()
        .find(|l| l["address"]["trsvcid"].as_str() == Some(p2s.as_str()))
        .expect("second listener")
        .clone();
    assert_eq!(
        second["ana_states"],
        json!([{"ana_group": 1, "ana_state": "optimized"},
               {"ana_group": 7, "ana_state": "non_optimized"}])
    );
    let saved = d.control.running_config();
    d.shutdown().expect("shutdown");
    let sub = &saved.subsystems[0];
    assert_eq!(sub.ana.len(), 1, "{:?}", sub.ana);
    assert_eq!(sub.namespaces[1].anagrpid, Some(7));
    let d = Daemon::start(&saved, false).expect("restart from the saved config");
    let cfg = d.target.config();
    let s = cfg.subsystem(NQN).expect("subsystem");
    assert_eq!(s.ana.get(&listener(p2), 7), AnaState::NonOptimized);
    assert_eq!(s.ana.get(&listener(p2), 1), AnaState::Optimized);
    d.shutdown().expect("shutdown");

    let mut bad = config(p1, p2);
    bad.subsystems[0]
        .ana
        .push(ferrite_daemon::config::AnaConfig {
            listen: ([127, 0, 0, 1], p1).into(),
            anagrpid: None,
            state: "standby".into(),
        });
    let e = Daemon::start(&bad, false).expect_err("unknown state in the config");
    assert!(format!("{e:#}").contains("standby"), "{e:#}");
}

/// Every I/O takes this long in the `delay` bdev: the window the preemption lands in.
const HOLD_US: u64 = 1_500_000;

fn delay_config(port: u16) -> Config {
    let text = format!(
        r#"cores = "0"
listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "m0"
kind = "malloc"
size = "4MiB"
block_size = 4096
[[bdev]]
name = "slow"
kind = "delay"
base = "m0"
latency = {{ avg_read_us = {HOLD_US}, p99_read_us = {HOLD_US}, avg_write_us = {HOLD_US}, p99_write_us = {HOLD_US} }}
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
namespaces = [{{ nsid = 1, bdev = "slow" }}]
"#
    );
    Config::parse(&text, Path::new("preempt-abort.toml")).expect("config")
}

/// RTYPE 1 (Write Exclusive) in CDW10 bits 15:8.
const WRITE_EXCLUSIVE: u32 = 1 << 8;
const PREEMPT: u32 = 1;
const PREEMPT_AND_ABORT: u32 = 2;

/// Runs `op` on `victim` in a thread, lets it reach the delay bdev, runs `preempt` on
/// `preempter`, and returns the victim's status (with the victim back).
fn preempt_during(
    mut victim: Controller,
    op: fn(&mut Controller) -> Status,
    preempter: &mut Controller,
    preempt: impl FnOnce(&mut Controller) -> Status,
) -> (Status, Controller) {
    let outstanding = std::thread::spawn(move || {
        let st = op(&mut victim);
        (st, victim)
    });
    // Well inside the hold time, and the preemption itself takes no I/O.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(preempt(preempter), Status::SUCCESS, "preemption");
    assert!(
        !outstanding.is_finished(),
        "the victim's command should still be held by the delay bdev"
    );
    outstanding.join().expect("victim thread")
}

fn write_ns1(c: &mut Controller) -> Status {
    write(c, 1)
}

fn read_ns1(c: &mut Controller) -> Status {
    read(c, 1)
}

#[test]
fn preempt_and_abort_aborts_the_victims_outstanding_commands() {
    let port = free_port();
    let d = Daemon::start_with(
        &delay_config(port),
        DaemonOptions {
            pin: false,
            rpc: RpcSocket::Disabled,
            state: None,
        },
    )
    .expect("daemon");
    let mut a = connect(port, 0xA);
    let mut b = connect(port, 0xB);
    assert_eq!(resv(&mut a, REGISTER, 0, 0, 0xA), Status::SUCCESS);
    assert_eq!(resv(&mut b, REGISTER, 0, 0, 0xB), Status::SUCCESS);
    assert_eq!(
        resv(&mut a, ACQUIRE, WRITE_EXCLUSIVE, 0xA, 0),
        Status::SUCCESS
    );

    // A's Write is in the delay bdev when B preempts A with abort: it is aborted.
    let (st, mut a) = preempt_during(a, write_ns1, &mut b, |b| {
        resv(b, ACQUIRE, WRITE_EXCLUSIVE | PREEMPT_AND_ABORT, 0xB, 0xA)
    });
    assert_eq!(st, Status::ABORTED_PREEMPT, "A's outstanding write");
    // A is no longer registered: its new writes conflict; its reads (allowed to others under
    // Write Exclusive) started after the preemption are not aborted.
    assert_eq!(write(&mut a, 1), Status::RESERVATION_CONFLICT);
    assert_eq!(read(&mut a, 1), Status::SUCCESS);
    assert_eq!(write(&mut b, 1), Status::SUCCESS, "B holds the reservation");

    // A plain Preempt does not abort: A registers again, and its read in the delay bdev
    // completes normally while B preempts A's registration.
    assert_eq!(resv(&mut a, REGISTER, 0, 0, 0xA2), Status::SUCCESS);
    let (st, a) = preempt_during(a, read_ns1, &mut b, |b| {
        resv(b, ACQUIRE, WRITE_EXCLUSIVE | PREEMPT, 0xB, 0xA2)
    });
    assert_eq!(st, Status::SUCCESS, "a plain Preempt lets the read finish");

    a.disconnect();
    b.disconnect();
    d.shutdown().expect("shutdown");
}
