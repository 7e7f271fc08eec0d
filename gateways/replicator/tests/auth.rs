//! The sealed replicator link against a real secondary `ferrite-replicator` (with a real
//! secondary `ferrited` behind it): the test plays the primary over TCP. A peer with the wrong
//! key, a peer speaking in the clear, a replayed recording of an accepted connection and a
//! truncated record are all refused and nothing of theirs is applied; the right key gets its
//! record applied and acknowledged.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferrite_gateway_protocol::{
    decode, DomainId, Epoch, GroupId, Heartbeat, Hello, Message, NodeId, Nsid, Record,
    RecordHeader, RecordOp, Role, SeqNo, Timestamp,
};
use ferrite_link_crypto::{fresh_nonce, Psk, Session, Side};
use serde_json::json;

mod common;

use common::{controller, ferrited, port, replicator, rpc, status, wait_for};

const NQN: &str = "nqn.2026-01.io.ferrite:auth-secondary";
const KEY: [u8; 32] = [0x5a; 32];

fn frame(m: &Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode_to_vec(&mut v).expect("encode");
    v
}

/// Connects, exchanges Hellos, returns the stream, the session under `key` (if any) and the
/// bytes the secondary sent after its Hello so far.
fn open(addr: u16, key: Option<[u8; 32]>) -> (TcpStream, Option<Session>) {
    let mut s = TcpStream::connect(("127.0.0.1", addr)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let np = fresh_nonce();
    s.write_all(&frame(&Message::Hello(Hello {
        role: Role::Primary,
        min_version: 1,
        max_version: 1,
        node: NodeId(0),
        nonce: np,
    })))
    .expect("hello");
    let mut buf = Vec::new();
    let ns = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).expect("read hello");
        assert!(n > 0, "closed before its Hello");
        buf.extend_from_slice(&chunk[..n]);
        if let Some((Message::Hello(h), _)) = decode(&buf).expect("frames") {
            break h.nonce;
        }
    };
    let session = key.map(|k| Session::new(&Psk::from_bytes(k), Side::Primary, &np, &ns));
    (s, session)
}

fn record(seq: u64, byte: u8) -> Vec<u8> {
    let data = vec![byte; 512];
    let mut v = frame(&Message::Record(Record {
        header: RecordHeader {
            group: GroupId(1),
            domain: DomainId(1),
            epoch: Epoch(1),
            seq: SeqNo(seq),
            ts: Timestamp(1_000 + seq),
            nsid: Nsid(1),
            slba: seq,
            nblocks: 1,
            op: RecordOp::Write,
        },
        data: &data,
    }));
    v.extend(frame(&Message::Heartbeat(Heartbeat {
        group: GroupId(1),
        domain: DomainId(1),
        epoch: Epoch(1),
        ts: Timestamp(1_000 + seq),
        last_seq: SeqNo(seq),
    })));
    v
}

/// Sends `bytes` sealed frame by frame (or in the clear without a session).
fn send(s: &mut TcpStream, session: Option<&mut Session>, plain: &[u8]) -> Vec<u8> {
    let wire = match session {
        Some(sess) => {
            let mut out = Vec::new();
            let mut off = 0;
            while let Ok(Some(n)) = ferrite_gateway_protocol::frame_len(&plain[off..]) {
                sess.seal(&plain[off..off + n], &mut out).expect("seal");
                off += n;
            }
            out
        }
        None => plain.to_vec(),
    };
    let _ = s.write_all(&wire);
    wire
}

/// Waits for the secondary to close the connection.
fn closed(s: &mut TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

#[test]
fn the_sealed_link_refuses_wrong_keys_clear_text_replays_and_truncation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let sport = port();
    let (_sd, ssock) = ferrited(dir, "secondary", sport, &format!("[[bdev]]\nname = \"n0\"\nkind = \"malloc\"\nsize = \"16MiB\"\nblock_size = 512\n[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n"));
    rpc(
        &ssock,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "n0", "nsid": 1}}),
    );
    let key_file = dir.join("link.key");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, hex).expect("key");
    let (rport, st) = (port(), dir.join("sec.status"));
    let _sec = replicator(
        dir,
        "sec-repl",
        &format!(
            "role = \"secondary\"\ngroup = 1\nlisten = \"127.0.0.1:{rport}\"\ntarget = \"127.0.0.1:{sport}\"\nnqn = \"{NQN}\"\nstate_file = \"{}\"\nstatus_socket = \"{}\"\npsk_file = \"{}\"\n",
            dir.join("sec.state").display(),
            st.display(),
            key_file.display()
        ),
    );
    wait_for(
        "the secondary replicator",
        || TcpStream::connect(("127.0.0.1", rport)).is_ok() && status(&st).is_some(),
        30,
    );
    let field = |k: &str| status(&st).and_then(|s| s[k].as_u64()).unwrap_or(0);
    assert_eq!(status(&st).expect("status")["sealed"], true);

    // Wrong key.
    let (mut s, mut sess) = open(rport, Some([0x11; 32]));
    send(&mut s, sess.as_mut(), &record(1, 0xee));
    assert!(closed(&mut s), "a peer with the wrong key stays connected");
    wait_for("one auth failure", || field("auth_failures") == 1, 10);
    // In the clear.
    let (mut s, _) = open(rport, None);
    send(&mut s, None, &record(1, 0xee));
    assert!(closed(&mut s), "a peer in the clear stays connected");
    wait_for("two auth failures", || field("auth_failures") == 2, 10);
    // Truncated: half a sealed record, then the connection ends.
    let (mut s, mut sess) = open(rport, Some(KEY));
    let mut half = Vec::new();
    sess.as_mut()
        .expect("session")
        .seal(&record(1, 0xee), &mut half)
        .expect("seal");
    s.write_all(&half[..half.len() / 2]).expect("half");
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(field("applied"), 0, "nothing of a refused peer is applied");

    // The right key: applied and acknowledged.
    let (mut s, mut sess) = open(rport, Some(KEY));
    let recorded = send(&mut s, sess.as_mut(), &record(1, 0xab));
    wait_for("record 1 applied", || field("applied") == 1, 30);
    drop(s);
    let mut c = controller(sport, NQN);
    let mut b = vec![0u8; 512];
    c.read(1, 1, 1, 1, &mut b).expect("read");
    assert!(b.iter().all(|&x| x == 0xab), "the record's data is applied");

    // Replay of that connection's bytes on a new connection: refused.
    let (mut s, _) = open(rport, None);
    let _ = s.write_all(&recorded);
    assert!(closed(&mut s), "a replay stays connected");
    wait_for("three auth failures", || field("auth_failures") == 3, 10);
    assert_eq!(field("applied"), 1);
    assert_eq!(
        field("received"),
        1,
        "only the authenticated record was taken"
    );
}
