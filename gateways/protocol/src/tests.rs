use proptest::prelude::*;

use super::wire::{HEADER_LEN, MAX_REASON};
use super::*;

fn roundtrip(m: &Message<'_>) {
    let mut buf = Vec::new();
    let n = m.encode_to_vec(&mut buf).expect("encode");
    assert_eq!(n, m.encoded_len());
    assert_eq!(frame_len(&buf).expect("len"), Some(n));
    let (back, used) = decode(&buf).expect("decode").expect("complete");
    assert_eq!(used, n);
    assert_eq!(&back, m);
    // Every strict prefix is incomplete, never an error.
    for cut in [0, 1, 3, HEADER_LEN - 1, HEADER_LEN, n - 1] {
        if cut < n {
            assert_eq!(decode(&buf[..cut]).expect("prefix"), None, "cut {cut}");
        }
    }
}

fn record(data: &[u8]) -> Record<'_> {
    Record {
        header: RecordHeader {
            group: GroupId(3),
            domain: DomainId(9),
            epoch: Epoch(2),
            seq: SeqNo(27),
            ts: Timestamp(1_000),
            nsid: Nsid(1),
            slba: 8,
            nblocks: (data.len() / 512) as u32,
            op: RecordOp::Write,
        },
        data,
    }
}

#[test]
fn record_roundtrip_and_prefix_encoding() {
    let data = vec![0xabu8; 4096];
    let r = record(&data);
    roundtrip(&Message::Record(r));
    let mut prefix = [0u8; RECORD_PREFIX_LEN];
    assert_eq!(
        r.encode_prefix(&mut prefix).expect("prefix"),
        RECORD_PREFIX_LEN
    );
    let mut whole = prefix.to_vec();
    whole.extend_from_slice(&data);
    let (m, _) = decode(&whole).expect("decode").expect("complete");
    assert_eq!(m, Message::Record(r));
}

#[test]
fn corrupted_data_is_refused_by_checksum() {
    let data = vec![7u8; 512];
    let mut buf = Vec::new();
    Message::Record(record(&data))
        .encode_to_vec(&mut buf)
        .expect("encode");
    let last = buf.len() - 1;
    buf[last] ^= 1;
    assert!(matches!(
        decode(&buf),
        Err(ProtocolError::BodyChecksum { .. })
    ));
    buf[last] ^= 1;
    buf[8] ^= 1; // body length
    assert!(matches!(
        decode(&buf),
        Err(ProtocolError::HeaderChecksum { .. })
    ));
}

