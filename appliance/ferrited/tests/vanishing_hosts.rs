//! Hosts that vanish mid-I/O without a Disconnect: their sockets reset, closed, or silent until
//! the keep-alive timer (KATO 1 s) fires. Each time the target must destroy the controller, free
//! its connections and serve a fresh connection; over 50 rounds its memory must stay flat. A
//! well-behaved host on another subsystem does verified I/O throughout.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, pattern, shared_config, Ferrited, GoodHost};
use ferrite_host::controller::uuid_hostnqn;
use ferrite_host::{Controller, Data, RawConnection};
use ferrite_nvme::command::opcode;
use ferrite_nvme::fabrics::ConnectCommand;
use ferrite_nvme::io::ReadWrite;
use ferrite_nvme::tcp::Digests;
use ferrite_nvme::Command;

/// Rounds by default; FERRITE_VANISH_ROUNDS overrides it for longer runs.
const ROUNDS: usize = 50;
/// Rounds before the memory baseline is taken (pools and allocator warmed up).
const WARM_UP: usize = 5;
/// Allowed VmRSS growth from the baseline to the end.
const RSS_SLACK_KIB: u64 = 16 * 1024;
const KATO_MS: u32 = 1000;
/// How long the target may take to notice: KATO plus housekeeping, with room for a busy machine.
const NOTICE: Duration = Duration::from_millis(2500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vanish {
    /// The host closes with responses unread in its receive buffers: the kernel sends RST.
    Reset,
    /// The host drops its sockets with commands in flight, one capsule cut in half.
    Drop,
    /// The host stops talking but keeps its sockets: only the keep-alive timer notices.
    Freeze,
}

fn mode(round: usize) -> Vanish {
    match round % 10 {
        9 => Vanish::Freeze,
        r if r % 2 == 0 => Vanish::Reset,
        _ => Vanish::Drop,
    }
}

fn host_uuid(round: usize) -> [u8; 16] {
    let mut u = [0x40u8; 16];
    u[14..].copy_from_slice(&(round as u16).to_be_bytes());
    u
}

/// Connects a host with KATO 1 s and two I/O queues and leaves commands outstanding on every
/// queue. Returns the controller and the number of connections it holds.
fn busy_host(t: &Ferrited, round: usize) -> (Controller, usize) {
    let mut opts = t.options().with_host_uuid(host_uuid(round));
    opts.kato_ms = KATO_MS;
    opts.io_queues = 2;
    let mut c = Controller::connect(opts).expect("vanishing host connects");
    let base = (round % 30) as u64 * 4096;
    let write = vec![0x5Au8; 32 * 1024];
    for qid in 1..=2u16 {
        let qp = c.io_queue(qid).expect("I/O queue");
        for k in 0..4u64 {
            let lba = base + (qid as u64 * 4 + k) * 64;
            let rw = ReadWrite {
                nsid: 1,
                slba: lba,
                nlb: 63,
                ..ReadWrite::default()
            };
            // 32 KiB writes go through R2T; 32 KiB reads come back as C2HData.
            qp.submit(&rw.to_command(opcode::io::WRITE, 0), Data::Write(&write))
                .expect("submit write");
            qp.submit(&rw.to_command(opcode::io::READ, 0), Data::Read(32 * 1024))
                .expect("submit read");
        }
        qp.flush().expect("flush");
    }
    let admin = c.admin_queue();
    admin
        .submit(&Command::new(opcode::admin::KEEP_ALIVE, 0), Data::None)
        .expect("submit keep alive");
    admin.flush().expect("flush");
    (c, 3)
}

/// A raw connection that sends half of a Connect capsule and then nothing.
fn half_capsule(t: &Ferrited, round: usize) -> RawConnection {
    let mut r = RawConnection::connect(t.addr, Duration::from_secs(5)).expect("connect");
    r.handshake(Digests::default(), Duration::from_secs(5))
        .expect("ICResp");
    let cmd = ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato: KATO_MS,
    }
    .to_command(0);
    let mut data = vec![0u8; 1024];
    data[..16].copy_from_slice(&host_uuid(round));
    let pdu = r.capsule_bytes(&cmd, &data).expect("capsule");
    r.send(&pdu[..pdu.len() / 2]).expect("send");
    r
}

/// A new host on the same host NQN: verified I/O, then its sockets close. 2 connections.
fn fresh_host(t: &Ferrited, round: usize) {
    let mut opts = t.options().with_host_uuid(host_uuid(round));
    opts.kato_ms = KATO_MS;
    let mut c = Controller::connect(opts).unwrap_or_else(|e| {
        panic!(
            "round {round}: a fresh connection after a vanished host: {e}\nlog:\n{}",
            t.log_text()
        )
    });
    let lba = (round % 30) as u64 * 4096 + 2048;
    for blocks in [8usize, 64] {
        let data = pattern(lba, blocks, 512, round as u64);
        c.write(1, 1, lba, &data, false).expect("fresh write");
        let mut back = vec![0u8; data.len()];
        c.read(1, 1, lba, blocks as u32, &mut back)
            .expect("fresh read");
        assert!(
            back == data,
            "round {round}: fresh host reads what it wrote"
        );
    }
    c.disconnect();
}

