//! Replication journals through a real `ferrited` and `ferritectl`: a volume exported through
//! `<volume>@journal` journals every host write before it completes; the records are pulled
//! back over the stream endpoint in order with their data, trimmed, and everything survives a
//! `--state-dir` restart. Refusals name the problem.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrite_gateway_protocol::{
    decode, DomainId, GroupId, Hello, JournalPull, JournalTrim, Message, NodeId, RecordOp, Role,
    SeqNo,
};
use ferrite_host::{ConnectOptions, Controller};
use serde_json::json;

mod common;

use common::{free_port, pattern, start_with_config, CtlDaemon};

const NQN: &str = "nqn.2026-01.io.ferrite:repl";
const BS: usize = 512;

fn config(dir: &Path, port: u16) -> String {
    format!(
        r#"cores = "0,1"
listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "f0"
kind = "file"
path = "{}"
size = "64MiB"
block_size = 512
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
"#,
        dir.join("f0.img").display()
    )
}

/// A record as pulled: (seq, op, nsid, slba, nblocks, data).
type Pulled = (u64, RecordOp, u32, u64, u32, Vec<u8>);

struct Stream {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Stream {
    fn connect(path: &Path) -> Stream {
        let mut s = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("journal endpoint {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut v = Vec::new();
        Message::Hello(Hello {
            role: Role::Primary,
            min_version: 1,
            max_version: 1,
            node: NodeId(1),
            nonce: [0; 32],
        })
        .encode_to_vec(&mut v)
        .expect("hello");
        s.write_all(&v).expect("send hello");
        let mut st = Stream { s, buf: Vec::new() };
        let (kinds, _) = st.until_status_or_refuse(true);
        assert_eq!(kinds, vec!["Hello".to_string()]);
        st
    }

    fn send(&mut self, m: Message<'_>) {
        let mut v = Vec::new();
        m.encode_to_vec(&mut v).expect("encode");
        self.s.write_all(&v).expect("send");
    }

    /// Reads frames until a JournalStatus or Refuse (or the Hello when `hello`).
    fn until_status_or_refuse(&mut self, hello: bool) -> (Vec<String>, Vec<Pulled>) {
        let mut kinds = Vec::new();
        let mut recs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            while let Some((m, n)) = decode(&self.buf).expect("valid frames") {
                let stop = matches!(m, Message::JournalStatus(_) | Message::Refuse(_))
                    || (hello && matches!(m, Message::Hello(_)));
                match m {
                    Message::Record(r) => recs.push((
                        r.header.seq.0,
                        r.header.op,
                        r.header.nsid.0,
                        r.header.slba,
                        r.header.nblocks,
                        r.data.to_vec(),
                    )),
                    Message::Refuse(r) => kinds.push(format!("refuse: {}", r.reason)),
                    Message::JournalStatus(s) => {
                        kinds.push(format!("status {}..{}", s.tail_seq, s.head_seq))
                    }
                    other => kinds.push(format!("{:?}", other.kind())),
                }
                self.buf.drain(..n);
                if stop {
                    return (kinds, recs);
                }
            }
            assert!(Instant::now() < deadline, "endpoint silent: {kinds:?}");
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk).expect("read endpoint");
            assert!(n > 0, "endpoint closed: {kinds:?}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn pull(&mut self, from: u64, max: u32) -> (Vec<String>, Vec<Pulled>) {
        self.send(Message::JournalPull(JournalPull {
            group: GroupId(1),
            domain: DomainId(1),
            from_seq: SeqNo(from),
            max_records: max,
        }));
        self.until_status_or_refuse(false)
    }
}

fn endpoint(d: &CtlDaemon) -> PathBuf {
    let mut s = d.socket.clone().into_os_string();
    s.push(".journal");
    PathBuf::from(s)
}

fn connect(d: &CtlDaemon) -> Controller {
    let mut opts = ConnectOptions::new(d.addr, NQN);
    opts.io_queues = 1;
    // Sync writes wait for the (test's) secondary: on a loaded machine a journal trim's
    // synchronous superblock write can stall the acknowledgements for seconds.
    opts.timeout = Duration::from_secs(60);
    opts.kato_ms = 0;
    Controller::connect(opts).unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_text()))
}

