//! Helpers: run requests through a volume channel polled in the test thread.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind, MallocBdev};
use ferrite_reactor::IoBuf;
use ferrite_volume::{Pool, PoolOptions};

pub mod testdev;

pub const BS: u32 = 512;
pub const CLUSTER: u64 = 64 << 10;

pub fn malloc(name: &str, mib: u64) -> Arc<dyn BlockDevice> {
    Arc::new(MallocBdev::new(name, (mib << 20) / u64::from(BS), BS).expect("malloc bdev"))
}

pub fn small_pool(name: &str, mib: u64) -> (Arc<Pool>, Arc<dyn BlockDevice>) {
    let dev = malloc(&format!("{name}-m0"), mib);
    let pool = Pool::create(
        name,
        vec![Arc::clone(&dev)],
        PoolOptions {
            cluster_size: CLUSTER,
        },
    )
    .expect("pool");
    (pool, dev)
}

pub fn run(ch: &mut dyn IoChannel, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
    if let Err((_, e)) = ch.submit(io) {
        return (BdevIo::new(0, IoKind::Flush, None), Err(e));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut out = None;
    while out.is_none() {
        if ch.poll(1, &mut |io, r| out = Some((io, r))) == 0 {
            assert!(Instant::now() < deadline, "request never completed");
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    out.expect("completed")
}

pub fn write(ch: &mut dyn IoChannel, lba: u64, data: &[u8]) -> Result<(), BdevError> {
    let mut buf = IoBuf::new(data.len());
    buf.set_len(data.len());
    buf.as_mut_slice().copy_from_slice(data);
    let kind = IoKind::Write {
        lba,
        blocks: (data.len() / BS as usize) as u32,
        fua: false,
    };
    run(ch, BdevIo::new(1, kind, Some(buf))).1
}

pub fn read(ch: &mut dyn IoChannel, lba: u64, blocks: u32) -> Result<Vec<u8>, BdevError> {
    let mut buf = IoBuf::new(blocks as usize * BS as usize);
    buf.spare_mut().fill(0xEE);
    let (io, r) = run(ch, BdevIo::new(2, IoKind::Read { lba, blocks }, Some(buf)));
    r.map(|()| io.buf.expect("buffer back").as_slice().to_vec())
}

pub fn other(ch: &mut dyn IoChannel, kind: IoKind) -> Result<(), BdevError> {
    run(ch, BdevIo::new(3, kind, None)).1
}

pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8 + 1)
        .collect()
}

pub fn assert_clean(pool: &Pool) {
    let r = pool.check().expect("check runs");
    assert!(r.errors.is_empty(), "pool check: {:?}", r.errors);
}

pub fn file(dir: &std::path::Path, name: &str, mib: u64) -> Arc<dyn BlockDevice> {
    let path = dir.join(format!("{name}.img"));
    Arc::new(ferrite_bdev::FileBdev::create(name, &path, mib << 20, BS).expect("file bdev"))
}

pub fn pool_over(name: &str, devs: &[Arc<dyn BlockDevice>]) -> Arc<Pool> {
    Pool::create(
        name,
        devs.to_vec(),
        PoolOptions {
            cluster_size: CLUSTER,
        },
    )
    .expect("pool")
}

/// Reads `blocks` blocks of a device directly (not through a pool).
pub fn raw_read(dev: &dyn BlockDevice, lba: u64, blocks: u32) -> Vec<u8> {
    let mut ch = dev.open_channel(&[]).expect("raw channel");
    read(&mut *ch, lba, blocks).expect("raw read")
}

pub fn raw_write(dev: &dyn BlockDevice, lba: u64, data: &[u8]) {
    let mut ch = dev.open_channel(&[]).expect("raw channel");
    write(&mut *ch, lba, data).expect("raw write");
}

/// The two buffers `rw_cycles` reuses: a 4 KiB write buffer and a 4 KiB read buffer.
pub fn rw_buffers() -> (Option<IoBuf>, Option<IoBuf>) {
    let mut w = IoBuf::new(4096);
    w.set_len(4096);
    (Some(w), Some(IoBuf::new(4096)))
}

/// `n` times: a write and a read of 8 blocks at `lba` in flight together, reusing `bufs`.
pub fn rw_cycles(
    ch: &mut dyn IoChannel,
    lba: u64,
    n: usize,
    bufs: &mut (Option<IoBuf>, Option<IoBuf>),
) {
    for _ in 0..n {
        let kind = IoKind::Write {
            lba,
            blocks: 8,
            fua: false,
        };
        ch.submit(BdevIo::new(1, kind, bufs.0.take()))
            .map_err(|(_, e)| e)
            .expect("write accepted");
        let kind = IoKind::Read { lba, blocks: 8 };
        ch.submit(BdevIo::new(2, kind, bufs.1.take()))
            .map_err(|(_, e)| e)
            .expect("read accepted");
        let mut got = 0;
        while got < 2 {
            got += ch.poll(2, &mut |io, res| {
                res.expect("completed");
                if io.tag == 1 {
                    bufs.0 = io.buf;
                } else {
                    bufs.1 = io.buf;
                }
            });
        }
    }
}
