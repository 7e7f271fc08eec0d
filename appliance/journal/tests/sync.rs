//! Sync mode of a journal on RAM devices: a write completes only after the secondary's
//! acknowledgement covers its record, and the lost-link policies `fail` and `degrade`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind, MallocBdev};
use ferrite_gateway_protocol::{GroupId, Nsid};
use ferrite_journal::{
    Journal, JournalReader, JournaledBdev, LinkPolicy, Mode, ReadCtx, SyncPolicy, SyncState,
};
use ferrite_reactor::IoBuf;

const BS: u32 = 512;

fn malloc(name: &str, blocks: u64) -> Arc<dyn BlockDevice> {
    Arc::new(MallocBdev::new(name, blocks, BS).expect("malloc bdev"))
}

/// A one-block write whose tag and fill identify it.
fn write(tag: u64, lba: u64) -> BdevIo {
    let mut b = IoBuf::new(BS as usize);
    b.set_len(BS as usize);
    b.as_mut_slice().fill(0);
    b.as_mut_slice()[..8].copy_from_slice(&tag.to_le_bytes());
    BdevIo::new(
        tag,
        IoKind::Write {
            lba,
            blocks: 1,
            fua: false,
        },
        Some(b),
    )
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn setup(policy: LinkPolicy, timeout: Duration) -> (Arc<Journal>, Box<dyn IoChannel>) {
    let journal = Journal::format(malloc("j", 1 + 4096 * 2), GroupId(1), 512).expect("format");
    journal.set_sync_policy(SyncPolicy {
        mode: Mode::Sync,
        link_policy: policy,
        timeout,
    });
    let bdev = JournaledBdev::new(malloc("vol", 256), journal.clone(), Nsid(1)).expect("wrap");
    let ch = bdev.open_channel(&[]).expect("channel");
    (journal, ch)
}

/// Tags of the writes in journal records 1..=acked (what the secondary holds).
fn held(journal: &Arc<Journal>, acked: u64) -> HashSet<u64> {
    let mut r = JournalReader::new(
        journal.clone(),
        ferrite_gateway_protocol::DomainId(1),
        ferrite_gateway_protocol::Epoch(1),
    );
    let mut cx = ReadCtx::open(journal).expect("read ctx");
    (1..=acked)
        .map(|s| {
            let rec = r.read(&mut cx, s).expect("record");
            u64::from_le_bytes(rec.data[..8].try_into().expect("8 bytes"))
        })
        .collect()
}

#[test]
fn seeded_sync_writes_never_complete_before_the_secondary_holds_them() {
    for seed in 0..20u64 {
        let (journal, mut ch) = setup(LinkPolicy::Fail, Duration::from_secs(60));
        let mut rng = Rng(seed);
        let (mut next_tag, mut in_flight, mut acked) = (1u64, 0usize, 0u64);
        let mut completed: Vec<(u64, u64)> = Vec::new();
        while next_tag <= 300 || in_flight > 0 {
            match rng.below(4) {
                0 | 1 if next_tag <= 300 && in_flight < 16 => {
                    ch.submit(write(next_tag, rng.below(256)))
                        .map_err(|(_, e)| e)
                        .expect("submit");
                    next_tag += 1;
                    in_flight += 1;
                }
                2 => {
                    // The secondary acknowledges some prefix of what is committed.
                    let c = journal.committed();
                    if c > acked {
                        acked += 1 + rng.below(c - acked);
                        journal.ack_remote(acked);
                    }
                }
                _ => {}
            }
            let remote = journal.sync_stats().remote_acked;
            ch.poll(64, &mut |io, r| {
                r.expect("write");
                completed.push((io.tag, remote));
                in_flight -= 1;
            });
        }
        assert_eq!(journal.sync_state(), SyncState::Sync);
        // Every write completed with an acknowledgement covering its record.
        let mut checked = 0;
        let mut by_ack: Vec<(u64, u64)> = completed.clone();
        by_ack.sort_by_key(|c| c.1);
        let mut known = HashSet::new();
        let mut upto = 0;
        for (tag, remote) in by_ack {
            if remote > upto {
                known = held(&journal, remote);
                upto = remote;
            }
            assert!(
                known.contains(&tag),
                "seed {seed}: write {tag} completed while the secondary held only records up to {remote}"
            );
            checked += 1;
        }
        assert_eq!(checked, 300);
        assert!(
            journal.sync_stats().waits > 0,
            "seed {seed}: nothing waited"
        );
    }
}

fn complete_one(ch: &mut dyn IoChannel, io: BdevIo) -> (Result<(), BdevError>, Duration) {
    let t = Instant::now();
    ch.submit(io).map_err(|(_, e)| e).expect("submit");
    let mut out = None;
    while out.is_none() {
        ch.poll(1, &mut |_, r| out = Some(r));
        assert!(t.elapsed() < Duration::from_secs(20), "no completion");
        std::thread::sleep(Duration::from_millis(1));
    }
    (out.expect("set"), t.elapsed())
}

#[test]
fn fail_policy_fails_a_write_the_secondary_never_acknowledges() {
    let (journal, mut ch) = setup(LinkPolicy::Fail, Duration::from_millis(100));
    let (r, took) = complete_one(&mut *ch, write(1, 0));
    let e = r.expect_err("no ack: the write fails");
    assert!(e.to_string().contains("did not acknowledge"), "{e}");
    assert!(took >= Duration::from_millis(100));
    assert_eq!(journal.sync_state(), SyncState::Sync, "fail never degrades");
    assert_eq!(journal.sync_stats().timeouts, 1);
    // With the link back, writes complete again.
    let waiter = {
        let j = journal.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while j.committed() < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            j.ack_remote(2);
        })
    };
    let (r, _) = complete_one(&mut *ch, write(2, 1));
    r.expect("acknowledged write");
    waiter.join().expect("acker");
}

