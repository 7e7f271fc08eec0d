//! Preempt and Abort over NVMe/TCP against an in-process daemon: a preempted host's command
//! still outstanding on the namespace (held by a `delay` bdev) completes with Command Aborted
//! due to Preempt and Abort, while a plain Preempt lets the victim's outstanding command finish.

mod common;

use std::path::Path;
use std::time::Duration;

use common::free_port;
use ferrite_daemon::{Config, Daemon, DaemonOptions, RpcSocket};
use ferrite_host::{ConnectOptions, Controller, IoData};
use ferrite_nvme::command::opcode::io as iop;
use ferrite_nvme::{Command, Status};

const NQN: &str = "nqn.2026-01.io.ferrite:preempt-abort";
/// Every I/O takes this long in the `delay` bdev: the window the preemption lands in.
const HOLD_US: u64 = 1_500_000;

fn config(port: u16) -> Config {
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

fn connect(port: u16, host: u8) -> Controller {
    let mut opts =
        ConnectOptions::new(([127, 0, 0, 1], port).into(), NQN).with_host_uuid([host; 16]);
    opts.io_queues = 1;
    Controller::connect(opts).expect("connect")
}

fn io(c: &mut Controller, opcode: u8, data: IoData<'_>) -> Status {
    let mut cmd = Command::new(opcode, 0);
    cmd.nsid.set(1);
    c.raw_io(1, &cmd, data).expect("completion").status()
}

/// A Register (0Dh) or Acquire (11h) with its two keys.
fn resv(c: &mut Controller, opcode: u8, cdw10: u32, k1: u64, k2: u64) -> Status {
    let mut data = k1.to_le_bytes().to_vec();
    data.extend_from_slice(&k2.to_le_bytes());
    io_with(c, opcode, cdw10, &data)
}

fn io_with(c: &mut Controller, opcode: u8, cdw10: u32, data: &[u8]) -> Status {
    let mut cmd = Command::new(opcode, 0);
    cmd.nsid.set(1);
    cmd.cdw10.set(cdw10);
    c.raw_io(1, &cmd, IoData::Write(data))
        .expect("completion")
        .status()
}

const REGISTER: u8 = 0x0D;
const ACQUIRE: u8 = 0x11;
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

fn write(c: &mut Controller) -> Status {
    io(c, iop::WRITE, IoData::Write(&[0x5A; 4096]))
}

fn read(c: &mut Controller) -> Status {
    let mut buf = vec![0u8; 4096];
    io(c, iop::READ, IoData::Read(&mut buf))
}

#[test]
fn preempt_and_abort_aborts_the_victims_outstanding_commands() {
    let port = free_port();
    let d = Daemon::start_with(
        &config(port),
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
    let (st, mut a) = preempt_during(a, write, &mut b, |b| {
        resv(b, ACQUIRE, WRITE_EXCLUSIVE | PREEMPT_AND_ABORT, 0xB, 0xA)
    });
    assert_eq!(st, Status::ABORTED_PREEMPT, "A's outstanding write");
    // A is no longer registered: its new writes conflict; its reads (allowed to others under
    // Write Exclusive) started after the preemption are not aborted.
    assert_eq!(write(&mut a), Status::RESERVATION_CONFLICT);
    assert_eq!(read(&mut a), Status::SUCCESS);
    assert_eq!(write(&mut b), Status::SUCCESS, "B holds the reservation");

    // A plain Preempt does not abort: A registers again, and its read in the delay bdev
    // completes normally while B preempts A's registration.
    assert_eq!(resv(&mut a, REGISTER, 0, 0, 0xA2), Status::SUCCESS);
    let (st, a) = preempt_during(a, read, &mut b, |b| {
        resv(b, ACQUIRE, WRITE_EXCLUSIVE | PREEMPT, 0xB, 0xA2)
    });
    assert_eq!(st, Status::SUCCESS, "a plain Preempt lets the read finish");

    a.disconnect();
    b.disconnect();
    d.shutdown().expect("shutdown");
}
