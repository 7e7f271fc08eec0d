//! Journal tests on RAM devices (the journal device and the volume are
//! both malloc bdevs; the file backend is the same trait).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind, MallocBdev};
use ferrite_gateway_protocol::{
    decode, DomainId, Epoch, GroupId, Hello, JournalPull, JournalTrim, Message, NodeId, Nsid,
    RecordOp, RefuseCode, Role, SeqNo,
};
use ferrite_journal::endpoint::{serve, Groups};
use ferrite_journal::{Journal, JournalError, JournalReader, JournaledBdev, ReadCtx};
use ferrite_reactor::IoBuf;

const BS: u32 = 512;

fn malloc(name: &str, blocks: u64) -> Arc<dyn BlockDevice> {
    Arc::new(MallocBdev::new(name, blocks, BS).expect("malloc bdev"))
}

/// Submits every request and polls until all completed (by deadline).
fn run(ch: &mut dyn IoChannel, ios: Vec<BdevIo>) -> Vec<(BdevIo, Result<(), BdevError>)> {
    let n = ios.len();
    let mut out = Vec::new();
    for io in ios {
        ch.submit(io).map_err(|(_, e)| e).expect("submit");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        ch.poll(64, &mut |io, r| out.push((io, r)));
        assert!(Instant::now() < deadline, "requests did not complete");
    }
    out
}

fn write(lba: u64, fill: u8, blocks: u32) -> BdevIo {
    let mut b = IoBuf::new((blocks * BS) as usize);
    b.set_len((blocks * BS) as usize);
    b.as_mut_slice().fill(fill);
    BdevIo::new(
        u64::from(fill),
        IoKind::Write {
            lba,
            blocks,
            fua: false,
        },
        Some(b),
    )
}

#[test]
fn writes_are_journaled_in_order_read_back_checked_and_trimmed() {
    let jdev = malloc("j", 1 + 16 * 9);
    let journal = Journal::format(jdev.clone(), GroupId(7), 4096).expect("format");
    assert_eq!(journal.stats().slots, 16);
    let vol = malloc("vol", 1024);
    let bdev = JournaledBdev::new(vol.clone(), journal.clone(), Nsid(3)).expect("wrap");
    assert_eq!(bdev.name(), "vol@journal");
    assert_eq!(bdev.capabilities().max_transfer_bytes, 4096);
    let mut ch = bdev.open_channel(&[]).expect("channel");
    let done = run(
        &mut *ch,
        vec![write(10, 1, 2), write(20, 2, 8), write(10, 3, 1)],
    );
    assert!(done.iter().all(|(_, r)| r.is_ok()));
    let mut tags: Vec<u64> = done.iter().map(|(io, _)| io.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, vec![1, 2, 3], "callers get their own tags back");
    let done = run(
        &mut *ch,
        vec![BdevIo::new(
            9,
            IoKind::WriteZeroes {
                lba: 100,
                blocks: 50,
            },
            None,
        )],
    );
    assert!(done[0].1.is_ok());
    assert_eq!((journal.reserved(), journal.committed()), (4, 4));

    let mut reader = JournalReader::new(journal.clone(), DomainId(1), Epoch(1));
    let mut cx = ReadCtx::open(&journal).expect("read ctx");
    let mut last_ts = 0;
    let mut fills = Vec::new();
    for seq in 1..=4 {
        let r = reader.read(&mut cx, seq).expect("read");
        assert_eq!(r.header.seq, SeqNo(seq));
        assert_eq!(r.header.nsid, Nsid(3));
        assert_eq!(r.header.group, GroupId(7));
        assert!(r.header.ts.0 > last_ts, "timestamps strictly increase");
        last_ts = r.header.ts.0;
        r.header.check(r.data.len()).expect("valid protocol record");
        fills.push((
            r.header.op,
            r.header.slba,
            r.header.nblocks,
            r.data.first().copied(),
        ));
    }
    // Submission order is sequence order on one channel.
    assert_eq!(
        fills,
        vec![
            (RecordOp::Write, 10, 2, Some(1)),
            (RecordOp::Write, 20, 8, Some(2)),
            (RecordOp::Write, 10, 1, Some(3)),
            (RecordOp::WriteZeroes, 100, 50, None),
        ]
    );
    let again = reader.read(&mut cx, 2).expect("re-read");
    assert_eq!(
        again.header.ts.0,
        reader.read(&mut cx, 2).expect("re-read").header.ts.0
    );
    assert!(matches!(
        reader.read(&mut cx, 5),
        Err(JournalError::NotInJournal { .. })
    ));
    let (hb_ts, hb_seq) = reader.heartbeat(&mut cx).expect("heartbeat");
    assert_eq!(hb_seq, SeqNo(4));
    assert!(hb_ts.0 >= last_ts);
    assert!(matches!(
        reader.trim(&mut cx, 9),
        Err(JournalError::TrimBeyondCommitted { .. })
    ));
    reader.trim(&mut cx, 2).expect("trim");
    assert!(matches!(
        reader.read(&mut cx, 2),
        Err(JournalError::NotInJournal { .. })
    ));
    let ts3 = reader.read(&mut cx, 3).expect("3").header.ts;

    // The volume holds the data too.
    let mut vch = vol.open_channel(&[]).expect("vol channel");
    let r = run(
        &mut *vch,
        vec![BdevIo::new(
            0,
            IoKind::Read { lba: 20, blocks: 1 },
            Some(IoBuf::new(BS as usize)),
        )],
    );
    assert_eq!(r[0].0.buf.as_ref().expect("buf").as_slice()[0], 2);

    // Reopen: trim point and committed records survive, timestamps too.
    drop(ch);
    let reopened = Journal::open(jdev.clone(), GroupId(7)).expect("reopen");
    assert_eq!((reopened.trimmed(), reopened.committed()), (2, 4));
    let mut reader = JournalReader::new(reopened.clone(), DomainId(1), Epoch(1));
    let mut cx = ReadCtx::open(&reopened).expect("read ctx");
    assert_eq!(reader.read(&mut cx, 3).expect("3").header.ts, ts3);
    assert!(matches!(
        Journal::open(jdev, GroupId(8)),
        Err(JournalError::WrongGroup { found: 7, .. })
    ));
    assert!(matches!(
        Journal::open(vol, GroupId(7)),
        Err(JournalError::BadSuperblock { .. })
    ));
}