#[test]
fn degrade_policy_runs_async_with_an_alert_and_returns_to_sync_after_catch_up() {
    let (journal, mut ch) = setup(LinkPolicy::Degrade, Duration::from_millis(100));
    let (r, took) = complete_one(&mut *ch, write(1, 0));
    r.expect("degraded, the write completes");
    assert!(took >= Duration::from_millis(100));
    assert_eq!(journal.sync_state(), SyncState::Degraded);
    assert_eq!(journal.sync_stats().degrades, 1);
    // Degraded writes do not wait.
    for t in 2..10 {
        let (r, took) = complete_one(&mut *ch, write(t, t));
        r.expect("write");
        assert!(took < Duration::from_millis(100), "{took:?}");
    }
    // The secondary catches up: sync again, and the next write waits for its ack.
    journal.ack_remote(journal.committed());
    assert_eq!(journal.sync_state(), SyncState::Sync);
    assert_eq!(journal.sync_stats().recoveries, 1);
    let (r, took) = complete_one(&mut *ch, write(10, 10));
    r.expect("degraded again");
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert_eq!(journal.sync_stats().degrades, 2);
}

#[test]
fn lag_bytes_count_unacknowledged_data_and_survive_a_reopen() {
    let jdev = malloc("j", 1 + 64 * 9);
    let journal = Journal::format(jdev.clone(), GroupId(2), 4096).expect("format");
    let bdev = JournaledBdev::new(malloc("vol", 256), journal.clone(), Nsid(1)).expect("wrap");
    let mut ch = bdev.open_channel(&[]).expect("channel");
    for t in 0..5 {
        complete_one(&mut *ch, write(t, t)).0.expect("write");
    }
    assert_eq!(journal.lag_bytes(), 5 * u64::from(BS));
    let mut r = JournalReader::new(
        journal.clone(),
        ferrite_gateway_protocol::DomainId(1),
        ferrite_gateway_protocol::Epoch(1),
    );
    let mut cx = ReadCtx::open(&journal).expect("ctx");
    r.trim(&mut cx, 3).expect("trim");
    assert_eq!(journal.lag_bytes(), 2 * u64::from(BS));
    assert_eq!(journal.trimmed_bytes(), 3 * u64::from(BS));
    assert_eq!(
        journal.sync_stats().remote_acked,
        3,
        "a trim is the remote ack"
    );
    assert!(journal.acked_ts() > 0);
    drop((ch, bdev, r, cx));
    let reopened = Journal::open(jdev, GroupId(2)).expect("open");
    assert_eq!(
        reopened.lag_bytes(),
        2 * u64::from(BS),
        "held records counted"
    );
    assert_eq!(reopened.sync_stats().remote_acked, 3);
}

