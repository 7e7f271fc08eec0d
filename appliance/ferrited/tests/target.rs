//! Integration tests: a real `ferrited` process, spoken to over NVMe/TCP by the host library.

mod common;

use std::time::Duration;

use common::{file_config, free_port, pattern, ram_config, Ferrited, NQN};
use ferrite_host::{ConnectOptions, Controller, HostError, IoData};
use ferrite_nvme::command::opcode;
use ferrite_nvme::log::{LID_COMMANDS_SUPPORTED, LID_ERROR, LID_SMART};
use ferrite_nvme::{Command, Status};

fn expect_status<T: std::fmt::Debug>(result: Result<T, HostError>, want: Status) {
    match result {
        Err(HostError::Status(s)) if s.code() == want.code() => {}
        other => panic!("expected {want}, got {other:?}"),
    }
}

#[test]
fn discovery_lists_the_subsystem_on_its_port() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let entries = Controller::discover(t.addr).expect("discovery");
    let subs: Vec<_> = entries.iter().map(|e| e.subnqn.clone()).collect();
    assert!(subs.iter().any(|s| s == NQN), "{subs:?}");
    assert!(
        subs.iter()
            .any(|s| s == "nqn.2014-08.org.nvmexpress.discovery"),
        "{subs:?}"
    );
    for e in &entries {
        assert_eq!(e.trsvcid.trim(), t.addr.port().to_string());
        assert_eq!(e.traddr.trim(), "127.0.0.1");
    }
    t.stop();
}

#[test]
fn identify_reports_what_hosts_need() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut c = t.connect(1);
    let id = c.identify_controller().expect("identify controller");
    assert_eq!(id.mdts, 5);
    assert_eq!(id.ioccsz.get(), (8192 + 64) / 16);
    assert_eq!(id.iorcsz.get(), 1);
    assert_eq!(id.cntrltype, 1);
    assert_ne!(id.oncs.get() & (1 << 3), 0, "write zeroes advertised");
    let ns = c.identify_namespace(1).expect("identify namespace");
    assert_eq!(ns.nsze.get(), 64 * 1024 * 1024 / 512);
    assert_eq!(c.active_namespaces().expect("active list"), vec![1]);
    let desc = c.ns_descriptors(1).expect("descriptors");
    assert!(desc.nguid.is_some() && desc.uuid.is_some());
    // An inactive NSID reads as zeroes; NSID 0 is invalid.
    let inactive = c.identify_namespace(7).expect("inactive namespace");
    assert_eq!(inactive.nsze.get(), 0);
    expect_status(c.identify_raw(0, 0, 0, 0), Status::INVALID_NAMESPACE);
    c.shutdown().expect("CC.SHN shutdown completes");
    t.stop();
}

#[test]
fn data_round_trips_in_capsule_and_through_r2t_with_and_without_digests() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    // The last round disables SQ flow control: reads then complete through the C2HData SUCCESS
    // flag without a response capsule.
    for (hdgst, ddgst, no_sqflow) in [
        (false, false, false),
        (true, true, false),
        (true, false, false),
        (false, true, true),
    ] {
        let mut opts = t.options();
        opts.header_digest = hdgst;
        opts.data_digest = ddgst;
        opts.disable_sq_flow_control = no_sqflow;
        opts.io_queues = 2;
        let mut c = Controller::connect(opts).expect("connect");
        let mut lba = 0u64;
        for blocks in [1usize, 8, 16, 17, 64, 255, 256] {
            for qid in [1u16, 2] {
                let data = pattern(lba, blocks, 512, lba ^ hdgst as u64);
                c.write(qid, 1, lba, &data, blocks % 2 == 0).expect("write");
                let mut back = vec![0u8; data.len()];
                c.read(qid, 1, lba, blocks as u32, &mut back).expect("read");
                assert!(
                    back == data,
                    "mismatch at lba {lba} blocks {blocks} digests {hdgst}/{ddgst}"
                );
                c.compare(qid, 1, lba, &data).expect("compare equal");
                lba += blocks as u64;
            }
        }
        c.flush(1, 1).expect("flush");
        c.flush(1, 0xFFFF_FFFF).expect("flush all namespaces");
        c.disconnect();
    }
    t.stop();
}

