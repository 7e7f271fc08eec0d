use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;

fn ready(a: ReadAnswer) -> Vec<u8> {
    match a {
        ReadAnswer::Ready(d) => d.to_vec(),
        ReadAnswer::Held => panic!("held"),
    }
}

/// Seed 003, M19: queue blocks 200..=204 with N = 50; reads arrive 52, 50, 51, 53 and each gets
/// its own block (a naive N+1 counter would serve 204 for 53; a count-based traversal too).
#[test]
fn golden_read_52_50_51_53() {
    let s = Session::new(BlockId(200), SeqNo(50));
    let mut q = ReadQueue::new(s, 8, 0);
    for b in 200..=204u64 {
        assert_eq!(q.wants_fill(), Some(BlockId(b)));
        q.fill(BlockId(b), vec![b as u8]);
    }
    for (seq, block) in [(52, 202u64), (50, 200), (51, 201), (53, 203)] {
        let got = ready(q.request(SeqNo(seq), BlockId(block)).expect("request"));
        assert_eq!(got, vec![block as u8], "seq {seq}");
    }
    assert_eq!(q.floor(), BlockId(204), "200..=203 served");
    // A request whose explicit block id disagrees with the map is another stream's.
    assert!(matches!(
        q.request(SeqNo(54), BlockId(205)),
        Err(MtQueueError::BlockMismatch {
            mapped: BlockId(204),
            ..
        })
    ));
}

/// Seed 003, M20: tail block 109 with seq 9; writes arrive 10, 13, 11, 12. Tape gets 110, 111,
/// 112, 113 in order; every acknowledgement carries its own sequence number.
#[test]
fn golden_write_10_13_11_12() {
    let s = Session::new(BlockId(100), SeqNo(0));
    for policy in [AckPolicy::Staged, AckPolicy::OnTape] {
        let mut q = WriteQueue::resume_at(s, BlockId(110), 16, policy);
        let mut acks = Vec::new();
        let mut tape = Vec::new();
        for seq in [10u64, 13, 11, 12] {
            match q
                .offer(SeqNo(seq), BlockId(100 + seq), vec![seq as u8])
                .expect("offer")
            {
                Offer::Queued { ack } => acks.extend(ack),
                Offer::Duplicate { .. } => panic!("not a duplicate"),
            }
            while let Some((b, _, d)) = q.take_next() {
                tape.push((b.0, d[0]));
                acks.extend(q.written());
            }
            if seq == 13 {
                assert_eq!(tape.len(), 1, "113 waits behind the gap at 111");
            }
        }
        assert_eq!(tape, vec![(110, 10), (111, 11), (112, 12), (113, 13)]);
        let want: Vec<SeqNo> = match policy {
            AckPolicy::Staged => vec![10, 13, 11, 12],
            AckPolicy::OnTape => vec![10, 11, 12, 13],
        }
        .into_iter()
        .map(SeqNo)
        .collect();
        assert_eq!(acks, want, "{policy:?}");
        assert_eq!(q.stats().out_of_order, 1);
    }
}