#[test]
fn bad_magic_version_kind_are_named() {
    let mut buf = Vec::new();
    Message::Control(Control {
        op: ControlOp::Pause,
        group: GroupId(1),
        arg: 0,
    })
    .encode_to_vec(&mut buf)
    .expect("encode");
    let mut bad = buf.clone();
    bad[0] = b'X';
    assert!(matches!(
        decode(&bad[..4]),
        Err(ProtocolError::BadMagic { .. })
    ));
    let reheader = |b: &mut Vec<u8>| {
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
    };
    let mut v = buf.clone();
    v[4] = 9;
    reheader(&mut v);
    let e = decode(&v).expect_err("version");
    assert!(
        e.to_string().contains("unsupported protocol version 9"),
        "{e}"
    );
    let mut k = buf.clone();
    k[5] = 200;
    reheader(&mut k);
    assert_eq!(decode(&k), Err(ProtocolError::UnknownKind { kind: 200 }));
    let mut big = buf;
    big[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    reheader(&mut big);
    assert!(matches!(
        decode(&big),
        Err(ProtocolError::BodyTooLong { .. })
    ));
}

#[test]
fn record_invariants_are_enforced_on_encode_and_decode() {
    let data = vec![0u8; 1000]; // not a whole number of 512-byte blocks
    let mut r = record(&data);
    r.header.nblocks = 2;
    let mut buf = vec![0u8; 2000];
    assert!(matches!(
        Message::Record(r).encode_into(&mut buf),
        Err(ProtocolError::InvalidField {
            field: "data_len",
            ..
        })
    ));
    let z = Record {
        header: RecordHeader {
            op: RecordOp::WriteZeroes,
            nblocks: 8,
            ..record(&[]).header
        },
        data: &[],
    };
    roundtrip(&Message::Record(z));
    let mut seq0 = z;
    seq0.header.seq = SeqNo(0);
    assert!(Message::Record(seq0).encode_into(&mut buf).is_err());
    let mut wrap = z;
    wrap.header.slba = u64::MAX;
    assert!(Message::Record(wrap).encode_into(&mut buf).is_err());
}

#[test]
fn small_output_buffer_is_an_error() {
    let mut out = [0u8; 10];
    let m = Message::AuthProof([1; 32]);
    assert_eq!(
        m.encode_into(&mut out),
        Err(ProtocolError::BufferTooSmall {
            needed: m.encoded_len(),
            got: 10
        })
    );
}

#[test]
fn refuse_reason_limits() {
    let long = "x".repeat(MAX_REASON + 1);
    let m = Message::Refuse(Refuse {
        code: RefuseCode::BadAuth,
        reason: &long,
    });
    assert!(m.encode_to_vec(&mut Vec::new()).is_err());
    roundtrip(&Message::Refuse(Refuse {
        code: RefuseCode::UnknownGroup,
        reason: "group 7 does not exist",
    }));
}

#[test]
fn two_frames_back_to_back_decode_one_at_a_time() {
    let mut buf = Vec::new();
    let a = Message::Ack(Ack {
        group: GroupId(1),
        domain: DomainId(1),
        epoch: Epoch(1),
        cum_seq: SeqNo(26),
        durable: true,
        applied_ts: Timestamp(5),
    });
    let c = Message::Credit(Credit {
        group: GroupId(1),
        domain: DomainId(1),
        epoch: Epoch(1),
        window_end: SeqNo(90),
    });
    a.encode_to_vec(&mut buf).expect("a");
    c.encode_to_vec(&mut buf).expect("c");
    let (m1, n1) = decode(&buf).expect("1").expect("1");
    let (m2, n2) = decode(&buf[n1..]).expect("2").expect("2");
    assert_eq!((m1, m2, n1 + n2), (a, c, buf.len()));
}

#[test]
fn kinds_roles_and_codes_roundtrip() {
    for k in Kind::ALL {
        assert_eq!(Kind::from_wire(k.wire()), Some(*k));
    }
    for r in Role::ALL {
        assert_eq!(Role::from_wire(r.wire()), Some(*r));
    }
    for c in RefuseCode::ALL {
        assert_eq!(RefuseCode::from_wire(c.wire()), Some(*c));
    }
    for o in ControlOp::ALL {
        assert_eq!(ControlOp::from_wire(o.wire()), Some(*o));
    }
}

#[test]
fn seq_is_64_bits() {
    // E11: 64-bit sequence numbers.
    assert_eq!(core::mem::size_of::<SeqNo>(), 8);
    assert_eq!(SeqNo(u64::MAX - 1).next(), SeqNo(u64::MAX));
}

fn arb_message(sel: u8, a: u64, b: u64, c: u32) -> Option<Message<'static>> {
    let g = GroupId(c);
    let d = DomainId(a ^ 0x55);
    let e = Epoch(b >> 1);
    Some(match sel % 10 {
        0 => Message::Hello(Hello {
            role: Role::ALL[(a % 3) as usize],
            min_version: 1,
            max_version: 1 + (b % 3) as u8,
            node: NodeId(a),
            nonce: [(b & 0xff) as u8; 32],
        }),
        1 => Message::AuthProof([(a & 0xff) as u8; 32]),
        2 => Message::AuthOk(AuthOk {
            version: 1,
            epoch: e,
        }),
        3 => Message::Heartbeat(Heartbeat {
            group: g,
            domain: d,
            epoch: e,
            ts: Timestamp(a),
            last_seq: SeqNo(b),
        }),
        4 => Message::Ack(Ack {
            group: g,
            domain: d,
            epoch: e,
            cum_seq: SeqNo(a),
            durable: b & 1 == 1,
            applied_ts: Timestamp(b),
        }),
        5 => Message::Credit(Credit {
            group: g,
            domain: d,
            epoch: e,
            window_end: SeqNo(b),
        }),
        6 => Message::Control(Control {
            op: ControlOp::ALL[(a % ControlOp::ALL.len() as u64) as usize],
            group: g,
            arg: b,
        }),
        7 => Message::JournalPull(JournalPull {
            group: g,
            domain: d,
            from_seq: SeqNo(a),
            max_records: c.max(1),
        }),
        8 => Message::JournalTrim(JournalTrim {
            group: g,
            domain: d,
            up_to_seq: SeqNo(a),
        }),
        _ => Message::JournalStatus(JournalStatus {
            group: g,
            domain: d,
            tail_seq: SeqNo(a.min(b)),
            head_seq: SeqNo(a.max(b)),
            used_bytes: a,
            capacity: b,
            overflowed: c & 1 == 1,
        }),
    })
}