#[test]
fn write_zeroes_deallocate_and_compare_failure() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut c = t.connect(1);
    let data = pattern(100, 32, 512, 1);
    c.write(1, 1, 100, &data, false).expect("write");
    c.write_zeroes(1, 1, 104, 8, false).expect("write zeroes");
    let mut back = vec![0u8; data.len()];
    c.read(1, 1, 100, 32, &mut back).expect("read");
    assert_eq!(&back[..4 * 512], &data[..4 * 512]);
    assert!(back[4 * 512..12 * 512].iter().all(|b| *b == 0));
    assert_eq!(&back[12 * 512..], &data[12 * 512..]);
    c.deallocate(1, 1, &[(116, 4), (124, 2)])
        .expect("deallocate");
    c.read(1, 1, 116, 4, &mut back[..4 * 512])
        .expect("read deallocated");
    assert!(
        back[..4 * 512].iter().all(|b| *b == 0),
        "deallocated blocks read zeroes (DLFEAT)"
    );
    expect_status(
        c.compare(1, 1, 100, &pattern(100, 4, 512, 99)),
        Status::COMPARE_FAILURE,
    );
    t.stop();
}

#[test]
fn bad_commands_get_the_specified_status_and_the_queue_keeps_working() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut c = t.connect(1);
    let blocks = 64 * 1024 * 1024 / 512u64;
    let mut buf = vec![0u8; 4096];
    expect_status(
        c.read(1, 1, blocks - 4, 8, &mut buf),
        Status::LBA_OUT_OF_RANGE,
    );
    expect_status(c.read(1, 9, 0, 8, &mut buf), Status::INVALID_NAMESPACE);
    expect_status(
        c.write_zeroes(1, 1, blocks, 1, false),
        Status::LBA_OUT_OF_RANGE,
    );
    expect_status(
        c.deallocate(1, 1, &[(0, 8), (blocks, 8)]),
        Status::LBA_OUT_OF_RANGE,
    );
    // Unknown I/O and admin opcodes.
    let mut odd = Command::new(0x7E, 0);
    odd.nsid = 1.into();
    let cqe = c.raw_io(1, &odd, IoData::None).expect("raw io");
    assert_eq!(cqe.status().code(), Status::INVALID_OPCODE.code());
    let cqe = c
        .raw_admin(&Command::new(0xC5, 0), IoData::None)
        .expect("raw admin");
    assert_eq!(cqe.status().code(), Status::INVALID_OPCODE.code());
    // A read longer than MDTS (256 KiB > 128 KiB).
    let mut big = vec![0u8; 256 * 1024];
    let mut read = Command::new(opcode::io::READ, 0);
    read.nsid = 1.into();
    read.cdw12 = (512 - 1).into();
    let cqe = c
        .raw_io(1, &read, IoData::Read(&mut big[..128 * 1024]))
        .expect("raw read");
    assert!(!cqe.status().is_success(), "over-MDTS read must fail");
    // Admin commands that touch the error log and SMART counters.
    c.read(1, 1, 0, 8, &mut buf).expect("a good read");
    let log = c
        .get_log_page(LID_ERROR, 0xFFFF_FFFF, 64, 0)
        .expect("error log");
    let error_count = u64::from_le_bytes(log[..8].try_into().expect("8 bytes"));
    assert!(error_count >= 5, "errors recorded: {error_count}");
    let smart = c
        .get_log_page(LID_SMART, 0xFFFF_FFFF, 512, 0)
        .expect("smart");
    let reads = u128::from_le_bytes(smart[64..80].try_into().expect("16 bytes"));
    assert!(reads >= 1, "host read commands counted: {reads}");
    let effects = c
        .get_log_page(LID_COMMANDS_SUPPORTED, 0, 4096, 0)
        .expect("effects");
    assert_ne!(effects[1024 + 4 * 2] & 1, 0, "Read is supported");
    // Still works.
    let data = pattern(0, 8, 512, 5);
    c.write(1, 1, 0, &data, false).expect("write after errors");
    t.stop();
}

#[test]
fn connect_refusals_name_the_problem() {
    let allowed = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
    let t = Ferrited::start(&ram_config(free_port(), &[allowed]));
    // A host not on the list.
    match Controller::connect(t.options()) {
        Err(HostError::ConnectRejected { status, .. }) => {
            assert_eq!(status.code(), Status::CONNECT_INVALID_HOST.code())
        }
        other => panic!("expected CONNECT_INVALID_HOST, got {other:?}"),
    }
    // An unknown subsystem.
    let mut opts = ConnectOptions::new(t.addr, "nqn.2026-01.io.ferrite:nope");
    opts.io_queues = 0;
    match Controller::connect(opts) {
        Err(HostError::ConnectRejected { status, dw0, .. }) => {
            assert_eq!(status.code(), Status::CONNECT_INVALID_PARAMETERS.code());
            assert_eq!(dw0 >> 16, 256, "IPO points at SUBNQN");
            assert_eq!(dw0 & 1, 1, "IATTR: connect data");
        }
        other => panic!("expected CONNECT_INVALID_PARAMETERS, got {other:?}"),
    }
    // The allowed host gets in.
    let mut opts = t.options();
    opts.hostnqn = allowed.to_string();
    opts.hostid = [0x11; 16];
    let mut c = Controller::connect(opts).expect("allowed host connects");
    c.write(1, 1, 0, &pattern(0, 1, 512, 0), false)
        .expect("write");
    t.stop();
}