#[test]
fn duplicates_are_acked_again_and_never_reach_tape_twice() {
    let s = Session::new(BlockId(0), SeqNo(1000));
    let mut q = WriteQueue::new(s, 8, AckPolicy::OnTape);
    assert!(matches!(
        q.offer(SeqNo(1001), BlockId(1), vec![1]).expect("o"),
        Offer::Queued { ack: None }
    ));
    // queued duplicate: dropped, its ack comes when the block is written
    assert!(matches!(
        q.offer(SeqNo(1001), BlockId(1), vec![1]).expect("o"),
        Offer::Duplicate { ack: None }
    ));
    q.offer(SeqNo(1000), BlockId(0), vec![0]).expect("o");
    let (_, _, d) = q.take_next().expect("0");
    assert_eq!(d, vec![0]);
    // in-flight duplicate
    assert!(matches!(
        q.offer(SeqNo(1000), BlockId(0), vec![0]).expect("o"),
        Offer::Duplicate { .. }
    ));
    assert_eq!(q.written(), Some(SeqNo(1000)));
    // written duplicate: acked again at once
    assert_eq!(
        q.offer(SeqNo(1000), BlockId(0), vec![0]).expect("o"),
        Offer::Duplicate {
            ack: Some(SeqNo(1000))
        }
    );
    // same block, other data: corrupt stream
    assert!(matches!(
        q.offer(SeqNo(1001), BlockId(1), vec![9]),
        Err(MtQueueError::ConflictingDuplicate { .. })
    ));
    assert!(matches!(
        q.offer(SeqNo(999), BlockId(0), vec![0]),
        Err(MtQueueError::BeforeSession { .. })
    ));
    assert!(matches!(
        q.offer(SeqNo(1009), BlockId(9), vec![0]),
        Err(MtQueueError::WindowExceeded {
            distance: 8,
            window: 8,
            ..
        })
    ));
    assert_eq!(q.stats().duplicates, 3);
}

#[test]
fn a_refused_block_goes_back_to_the_head() {
    let mut q = WriteQueue::new(Session::new(BlockId(0), SeqNo(0)), 4, AckPolicy::OnTape);
    q.offer(SeqNo(0), BlockId(0), vec![7]).expect("o");
    let (_, _, d) = q.take_next().expect("take");
    assert!(q.take_next().is_none(), "one block in flight at a time");
    q.unwritten(d);
    assert_eq!(q.cursor(), BlockId(0));
    assert_eq!(q.take_next().expect("again").2, vec![7]);
}

#[test]
fn read_holds_unfetched_blocks_and_reserves_within_the_window() {
    let s = Session::new(BlockId(0), SeqNo(0));
    let mut q = ReadQueue::new(s, 4, 2);
    assert_eq!(
        q.request(SeqNo(2), BlockId(2)).expect("r"),
        ReadAnswer::Held,
        "E14: not read yet"
    );
    for b in 0..4 {
        assert_eq!(q.wants_fill(), Some(BlockId(b)));
        q.fill(BlockId(b), vec![b as u8]);
    }
    assert_eq!(q.wants_fill(), None, "read-ahead depth 4 reached");
    assert_eq!(ready(q.request(SeqNo(2), BlockId(2)).expect("r")), vec![2]);
    assert_eq!(ready(q.request(SeqNo(0), BlockId(0)).expect("r")), vec![0]);
    assert_eq!(ready(q.request(SeqNo(1), BlockId(1)).expect("r")), vec![1]);
    assert_eq!(q.floor(), BlockId(3));
    // E15: a lost reply is served again while within `keep`
    assert_eq!(
        ready(q.request(SeqNo(1), BlockId(1)).expect("again")),
        vec![1]
    );
    assert_eq!(q.wants_fill(), Some(BlockId(4)));
    for b in 4..7 {
        q.fill(BlockId(b), vec![b as u8]);
    }
    for b in 3..7 {
        ready(q.request(SeqNo(b), BlockId(b)).expect("r"));
    }
    assert!(matches!(
        q.request(SeqNo(1), BlockId(1)),
        Err(MtQueueError::Released { .. })
    ));
    q.set_end(BlockId(8));
    assert!(matches!(
        q.request(SeqNo(8), BlockId(8)),
        Err(MtQueueError::PastEnd { .. })
    ));
    assert!(
        q.buffered() <= 2 + 1,
        "served blocks beyond the window are released: {}",
        q.buffered()
    );
}