/// A daemon with a state directory, pool p0 on f0 and its volume v1.
fn start_with_pool(dir: &Path) -> (CtlDaemon, u16, PathBuf) {
    let state = dir.join("state");
    let port = free_port();
    let d = start_with_config(
        dir,
        &config(dir, port),
        port,
        &["--state-dir", state.to_str().expect("utf-8")],
    );
    d.ok(&["pool", "create", "p0", "f0", "--cluster-size", "64KiB"]);
    d.ok(&["volume", "create", "p0", "v1", "8MiB"]);
    (d, port, state)
}

#[test]
fn host_writes_are_journaled_pulled_in_order_trimmed_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, port, state) = start_with_pool(dir.path());
    let state_arg = state.to_str().expect("utf-8");
    d.ok(&["volume", "create", "p0", "v2", "8MiB"]);
    d.fails(
        &["journal", "create", "1", "p0", "4MiB", "--slot-size", "64K"],
        &["slot_size 65536 must be from 128 KiB"],
    );
    let j = d.json(&["journal", "create", "1", "p0", "4MiB"]);
    assert_eq!(j["volume"], "p0/journal-g1");
    assert!(j["slots"].as_u64().expect("slots") >= 8, "{j}");
    assert_eq!(
        d.ok(&["journal", "attach", "1", "p0/v1", "1"]).trim(),
        "p0/v1@journal"
    );
    d.ok(&["journal", "attach", "1", "p0/v2", "2"]);

    // Refusals.
    d.fails(
        &["journal", "create", "1", "p0", "4MiB"],
        &["group 1 already has a journal"],
    );
    d.fails(
        &["journal", "create", "2", "nopool", "4MiB"],
        &["no pool nopool"],
    );
    d.fails(&["journal", "create", "3", "p0", "16K"], &["too small"]);
    d.fails(
        &["journal", "attach", "9", "p0/v1", "1"],
        &["journaled in group 1"],
    );
    d.fails(
        &["journal", "attach", "9", "f0", "1"],
        &["group 9 has no journal"],
    );
    d.fails(
        &["journal", "attach", "1", "nobdev", "3"],
        &["no bdev nobdev"],
    );
    d.fails(
        &["journal", "attach", "1", "f0", "2"],
        &["already has namespace 2"],
    );
    d.fails(&["journal", "delete", "1"], &["still journals bdev p0/v1"]);
    d.fails(&["journal", "detach", "p0/v1"], &["not a journaled bdev"]);
    assert!(d
        .call(
            "journal_attach",
            json!({"group": 1, "bdev": "p0/v1", "nsid": 0})
        )
        .is_err());

    d.ok(&["ns", "add", NQN, "p0/v1@journal", "--nsid", "1"]);
    d.ok(&["ns", "add", NQN, "p0/v2@journal", "--nsid", "2"]);
    d.fails(
        &["journal", "detach", "p0/v1@journal"],
        &["exported by subsystem"],
    );

    let mut c = connect(&d);
    let writes: Vec<(u32, u64, usize)> = vec![
        (1, 0, 8),
        (2, 100, 1),
        (1, 7, 2),
        (2, 100, 16),
        (1, 4000, 128),
    ];
    for (i, &(nsid, lba, blocks)) in writes.iter().enumerate() {
        c.write(1, nsid, lba, &pattern(lba, blocks, BS, i as u64 + 1), false)
            .unwrap_or_else(|e| panic!("write: {e}"));
    }
    c.write_zeroes(1, 2, 500, 64, false).expect("write zeroes");
    let list = d.json(&["journal", "list"]);
    assert_eq!(list[0]["committed_seq"], 6, "{list}");

    let mut st = Stream::connect(&endpoint(&d));
    let (kinds, recs) = st.pull(1, 4);
    assert_eq!(kinds, vec!["Heartbeat", "status 0..6"]);
    assert_eq!(recs.len(), 4);
    let (kinds, more) = st.pull(5, 100);
    assert_eq!(kinds, vec!["Heartbeat", "status 0..6"]);
    let all: Vec<Pulled> = recs.into_iter().chain(more).collect();
    for (i, &(nsid, lba, blocks)) in writes.iter().enumerate() {
        let r = &all[i];
        assert_eq!(
            (r.0, r.1, r.2, r.3, r.4 as usize),
            (i as u64 + 1, RecordOp::Write, nsid, lba, blocks)
        );
        assert!(
            r.5 == pattern(lba, blocks, BS, i as u64 + 1),
            "record {} data",
            i + 1
        );
    }
    assert_eq!(
        (all[5].1, all[5].2, all[5].3, all[5].4),
        (RecordOp::WriteZeroes, 2, 500, 64)
    );
    st.send(Message::JournalTrim(JournalTrim {
        group: GroupId(1),
        domain: DomainId(1),
        up_to_seq: SeqNo(3),
    }));
    assert_eq!(st.until_status_or_refuse(false).0, vec!["status 3..6"]);
    let (kinds, _) = st.pull(2, 1);
    assert!(kinds[0].contains("trimmed up to 3"), "{kinds:?}");
    drop(c);
    d.stop();

    // Restart from the state directory: journals before the namespaces that export them.
    let d = CtlDaemon::start(dir.path(), port, &["--state-dir", state_arg]);
    let list = d.json(&["journal", "list"]);
    assert_eq!(
        (
            list[0]["trimmed_seq"].as_u64(),
            list[0]["committed_seq"].as_u64()
        ),
        (Some(3), Some(6)),
        "{list}"
    );
    assert_eq!(list[0]["namespaces"].as_array().map(Vec::len), Some(2));
    let mut st = Stream::connect(&endpoint(&d));
    let (_, recs) = st.pull(4, 10);
    assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert!(recs[1].5 == pattern(4000, 128, BS, 5));
    let mut c = connect(&d);
    c.write(1, 1, 9, &pattern(9, 1, BS, 77), false)
        .expect("write after restart");
    let (_, recs) = st.pull(7, 10);
    assert_eq!((recs[0].0, recs[0].3), (7, 9));
    drop(c);
    d.ok(&["ns", "remove", NQN, "1"]);
    d.ok(&["journal", "detach", "p0/v1@journal"]);
    d.fails(&["journal", "delete", "1"], &["still journals bdev p0/v2"]);
    d.stop();
}