#[test]
fn a_full_journal_holds_writes_until_trimmed() {
    let jdev = malloc("j", 1 + 8 * 2);
    let journal = Journal::format(jdev, GroupId(1), 512).expect("format");
    let vol = malloc("vol", 64);
    let bdev = JournaledBdev::new(vol, journal.clone(), Nsid(1)).expect("wrap");
    let mut ch = bdev.open_channel(&[]).expect("channel");
    let done = run(&mut *ch, (0..8).map(|i| write(i, i as u8 + 1, 1)).collect());
    assert!(done.iter().all(|(_, r)| r.is_ok()));
    // A full journal holds the write (and any later one) until a trim frees a slot.
    ch.submit(write(9, 9, 1))
        .map_err(|(_, e)| e)
        .expect("accepted");
    ch.submit(write(10, 10, 1))
        .map_err(|(_, e)| e)
        .expect("accepted");
    let mut early = 0;
    for _ in 0..100 {
        early += ch.poll(64, &mut |_, _| {});
    }
    assert_eq!(early, 0, "nothing completes while the journal is full");
    assert_eq!(ch.in_flight(), 2);
    // Too large for a slot, out of range, and copy are refused without a number.
    assert!(matches!(
        ch.submit(write(0, 1, 2)),
        Err((_, BdevError::TransferTooLarge { .. }))
    ));
    assert!(matches!(
        ch.submit(write(64, 1, 1)),
        Err((_, BdevError::OutOfRange { .. }))
    ));
    assert_eq!(journal.reserved(), 8);
    let mut reader = JournalReader::new(journal.clone(), DomainId(1), Epoch(1));
    let mut cx = ReadCtx::open(&journal).expect("ctx");
    reader.trim(&mut cx, 3).expect("trim");
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.len() < 2 {
        ch.poll(64, &mut |io, r| done.push((io.tag, r.is_ok())));
        assert!(Instant::now() < deadline, "held writes did not complete");
    }
    assert_eq!(done, vec![(9, true), (10, true)], "in arrival order");
    assert_eq!(journal.committed(), 10);
    assert_eq!(reader.read(&mut cx, 9).expect("9").data[0], 9);
    assert_eq!(reader.read(&mut cx, 10).expect("10").data[0], 10);
    // Too small a device.
    assert!(matches!(
        Journal::format(malloc("tiny", 8), GroupId(1), 512),
        Err(JournalError::TooSmall { .. })
    ));
}