#[test]
fn issuer_keeps_at_most_m_in_flight_and_ignores_repeated_acks() {
    let i = Issuer::new(SeqNo(10), SeqNo(20), 4);
    let t = Duration::from_millis(20);
    let got: Vec<u64> = (0..4)
        .map(|_| i.acquire(t).expect("ok").expect("seq").0)
        .collect();
    assert_eq!(got, vec![10, 11, 12, 13]);
    assert!(i.acquire(t).is_err(), "E18: the 5th waits for a completion");
    assert!(i.ack(SeqNo(12)));
    assert!(
        !i.ack(SeqNo(12)),
        "a repeated ack does not open the window twice"
    );
    assert_eq!(i.acquire(t).expect("ok"), Some(SeqNo(14)));
    assert_eq!(i.in_flight(), 4);
    i.close("test over");
    assert_eq!(i.acquire(t), Err("test over".to_string()));
}

/// Oracle run: deliver `order` (a permutation of the window with some duplicates) into a queue,
/// draining the gap-free run after every arrival; return what reached tape.
fn drain_order(order: &[u64], window: u64) -> Vec<u64> {
    let mut q = WriteQueue::new(
        Session::new(BlockId(0), SeqNo(0)),
        window,
        AckPolicy::OnTape,
    );
    let mut tape = Vec::new();
    for &s in order {
        q.offer(SeqNo(s), BlockId(s), s.to_le_bytes().to_vec())
            .expect("offer");
        while let Some((b, _, d)) = q.take_next() {
            assert_eq!(d, b.0.to_le_bytes().to_vec());
            tape.push(b.0);
            q.written();
        }
    }
    tape
}

proptest! {
    /// Any arrival order of a window of blocks (with duplicates anywhere) yields the exact block
    /// order on tape, every block once.
    #[test]
    fn any_arrival_order_gives_exact_tape_order(
        n in 1u64..64,
        seed in any::<u64>(),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut order: Vec<u64> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        for d in dups {
            let at = d.index(order.len());
            let s = order[at];
            let to = (at + 1 + d.index(8)).min(order.len());
            order.insert(to, s);
        }
        let tape = drain_order(&order, n);
        prop_assert_eq!(tape, (0..n).collect::<Vec<_>>());
    }

    /// Read requests in any order are each answered with their own block.
    #[test]
    fn any_read_order_gets_each_block(n in 1u64..64, seed in any::<u64>(), b0 in 0u64..1000, s0 in 0u64..1000) {
        let s = Session::new(BlockId(b0), SeqNo(s0));
        let mut q = ReadQueue::new(s, n, n);
        while let Some(b) = q.wants_fill() { q.fill(b, b.0.to_le_bytes().to_vec()); }
        let mut order: Vec<u64> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        for k in order {
            let d = ready(q.request(SeqNo(s0 + k), BlockId(b0 + k)).expect("req"));
            prop_assert_eq!(d, (b0 + k).to_le_bytes().to_vec());
        }
    }
}