#[test]
fn keep_alive_timeout_tears_the_controller_down() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut opts = t.options();
    opts.kato_ms = 1000;
    let mut c = Controller::connect(opts).expect("connect");
    c.keep_alive().expect("keep alive");
    std::thread::sleep(Duration::from_millis(2500));
    let mut buf = vec![0u8; 512];
    let err = c
        .read(1, 1, 0, 1, &mut buf)
        .expect_err("controller expired");
    assert!(err.is_connection_lost() || err.is_timeout(), "{err}");
    assert!(
        t.log_text().contains("keep-alive timeout"),
        "{}",
        t.log_text()
    );
    // A fresh controller works.
    let mut c = t.connect(1);
    c.read(1, 1, 0, 1, &mut buf).expect("new controller reads");
    t.stop();
}

#[test]
fn file_backend_keeps_data_across_restart() {
    let dir = tempfile::tempdir_in("/var/tmp").expect("temp dir");
    let port = free_port();
    let image = dir.path().join("disk0.img");
    let config = dir.path().join("ferrite.toml");
    std::fs::write(&config, file_config(port, &image)).expect("config");
    let written: Vec<(u64, Vec<u8>)> = (0..16u64)
        .map(|i| (i * 37, pattern(i * 37, 4, 4096, 7)))
        .collect();
    {
        let t = Ferrited::start_with(&config, dir.path());
        let mut c = t.connect(1);
        for (lba, data) in &written {
            c.write(1, 1, *lba, data, *lba % 2 == 0).expect("write");
        }
        c.flush(1, 1).expect("flush");
        c.disconnect();
        t.stop();
    }
    let t = Ferrited::start_with(&config, dir.path());
    let mut c = t.connect(1);
    for (lba, data) in &written {
        let mut back = vec![0u8; data.len()];
        c.read(1, 1, *lba, 4, &mut back)
            .expect("read after restart");
        assert!(&back == data, "lba {lba} changed across restart");
    }
    t.stop();
}

#[test]
fn many_controllers_at_once() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let threads: Vec<_> = (0..8u8)
        .map(|h| {
            let mut opts = t.options().with_host_uuid([h + 1; 16]);
            opts.io_queues = 2;
            std::thread::spawn(move || {
                let mut c = Controller::connect(opts).expect("connect");
                for round in 0..50u64 {
                    let lba = h as u64 * 4096 + round * 16;
                    let qid = 1 + (round % 2) as u16;
                    let data = pattern(lba, 16, 512, round);
                    c.write(qid, 1, lba, &data, false).expect("write");
                    let mut back = vec![0u8; data.len()];
                    c.read(qid, 1, lba, 16, &mut back).expect("read");
                    assert!(back == data, "host {h} lba {lba}");
                }
                c.disconnect();
            })
        })
        .collect();
    for th in threads {
        th.join().expect("host thread");
    }
    t.stop();
}