proptest! {
    #[test]
    fn fixed_messages_roundtrip(sel in any::<u8>(), a in any::<u64>(), b in any::<u64>(), c in any::<u32>()) {
        if let Some(m) = arb_message(sel, a, b, c) {
            roundtrip(&m);
        }
    }

    #[test]
    fn records_roundtrip(
        blocks in 1u32..9, shift in 9u32..13, seq in 1u64.., ts in any::<u64>(),
        slba in 0u64..(1 << 40), nsid in 1u32..1000, fill in any::<u8>(), op in 0u8..3,
    ) {
        let op = RecordOp::from_wire(op).expect("op");
        let data = if op == RecordOp::Write { vec![fill; (blocks as usize) << shift] } else { Vec::new() };
        let r = Record {
            header: RecordHeader {
                group: GroupId(1), domain: DomainId(2), epoch: Epoch(3), seq: SeqNo(seq),
                ts: Timestamp(ts), nsid: Nsid(nsid), slba, nblocks: blocks, op,
            },
            data: &data,
        };
        roundtrip(&Message::Record(r));
    }

    #[test]
    fn refuse_roundtrip(code in 0usize..9, reason in "[a-z 0-9]{0,200}") {
        roundtrip(&Message::Refuse(Refuse { code: RefuseCode::ALL[code], reason: &reason }));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = frame_len(&bytes);
        if let Ok(Some((m, n))) = decode(&bytes) {
            prop_assert!(n <= bytes.len());
            // Whatever decodes re-encodes to the same bytes.
            let mut again = Vec::new();
            m.encode_to_vec(&mut again).expect("re-encode");
            prop_assert_eq!(&again[..], &bytes[..n]);
        }
    }

    #[test]
    fn single_bit_flips_are_detected(sel in any::<u8>(), a in any::<u64>(), b in any::<u64>(), c in any::<u32>(), bit in any::<usize>()) {
        let m = arb_message(sel, a, b, c).expect("msg");
        let mut buf = Vec::new();
        m.encode_to_vec(&mut buf).expect("encode");
        let i = bit % (buf.len() * 8);
        buf[i / 8] ^= 1 << (i % 8);
        match decode(&buf) {
            Err(_) | Ok(None) => {}
            Ok(Some((back, _))) => prop_assert!(false, "flip at bit {} decoded as {:?}", i, back),
        }
    }
}

/// Writes one valid frame of every kind to the fuzz seed corpus
/// (`cargo test -p ferrite-gateway-protocol -- --ignored write_fuzz_corpus`).
#[test]
#[ignore = "regenerates fuzz/corpus/decode"]
fn write_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let data = vec![0x5au8; 1024];
    let mut msgs: Vec<Message<'_>> = (0..10u8).filter_map(|s| arb_message(s, 7, 9, 1)).collect();
    msgs.push(Message::Record(record(&data)));
    msgs.push(Message::Refuse(Refuse {
        code: RefuseCode::BadAuth,
        reason: "wrong key",
    }));
    for m in msgs {
        let mut buf = Vec::new();
        m.encode_to_vec(&mut buf).expect("encode");
        std::fs::write(dir.join(format!("{:?}", m.kind()).to_lowercase()), buf).expect("write");
    }
}