/// Writes every block of both RAM namespaces once, so their memory is in the RSS baseline: the
/// RAM backend asks for transparent huge pages, so a first write to a fresh region maps 2 MiB.
fn prefill(t: &Ferrited) {
    let data = vec![0x5Au8; 128 * 1024];
    let namespaces = [
        (t.options().with_host_uuid([0xEE; 16]), 64u64),
        (t.good_options(), 16u64),
    ];
    for (opts, mib) in namespaces {
        let mut c = Controller::connect(opts).expect("connect to prefill");
        for chunk in 0..mib * 8 {
            c.write(1, 1, chunk * 256, &data, false).expect("prefill");
        }
        c.disconnect();
    }
}

#[test]
fn vanished_hosts_are_cleaned_up_and_memory_stays_flat() {
    let mut t = Ferrited::start(&shared_config(free_port()));
    prefill(&t);
    // The readiness probe and the two prefill controllers (admin + one I/O queue each).
    assert!(t.wait_log("connection closed", 5, NOTICE));
    let good = GoodHost::start(&t);
    let hostnqn_prefix = uuid_hostnqn(&host_uuid(0));
    let hostnqn_prefix = &hostnqn_prefix[..hostnqn_prefix.len() - 4];
    let mut connections = t.count_log("connection closed");
    let mut controllers = 0usize;
    let mut freezes = 0usize;
    let mut baseline = None;
    let rounds = std::env::var("FERRITE_VANISH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > WARM_UP)
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        let how = mode(round);
        let (c, n) = busy_host(&t, round);
        connections += n;
        controllers += 1;
        let started = Instant::now();
        match how {
            Vanish::Reset => {
                // Let responses land unread, so closing resets the connections.
                std::thread::sleep(Duration::from_millis(20));
                drop(c);
            }
            Vanish::Drop => {
                let half = half_capsule(&t, round);
                connections += 1;
                drop(c);
                drop(half);
            }
            Vanish::Freeze => {
                freezes += 1;
                assert!(
                    t.wait_log("keep-alive timeout expired", freezes, NOTICE),
                    "round {round}: keep-alive timeout not enforced; log:\n{}",
                    t.log_text()
                );
                drop(c);
            }
        }
        assert!(
            t.wait_log("destroyed", controllers, NOTICE),
            "round {round} ({how:?}): controller not destroyed within {NOTICE:?}; log:\n{}",
            t.log_text()
        );
        let noticed = started.elapsed();
        if how != Vanish::Freeze {
            assert!(
                noticed < Duration::from_millis(1000),
                "round {round} ({how:?}): a dead socket should be noticed before KATO, took {noticed:?}"
            );
        }
        fresh_host(&t, round);
        connections += 2;
        controllers += 1;
        assert!(
            t.wait_log("destroyed", controllers, NOTICE),
            "round {round}: the fresh host's controller not destroyed"
        );
        good.check(&mut t, &format!("round {round} ({how:?})"));
        if round + 1 == WARM_UP {
            baseline = Some(t.rss_kib());
        }
    }
    assert!(
        t.wait_log("connection closed", connections, NOTICE),
        "expected {connections} closed connections, log has {}",
        t.count_log("connection closed")
    );
    let log = t.log_text();
    assert_eq!(
        t.count_log("connection closed"),
        connections,
        "every connection of the vanished and fresh hosts closed, and only those"
    );
    // The two prefill controllers went too.
    assert_eq!(t.count_log("destroyed"), controllers + 2);
    assert_eq!(t.count_log("keep-alive timeout expired"), freezes);
    assert!(
        log.lines()
            .filter(|l| l.contains("connection closed") && l.contains("reset"))
            .count()
            >= 1,
        "some connections were reset by the host"
    );
    let destroyed_hosts = log
        .lines()
        .filter(|l| l.contains("destroyed") && l.contains(hostnqn_prefix))
        .count();
    assert_eq!(
        destroyed_hosts, controllers,
        "only the vanishing hosts' controllers went"
    );
    let end = t.rss_kib();
    let baseline = baseline.expect("baseline taken");
    eprintln!("ferrited VmRSS: {baseline} KiB after {WARM_UP} rounds, {end} KiB after {rounds}");
    assert!(
        end <= baseline + RSS_SLACK_KIB,
        "VmRSS grew from {baseline} KiB to {end} KiB over {} rounds",
        rounds - WARM_UP
    );
    let ops = good.stop();
    assert!(ops > 0);
    t.stop();
}