#[test]
fn acknowledgements_release_at_once_and_persist_as_the_trim_point_when_due() {
    let journal = Journal::format(malloc("j", 1 + 64 * 2), GroupId(3), 512).expect("format");
    let bdev = JournaledBdev::new(malloc("vol", 256), journal.clone(), Nsid(1)).expect("wrap");
    let mut ch = bdev.open_channel(&[]).expect("channel");
    for t in 0..6 {
        complete_one(&mut *ch, write(t, t)).0.expect("write");
    }
    let mut r = JournalReader::new(
        journal.clone(),
        ferrite_gateway_protocol::DomainId(1),
        ferrite_gateway_protocol::Epoch(1),
    );
    let mut cx = ReadCtx::open(&journal).expect("ctx");
    r.trim(&mut cx, 2).expect("first trim");
    assert_eq!(
        journal.trimmed(),
        2,
        "the first acknowledgement is persisted at once"
    );
    r.trim(&mut cx, 4).expect("second trim");
    assert_eq!(journal.sync_stats().remote_acked, 4, "released at once");
    assert_eq!(journal.lag_bytes(), 2 * u64::from(BS));
    assert_eq!(journal.trimmed(), 2, "persisted later");
    std::thread::sleep(ferrite_journal::TRIM_PERSIST_INTERVAL);
    r.persist_due(&mut cx).expect("persist");
    assert_eq!(journal.trimmed(), 4);
    // A trim at or below the acknowledged point changes nothing.
    r.trim(&mut cx, 3).expect("old ack");
    assert_eq!(
        (journal.trimmed(), journal.lag_bytes()),
        (4, 2 * u64::from(BS))
    );
}

/// Issue 10's "write hung after the pair degraded": with the secondary's replicator gone, a
/// degraded group keeps writing until every slot holds an unacknowledged record; the next
/// write then waited for space for `FULL_WAIT` (30 s), past the host's command timeout. Here
/// the same sequence, deterministic: it waits at most the sync timeout and fails with No Space
/// (counted, alerted), and a drain while a write waits lets it complete and sync return.
#[test]
fn a_degraded_group_whose_journal_fills_fails_writes_after_the_sync_timeout_not_later() {
    let timeout = Duration::from_millis(150);
    let journal = Journal::format(malloc("j", 1 + 8 * 2), GroupId(1), 512).expect("format");
    journal.set_sync_policy(SyncPolicy {
        mode: Mode::Sync,
        link_policy: LinkPolicy::Degrade,
        timeout,
    });
    let bdev = JournaledBdev::new(malloc("vol", 256), journal.clone(), Nsid(1)).expect("wrap");
    let mut ch = bdev.open_channel(&[]).expect("channel");
    // Record 1 waits for an acknowledgement that never comes: the group degrades.
    complete_one(&mut *ch, write(1, 0))
        .0
        .expect("degraded write");
    assert_eq!(journal.sync_state(), SyncState::Degraded);
    // Degraded writes fill the journal's other slots without waiting.
    for t in 2..=8 {
        let (r, took) = complete_one(&mut *ch, write(t, t));
        r.expect("degraded write");
        assert!(took < timeout, "{took:?}");
    }
    assert_eq!(journal.reserved() - journal.trimmed(), 8, "full");
    // The next write finds no slot: it fails after the sync timeout, well before any host's
    // command timeout, and says why.
    let (r, took) = complete_one(&mut *ch, write(9, 9));
    assert!(matches!(r, Err(BdevError::NoSpace)), "{r:?}");
    assert!(took >= timeout && took < Duration::from_secs(5), "{took:?}");
    let s = journal.stats();
    assert_eq!((s.full_refusals, s.full_failures), (1, 1), "{s:?}");
    assert_eq!(s.reserved, 8, "the failed write spent no sequence number");
    // The secondary comes back while a write waits for space: its drain frees the slots and
    // ends the degraded period; the held write starts and (nothing acknowledges it) completes
    // by the degrade policy.
    ch.submit(write(10, 10))
        .map_err(|(_, e)| e)
        .expect("accepted");
    for _ in 0..10 {
        assert_eq!(ch.poll(8, &mut |_, _| {}), 0, "no slot yet");
    }
    let mut reader = JournalReader::new(
        journal.clone(),
        ferrite_gateway_protocol::DomainId(1),
        ferrite_gateway_protocol::Epoch(1),
    );
    let mut cx = ReadCtx::open(&journal).expect("ctx");
    reader.trim(&mut cx, 8).expect("drain");
    let mut out = None;
    let t = Instant::now();
    while out.is_none() {
        ch.poll(1, &mut |io, r| out = Some((io.tag, r.is_ok())));
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the held write did not start"
        );
    }
    assert_eq!(out, Some((10, true)));
    assert_eq!(journal.sync_stats().recoveries, 1, "caught up");
    assert_eq!(journal.stats().full_failures, 1);
}