#[test]
fn writes_from_several_threads_get_gap_free_numbers() {
    let jdev = malloc("j", 1 + 4096 * 2);
    let journal = Journal::format(jdev, GroupId(2), 512).expect("format");
    let vol = malloc("vol", 4096);
    let bdev = Arc::new(JournaledBdev::new(vol, journal.clone(), Nsid(1)).expect("wrap"));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let bdev = bdev.clone();
            std::thread::spawn(move || {
                let mut ch = bdev.open_channel(&[]).expect("channel");
                for round in 0..25u64 {
                    let ios = (0..8)
                        .map(|i| write(u64::from(t) * 1000 + round * 8 + i, t + 1, 1))
                        .collect();
                    assert!(run(&mut *ch, ios).iter().all(|(_, r)| r.is_ok()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    assert_eq!((journal.reserved(), journal.committed()), (800, 800));
    let mut reader = JournalReader::new(journal.clone(), DomainId(1), Epoch(1));
    let mut cx = ReadCtx::open(&journal).expect("ctx");
    let mut last = 0;
    for seq in 1..=800 {
        let r = reader.read(&mut cx, seq).expect("read");
        assert!(r.header.ts.0 > last);
        last = r.header.ts.0;
        let thread = (r.header.slba / 1000) as u8;
        assert_eq!(
            r.data[0],
            thread + 1,
            "record {seq} carries its writer's data"
        );
    }
}

fn frame(m: Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode_to_vec(&mut v).expect("encode");
    v
}

fn read_msgs(
    s: &mut UnixStream,
    buf: &mut Vec<u8>,
    until: impl Fn(&Message<'_>) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        while let Some((m, n)) = decode(buf).expect("valid frames") {
            let stop = until(&m);
            seen.push(match m {
                Message::Record(r) => format!("record {} {}", r.header.seq, r.data.len()),
                Message::Heartbeat(h) => format!("heartbeat {}", h.last_seq),
                Message::JournalStatus(st) => format!("status {}..{}", st.tail_seq, st.head_seq),
                Message::Refuse(r) => format!("refuse {:?} {}", r.code, r.reason),
                other => format!("{:?}", other.kind()),
            });
            buf.drain(..n);
            if stop {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "endpoint did not answer: {seen:?}"
        );
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).expect("read");
        if n == 0 {
            return seen;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn the_stream_endpoint_serves_pulls_and_trims() {
    let jdev = malloc("j", 1 + 32 * 2);
    let journal = Journal::format(jdev, GroupId(5), 512).expect("format");
    let vol = malloc("vol", 64);
    let bdev = JournaledBdev::new(vol, journal.clone(), Nsid(1)).expect("wrap");
    let mut ch = bdev.open_channel(&[]).expect("channel");
    run(&mut *ch, (0..3).map(|i| write(i, 7, 1)).collect());
    let groups = Arc::new(Groups::default());
    groups.insert(JournalReader::new(journal.clone(), DomainId(1), Epoch(1)));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sock");
    serve(&path, groups).expect("serve");

    let mut s = UnixStream::connect(&path).expect("connect");
    let mut buf = Vec::new();
    let hello = Hello {
        role: Role::Primary,
        min_version: 1,
        max_version: 1,
        node: NodeId(1),
        nonce: [0; 32],
    };
    s.write_all(&frame(Message::Hello(hello))).expect("hello");
    let pull = |from| {
        Message::JournalPull(JournalPull {
            group: GroupId(5),
            domain: DomainId(1),
            from_seq: SeqNo(from),
            max_records: 2,
        })
    };
    s.write_all(&frame(pull(1))).expect("pull");
    let seen = read_msgs(&mut s, &mut buf, |m| matches!(m, Message::JournalStatus(_)));
    assert_eq!(
        seen,
        vec![
            "Hello",
            "record 1 512",
            "record 2 512",
            "heartbeat 3",
            "status 0..3"
        ]
    );
    s.write_all(&frame(Message::JournalTrim(JournalTrim {
        group: GroupId(5),
        domain: DomainId(1),
        up_to_seq: SeqNo(2),
    })))
    .expect("trim");
    let seen = read_msgs(&mut s, &mut buf, |m| matches!(m, Message::JournalStatus(_)));
    assert_eq!(seen, vec!["status 2..3"]);
    assert_eq!(journal.trimmed(), 2);
    s.write_all(&frame(pull(3))).expect("pull");
    let seen = read_msgs(&mut s, &mut buf, |m| matches!(m, Message::JournalStatus(_)));
    assert_eq!(seen, vec!["record 3 512", "heartbeat 3", "status 2..3"]);
    // A pull of trimmed records is refused with a reason.
    s.write_all(&frame(pull(1))).expect("pull");
    let seen = read_msgs(&mut s, &mut buf, |m| matches!(m, Message::Refuse(_)));
    assert!(
        seen[0].starts_with("refuse Protocol pull from 1 but the journal is trimmed up to 2"),
        "{seen:?}"
    );

    // Unknown group.
    let mut s = UnixStream::connect(&path).expect("connect");
    let mut buf = Vec::new();
    s.write_all(&frame(Message::Hello(hello))).expect("hello");
    s.write_all(&frame(Message::JournalPull(JournalPull {
        group: GroupId(99),
        domain: DomainId(1),
        from_seq: SeqNo(1),
        max_records: 1,
    })))
    .expect("pull");
    let seen = read_msgs(&mut s, &mut buf, |m| matches!(m, Message::Refuse(_)));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("refuse UnknownGroup no journal for group 99")
    );
    let _ = RefuseCode::UnknownGroup;
}

#[test]
fn the_stream_endpoint_never_deletes_a_file_or_a_live_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").expect("write");
    let e = serve(&file, Arc::new(Groups::default())).expect_err("a regular file is refused");
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&file).expect("still there"), b"keep me");

    let path = dir.path().join("journal.sock");
    serve(&path, Arc::new(Groups::default())).expect("serve");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the stream carries every replicated write"
    );
    let e = serve(&path, Arc::new(Groups::default())).expect_err("a live socket is refused");
    assert!(e.to_string().contains("another process"), "{e}");
    UnixStream::connect(&path).expect("the first endpoint still serves");
}
