//! Cost of journaling on the write path, in process: 4 KiB writes at queue depth 32 on one
//! channel to a RAM volume, raw against the same volume through `JournaledBdev` (journal also in
//! RAM, trimmed continuously by a second thread as a replicator would), alternating rounds.
//! Prints IOPS per round and the journaled/raw ratio. Timings are noisy on a shared machine:
//! compare the same-run ratio, not the absolute numbers.
//!
//! `cargo run --release -p ferrite-journal --example hotpath [rounds] [seconds]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevIo, BlockDevice, IoChannel, IoKind, MallocBdev};
use ferrite_gateway_protocol::{DomainId, Epoch, GroupId, Nsid};
use ferrite_journal::{Journal, JournalReader, JournaledBdev, ReadCtx};
use ferrite_reactor::IoBuf;

const QD: usize = 32;
const BLOCKS: u32 = 8;
const VOL_BLOCKS: u64 = 2 << 20; // 1 GiB of 512-byte blocks

fn run(ch: &mut dyn IoChannel, secs: f64, seed: &mut u64) -> f64 {
    let mut bufs: Vec<IoBuf> = (0..QD)
        .map(|_| {
            let mut b = IoBuf::new(4096);
            b.set_len(4096);
            b
        })
        .collect();
    let submit = |ch: &mut dyn IoChannel, b: IoBuf, seed: &mut u64| {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let lba = ((*seed >> 20) % (VOL_BLOCKS / 8)) * 8;
        ch.submit(BdevIo::new(
            0,
            IoKind::Write {
                lba,
                blocks: BLOCKS,
                fua: false,
            },
            Some(b),
        ))
        .map_err(|(_, e)| e)
        .expect("submit");
    };
    for b in bufs.drain(..) {
        submit(ch, b, seed);
    }
    let start = Instant::now();
    let mut done = 0u64;
    let mut back = Vec::with_capacity(QD);
    while start.elapsed().as_secs_f64() < secs {
        ch.poll(QD, &mut |io, r| {
            r.expect("write");
            back.push(io.buf.expect("buffer"));
        });
        done += back.len() as u64;
        for b in back.drain(..) {
            submit(ch, b, seed);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut left = QD;
    while left > 0 {
        left -= ch.poll(QD, &mut |_, _| {});
    }
    done as f64 / elapsed
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let secs: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let vol: Arc<dyn BlockDevice> =
        Arc::new(MallocBdev::new("vol", VOL_BLOCKS, 512).expect("volume"));
    // 16,384 slots of 4 KiB data (+ header block).
    let jdev: Arc<dyn BlockDevice> =
        Arc::new(MallocBdev::new("journal", 1 + 16384 * 9, 512).expect("journal"));
    let journal = Journal::format(jdev, GroupId(1), 4096).expect("format");
    let journaled =
        JournaledBdev::new(Arc::clone(&vol), Arc::clone(&journal), Nsid(1)).expect("wrap");
    let stop = Arc::new(AtomicBool::new(false));
    let trimmer = {
        let (journal, stop) = (Arc::clone(&journal), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reader = JournalReader::new(Arc::clone(&journal), DomainId(1), Epoch(1));
            let mut cx = ReadCtx::open(&journal).expect("read ctx");
            while !stop.load(Ordering::Relaxed) {
                let c = journal.committed();
                if c > journal.trimmed() {
                    reader.trim(&mut cx, c).expect("trim");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let mut raw_ch = vol.open_channel(&[]).expect("raw channel");
    let mut j_ch = journaled.open_channel(&[]).expect("journaled channel");
    let mut seed = 7u64;
    // Warm up both (page faults of the RAM devices).
    run(&mut *raw_ch, 1.0, &mut seed);
    run(&mut *j_ch, 1.0, &mut seed);
    let mut ratios = Vec::new();
    println!("round  raw IOPS  journaled IOPS  ratio");
    for r in 0..rounds {
        let raw = run(&mut *raw_ch, secs, &mut seed);
        let jr = run(&mut *j_ch, secs, &mut seed);
        ratios.push(jr / raw);
        println!("{r:5}  {raw:8.0}  {jr:14.0}  {:.3}", jr / raw);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    println!(
        "median ratio {:.3}; journal: {:?}",
        ratios[ratios.len() / 2],
        journal.stats()
    );
    stop.store(true, Ordering::Relaxed);
    trimmer.join().expect("trimmer");
}