/// Several connection threads deliver a stream through one drive queue with seeded shuffles,
/// delays and duplicates; the issuer's window bounds what is in flight. The "drive" must see
/// every block exactly once in order, and every sequence number must be acknowledged.
#[test]
fn simulated_connections_land_blocks_in_exact_order() {
    for seed in [1u64, 7, 42, 2026] {
        let total = 600u64;
        let window = 16usize;
        let session = Session::new(BlockId(0), SeqNo(5000));
        let q = Arc::new(DriveQueue::new(WriteQueue::new(
            session,
            window as u64,
            AckPolicy::OnTape,
        )));
        let issuer = Arc::new(Issuer::new(SeqNo(5000), SeqNo(5000 + total), window));
        let tape = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (q, tape, issuer) = (q.clone(), tape.clone(), issuer.clone());
            std::thread::spawn(move || {
                q.run_writer(
                    BlockId(total),
                    Duration::from_secs(30),
                    |b, _s, d: &[u8]| -> Result<(), String> {
                        tape.lock().expect("tape").push((b.0, d.to_vec()));
                        Ok(())
                    },
                    &|s| {
                        issuer.ack(s);
                    },
                )
                .map_err(|e| e.to_string())
            })
        };
        let conns: Vec<_> = (0..4u64)
            .map(|c| {
                let (q, issuer) = (q.clone(), issuer.clone());
                std::thread::spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed * 100 + c);
                    let mut batch = Vec::new();
                    loop {
                        // take up to 3 sequence numbers, then deliver them shuffled
                        while batch.len() < 3 {
                            match issuer.acquire(Duration::from_millis(1)) {
                                Ok(Some(s)) => batch.push(s),
                                _ => break,
                            }
                        }
                        if batch.is_empty() {
                            match issuer.acquire(Duration::from_secs(30)) {
                                Ok(Some(s)) => batch.push(s),
                                Ok(None) => return,
                                Err(e) => panic!("issuer: {e}"),
                            }
                        }
                        batch.shuffle(&mut rng);
                        for s in batch.drain(..) {
                            let b = session.block_of(s).expect("map");
                            if rng.gen_bool(0.3) {
                                std::thread::sleep(Duration::from_micros(rng.gen_range(0..300)));
                            }
                            let data = b.0.to_le_bytes().to_vec();
                            q.offer(s, b, data.clone(), Duration::from_secs(30))
                                .expect("offer");
                            if rng.gen_bool(0.1) {
                                q.offer(s, b, data, Duration::from_secs(30)).expect("dup");
                            }
                        }
                    }
                })
            })
            .collect();
        for c in conns {
            c.join().expect("connection thread");
        }
        writer.join().expect("writer thread").expect("writer");
        issuer
            .wait_all_acked(Duration::from_secs(30))
            .expect("all acked");
        let tape = tape.lock().expect("tape");
        let ids: Vec<u64> = tape.iter().map(|(b, _)| *b).collect();
        assert_eq!(ids, (0..total).collect::<Vec<_>>(), "seed {seed}");
        assert!(tape.iter().all(|(b, d)| *d == b.to_le_bytes().to_vec()));
        let st = q.stats();
        assert_eq!(st.queue.written, total);
        assert!(
            st.queue.max_queued <= window as u64,
            "bounded by the window: {st:?}"
        );
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(unique.len() as u64, total);
    }
}

#[test]
fn a_failing_drive_closes_the_queue_and_deliverers_see_why() {
    let q = Arc::new(DriveQueue::new(WriteQueue::new(
        Session::new(BlockId(0), SeqNo(0)),
        4,
        AckPolicy::OnTape,
    )));
    q.offer(SeqNo(0), BlockId(0), vec![0], Duration::from_secs(1))
        .expect("o");
    q.offer(SeqNo(1), BlockId(1), vec![1], Duration::from_secs(1))
        .expect("o");
    let r = q.run_writer(
        BlockId(10),
        Duration::from_secs(5),
        |b, _, _| {
            if b.0 == 1 {
                Err("medium error")
            } else {
                Ok(())
            }
        },
        &|_| {},
    );
    assert!(
        matches!(r, Err(drive::WriterError::Sink("medium error"))),
        "{r:?}"
    );
    assert_eq!(
        q.cursor(),
        BlockId(1),
        "the refused block was not counted as written"
    );
    let e = q
        .offer(SeqNo(2), BlockId(2), vec![2], Duration::from_secs(1))
        .expect_err("closed");
    assert!(e.to_string().contains("medium error"), "{e}");
}

#[test]
fn a_writer_with_a_gap_that_never_closes_stalls_with_a_reason() {
    let q = DriveQueue::new(WriteQueue::new(
        Session::new(BlockId(0), SeqNo(0)),
        4,
        AckPolicy::OnTape,
    ));
    q.offer(SeqNo(1), BlockId(1), vec![1], Duration::from_secs(1))
        .expect("o");
    let r = q.run_writer(
        BlockId(2),
        Duration::from_millis(50),
        |_, _, _| Ok::<(), String>(()),
        &|_| {},
    );
    let e = r.expect_err("stalled");
    assert!(
        e.to_string().contains("no block 0") && e.to_string().contains("1 queued"),
        "{e}"
    );
    assert!(q.stats().wait_gap_ns > 0);
}