/// Pulls and trims everything committed (what the primary replicator does when the secondary
/// acknowledges at once) until `stop`.
fn acker(path: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let mut st = Stream::connect(&path);
    let mut next = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (_, recs) = st.pull(next, 64);
        if let Some(last) = recs.last() {
            next = last.0 + 1;
            st.send(Message::JournalTrim(JournalTrim {
                group: GroupId(1),
                domain: DomainId(1),
                up_to_seq: SeqNo(last.0),
            }));
            st.until_status_or_refuse(false);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn replication_pairs_set_sync_mode_pause_report_lag_and_persist() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, port, state) = start_with_pool(dir.path());
    let state_arg = state.to_str().expect("utf-8");
    d.fails(&["replication", "create", "1"], &["group 1 has no journal"]);
    d.ok(&["journal", "create", "1", "p0", "4MiB"]);
    d.ok(&["journal", "attach", "1", "p0/v1", "1"]);
    d.ok(&["ns", "add", NQN, "p0/v1@journal", "--nsid", "1"]);
    d.fails(
        &["replication", "create", "1", "--mode", "semi"],
        &["mode \"semi\" must be"],
    );
    d.fails(
        &["replication", "create", "1", "--link-policy", "x"],
        &["link_policy \"x\" must be"],
    );
    d.fails(&["replication", "status", "1"], &["not a replication pair"]);
    let s = d.json(&[
        "replication",
        "create",
        "1",
        "--mode",
        "sync",
        "--sync-timeout-ms",
        "300",
    ]);
    assert_eq!(
        (s["state"].as_str(), s["sync_state"].as_str()),
        (Some("replicating"), Some("sync")),
        "{s}"
    );
    d.fails(
        &["replication", "create", "1"],
        &["already a replication pair"],
    );
    d.fails(&["journal", "delete", "1"], &["replication pair"]);

    // Sync, fail policy, nobody acknowledges: the host's write fails after the timeout.
    let mut c = connect(&d);
    let t = Instant::now();
    assert!(c.write(1, 1, 0, &pattern(0, 1, BS, 1), false).is_err());
    assert!(t.elapsed() >= Duration::from_millis(300));
    let s = &d.json(&["replication", "status", "1"])[0];
    assert_eq!(
        (s["sync"]["timeouts"].as_u64(), s["sync_state"].as_str()),
        (Some(1), Some("sync")),
        "{s}"
    );

    // With a secondary acknowledging, sync writes complete (a long timeout: a loaded machine
    // may starve the acknowledging thread).
    d.ok(&[
        "replication",
        "set-mode",
        "1",
        "--mode",
        "sync",
        "--sync-timeout-ms",
        "20000",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let a = {
        let (p, stop) = (endpoint(&d), Arc::clone(&stop));
        std::thread::spawn(move || acker(p, stop))
    };
    for i in 0..5 {
        let t = Instant::now();
        c.write(1, 1, i, &pattern(i, 1, BS, i + 2), false)
            .expect("acknowledged sync write");
        eprintln!("sync write {i}: {:?}", t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    a.join().expect("acker");
    let s = &d.json(&["replication", "status", "1"])[0];
    assert_eq!(
        (s["lag_records"].as_u64(), s["lag_seconds"].as_f64()),
        (Some(0), Some(0.0)),
        "{s}"
    );
    assert!(s["sync"]["waits"].as_u64() >= Some(5), "{s}");

    // Paused and async: writes complete, nothing ships, the lag shows.
    d.ok(&["replication", "pause", "1"]);
    d.ok(&["replication", "set-mode", "1", "--mode", "async"]);
    c.write(1, 1, 10, &pattern(10, 4, BS, 9), false)
        .expect("async write");
    let mut st = Stream::connect(&endpoint(&d));
    assert!(
        st.pull(0, 10).1.is_empty(),
        "a paused journal ships nothing"
    );
    let s = &d.json(&["replication", "status", "1"])[0];
    assert_eq!(
        (
            s["state"].as_str(),
            s["lag_records"].as_u64(),
            s["lag_bytes"].as_u64()
        ),
        (Some("paused"), Some(1), Some(4 * BS as u64)),
        "{s}"
    );
    assert!(s["lag_seconds"].as_f64().is_some_and(|x| x >= 0.0), "{s}");
    let stats = d.json(&["stats", "--interval", "0"]);
    let r = &stats["replication"][0];
    assert_eq!(
        (r["group"].as_u64(), r["state"].as_str()),
        (Some(1), Some("paused")),
        "{stats}"
    );
    d.ok(&["replication", "resume", "1"]);
    let (_, recs) = st.pull(0, 10);
    assert_eq!(recs.last().map(|r| (r.3, r.4)), Some((10, 4)));
    drop(st);

    // Sync with degrade: the unacknowledged write completes after the timeout, degraded.
    d.ok(&[
        "replication",
        "set-mode",
        "1",
        "--mode",
        "sync",
        "--link-policy",
        "degrade",
        "--sync-timeout-ms",
        "200",
    ]);
    // The backlog of one record is within the catch-up slack: sync at once.
    c.write(1, 1, 20, &pattern(20, 1, BS, 30), false)
        .expect("degraded write");
    let s = &d.json(&["replication", "status", "1"])[0];
    assert_eq!(
        (s["state"].as_str(), s["sync"]["degrades"].as_u64()),
        (Some("degraded"), Some(1)),
        "{s}"
    );
    drop(c);
    d.stop();

    // The pair survives a restart.
    let d = CtlDaemon::start(dir.path(), port, &["--state-dir", state_arg]);
    let s = &d.json(&["replication", "status", "1"])[0];
    assert_eq!(
        (
            s["mode"].as_str(),
            s["link_policy"].as_str(),
            s["sync_timeout_ms"].as_u64()
        ),
        (Some("sync"), Some("degrade"), Some(200)),
        "{s}"
    );
    // set-mode changes only what it is given.
    let settings = |args: &[&str]| {
        let s = d.json(&[&["replication", "set-mode", "1"], args].concat());
        (
            s["mode"].as_str().map(String::from),
            s["link_policy"].as_str().map(String::from),
            s["sync_timeout_ms"].as_u64(),
            s["rpo_s"].as_u64(),
        )
    };
    let some = |x: &str| Some(x.to_string());
    assert_eq!(
        settings(&["--rpo-s", "30"]),
        (some("sync"), some("degrade"), Some(200), Some(30))
    );
    assert_eq!(
        settings(&["--mode", "async"]),
        (some("async"), some("degrade"), Some(200), Some(30))
    );
    d.fails(&["replication", "set-mode", "1"], &["at least one of mode"]);
    d.fails(
        &["replication", "set-mode", "1", "--link-policy", "retry"],
        &["link_policy \"retry\""],
    );
    let s = &d.json(&["replication", "status", "1"])[0];
    assert_eq!(
        s["link_policy"].as_str(),
        Some("degrade"),
        "a refused change changes nothing: {s}"
    );
    d.ok(&["replication", "delete", "1"]);
    d.fails(&["replication", "status", "1"], &["not a replication pair"]);
    d.stop();
}