#[test]
fn async_events_abort_and_features() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut c = t.connect(1);
    // Four AERs are held (AERL = 3); a fifth is refused.
    let cids: Vec<_> = (0..4)
        .map(|_| c.submit_async_event_request().expect("aer"))
        .collect();
    let fifth = c.submit_async_event_request().expect("fifth aer");
    std::thread::sleep(Duration::from_millis(200));
    let events = c.take_admin_events().expect("events");
    let refused = events
        .iter()
        .find(|e| e.cid == fifth)
        .expect("fifth AER completes");
    assert_eq!(
        refused.cqe.status().code(),
        Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED.code()
    );
    assert!(
        events.iter().all(|e| e.cid == fifth),
        "held AERs stay outstanding: {events:?}"
    );
    // Abort one held AER: the Abort succeeds (dw0 bit 0 clear) and the AER completes aborted.
    let mut abort = Command::new(opcode::admin::ABORT, 0);
    abort.cdw10 = ((cids[0].0 as u32) << 16).into();
    let done = c.raw_admin(&abort, IoData::None).expect("abort");
    assert!(done.status().is_success());
    assert_eq!(done.result() & 1, 0, "the AER was aborted");
    std::thread::sleep(Duration::from_millis(100));
    let events = c.take_admin_events().expect("events");
    let aborted = events
        .iter()
        .find(|e| e.cid == cids[0])
        .expect("aborted AER completes");
    assert_eq!(
        aborted.cqe.status().code(),
        Status::ABORTED_BY_REQUEST.code()
    );
    // Aborting an I/O command that already completed reports "not aborted".
    abort.cdw10 = (1 | (999u32 << 16)).into();
    let done = c.raw_admin(&abort, IoData::None).expect("abort io");
    assert_eq!(done.result() & 1, 1);
    // Features: number of queues is fixed once I/O queues exist; VWC and KATO round-trip.
    const NUMBER_OF_QUEUES: u8 = 0x07;
    const VOLATILE_WRITE_CACHE: u8 = 0x06;
    const KEEP_ALIVE_TIMER: u8 = 0x0F;
    expect_status(
        c.set_features(NUMBER_OF_QUEUES, 0, 0x0003_0003, false),
        Status::COMMAND_SEQUENCE_ERROR,
    );
    let queues = c.get_features(NUMBER_OF_QUEUES, 0, 0).expect("get queues");
    assert_eq!(queues, 0, "one I/O queue granted (0-based NSQA and NCQA)");
    c.set_features(VOLATILE_WRITE_CACHE, 0, 0, false)
        .expect("disable write cache");
    assert_eq!(
        c.get_features(VOLATILE_WRITE_CACHE, 0, 0).expect("get vwc"),
        0
    );
    c.set_features(KEEP_ALIVE_TIMER, 0, 20_000, false)
        .expect("set kato");
    assert_eq!(
        c.get_features(KEEP_ALIVE_TIMER, 0, 0).expect("get kato"),
        20_000
    );
    expect_status(
        c.set_features(KEEP_ALIVE_TIMER, 0, 20_000, true),
        Status::FEATURE_NOT_SAVEABLE,
    );
    expect_status(c.get_features(0x7A, 0, 0), Status::INVALID_FIELD);
    // Writes still work with the cache disabled (they become FUA).
    c.write(1, 1, 8, &pattern(8, 8, 512, 3), false)
        .expect("write");
    t.stop();
}

#[test]
fn subsystems_are_reachable_only_through_their_listeners() {
    let port_a = free_port();
    let port_b = free_port();
    let other = "nqn.2026-01.io.ferrite:other";
    let config = format!(
        r#"{}
[[subsystem]]
nqn = "{other}"
allow_any_host = true
listen = ["127.0.0.1:{port_b}"]
namespaces = [{{ nsid = 1, bdev = "ram1" }}]
[[bdev]]
name = "ram1"
kind = "malloc"
size = "8MiB"
"#,
        ram_config(port_a, &[]).replace(
            &format!(r#"listen = ["127.0.0.1:{port_a}"]"#),
            &format!(r#"listen = ["127.0.0.1:{port_a}", "127.0.0.1:{port_b}"]"#)
        )
    );
    let t = Ferrited::start(&config);
    let b: std::net::SocketAddr = ([127, 0, 0, 1], port_b).into();
    // Start-up waits for the first port only; the second opens right after it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(b).is_err() {
        assert!(std::time::Instant::now() < deadline, "port b never opened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The default subsystem listens everywhere (no per-subsystem list): both ports.
    let mut opts = ConnectOptions::new(b, NQN);
    opts.io_queues = 0;
    Controller::connect(opts)
        .expect("default subsystem on port b")
        .disconnect();
    // "other" listens only on port b: refused on port a, listed only for port b.
    let mut opts = ConnectOptions::new(t.addr, other);
    opts.io_queues = 0;
    match Controller::connect(opts) {
        Err(HostError::ConnectRejected { status, .. }) => {
            assert_eq!(status.code(), Status::CONNECT_INVALID_PARAMETERS.code())
        }
        other => panic!("expected a refusal on the wrong port, got {other:?}"),
    }
    let on_a = Controller::discover(t.addr).expect("discovery on a");
    assert!(on_a
        .iter()
        .all(|e| e.subnqn != other || e.trsvcid.trim() != port_a.to_string()));
    assert!(on_a
        .iter()
        .any(|e| e.subnqn == other && e.trsvcid.trim() == port_b.to_string()));
    let mut opts = ConnectOptions::new(b, other);
    opts.io_queues = 1;
    let mut c = Controller::connect(opts).expect("other on port b");
    c.write(1, 1, 0, &pattern(0, 8, 4096, 1), false)
        .expect("write");
    t.stop();
}
