//! The io_uring file backend, on files in /var/tmp (a real disk file system) and, where
//! present, /dev/shm (tmpfs: no ZERO_RANGE, so zeroes are emulated).

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ferrite_bdev::{BdevError, BdevIo, BlockDevice, FileBdev, IoKind};
use ferrite_reactor::{BufferPool, IoBuf};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferrite-bdev")
        .tempdir_in("/var/tmp")
        .expect("temp dir")
}

/// File system type of the mount holding `path` (longest mount-point prefix).
fn fs_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let point = f.nth(1)?;
            let kind = f.next()?;
            path.starts_with(point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

fn is_tmpfs(path: &Path) -> bool {
    fs_type(path).as_deref() == Some("tmpfs")
}

#[test]
fn create_open_and_describe() {
    let dir = tmpdir();
    let path = dir.path().join("disk.img");
    let dev = FileBdev::create("f0", &path, 8 << 20, 4096).expect("create");
    assert_eq!(dev.name(), "f0");
    assert_eq!(dev.block_size(), 4096);
    assert_eq!(dev.num_blocks(), 2048);
    let caps = dev.capabilities();
    assert!(caps.write_zeroes && caps.volatile_write_cache);
    assert!(caps.max_transfer_bytes >= 128 * 1024);
    // Sparse: nothing allocated yet.
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!(meta.len(), 8 << 20);
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) < 64);
    if matches!(
        fs_type(dir.path()).as_deref(),
        Some("ext4" | "xfs" | "btrfs")
    ) {
        assert!(dev.is_direct(), "O_DIRECT on a disk file system");
    }
    let uuid = dev.uuid();
    drop(dev);
    let again = FileBdev::open("f0", &path, Some(4096)).expect("reopen");
    assert_eq!(again.uuid(), uuid, "UUID is stable across opens");
    let small = FileBdev::open("f0", &path, Some(512)).expect("reopen with 512");
    assert_eq!(small.num_blocks(), 16384);
    assert_ne!(again.with_uuid([1; 16]).uuid(), uuid);
    // Growing an existing file is allowed, shrinking is refused.
    assert_eq!(
        FileBdev::create("f0", &path, 16 << 20, 4096)
            .expect("extend")
            .num_blocks(),
        4096
    );
    assert!(matches!(
        FileBdev::create("f0", &path, 4 << 20, 4096),
        Err(BdevError::InvalidConfig(_))
    ));
}

#[test]
fn bad_files_are_refused() {
    let dir = tmpdir();
    let odd = dir.path().join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).expect("write odd file");
    match FileBdev::open("odd", &odd, None) {
        Err(BdevError::InvalidConfig(msg)) => assert!(msg.contains("not a multiple"), "{msg}"),
        other => panic!("odd size accepted: {other:?}"),
    }
    assert!(matches!(
        FileBdev::open("dir", dir.path(), None),
        Err(BdevError::InvalidConfig(_))
    ));
    match FileBdev::open("missing", &dir.path().join("missing"), None) {
        Err(e @ BdevError::File { .. }) => assert!(e.to_string().contains("missing"), "{e}"),
        other => panic!("missing file opened: {other:?}"),
    }
    assert!(FileBdev::create("c", &dir.path().join("c"), 1000, 512).is_err());
    assert!(FileBdev::create("c", &dir.path().join("c"), 4096, 1000).is_err());
}

fn random_patterns(dir: &Path, bs: u32) {
    let dev = FileBdev::create("f", &dir.join(format!("p{bs}.img")), 16 << 20, bs).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    let mut rng = StdRng::seed_from_u64(u64::from(bs));
    let max = 256 * 1024 / bs;
    for i in 0..150 {
        let blocks = rng.gen_range(1..=max);
        let lba = rng.gen_range(0..=dev.num_blocks() - u64::from(blocks));
        let data = pattern(i, blocks as usize * bs as usize);
        write(ch.as_mut(), bs, lba, &data, i % 4 == 0);
        assert_eq!(
            read(ch.as_mut(), bs, lba, blocks),
            data,
            "lba {lba} blocks {blocks}"
        );
    }
    assert_eq!(ch.stats().fixed_buffer_ops, 0, "no registered pools given");
}

#[test]
fn random_patterns_read_back() {
    let dir = tmpdir();
    random_patterns(dir.path(), 512);
    random_patterns(dir.path(), 4096);
}

#[test]
fn many_requests_in_flight_at_once() {
    let dir = tmpdir();
    let dev = FileBdev::create("f", &dir.path().join("q.img"), 4 << 20, 4096).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    for lba in 0..200u64 {
        let mut buf = IoBuf::new(4096);
        buf.set_len(4096);
        buf.as_mut_slice().copy_from_slice(&pattern(lba, 4096));
        let io = BdevIo::new(
            lba,
            IoKind::Write {
                lba,
                blocks: 1,
                fua: false,
            },
            Some(buf),
        );
        ch.submit(io).expect("room for 200");
    }
    assert_eq!(ch.in_flight(), 200);
    let done = reap(ch.as_mut(), 200);
    assert!(done.iter().all(|(_, r)| r.is_ok()));
    let mut tags: Vec<u64> = done.iter().map(|(io, _)| io.tag).collect();
    tags.sort_unstable();
    assert_eq!(
        tags,
        (0..200).collect::<Vec<_>>(),
        "each request exactly once"
    );
    for lba in (0..200u64).step_by(7) {
        assert_eq!(read(ch.as_mut(), 4096, lba, 1), pattern(lba, 4096));
    }
    let stats = ch.stats();
    assert!(
        stats.kernel_enters < stats.submitted,
        "submissions are batched: {stats:?}"
    );
}

#[test]
fn fua_and_flush_survive_reopen() {
    let dir = tmpdir();
    let path = dir.path().join("durable.img");
    let a = pattern(1, 64 * 1024);
    let b = pattern(2, 32 * 1024);
    {
        let dev = FileBdev::create("f", &path, 4 << 20, 512).expect("create");
        let mut ch = dev.open_channel(&[]).expect("channel");
        write(ch.as_mut(), 512, 100, &a, true);
        write(ch.as_mut(), 512, 4000, &b, false);
        simple(ch.as_mut(), IoKind::Flush).expect("flush");
        assert_eq!(ch.stats().failed, 0);
    }
    let dev = FileBdev::open("f", &path, Some(512)).expect("reopen");
    let mut ch = dev.open_channel(&[]).expect("channel");
    assert_eq!(read(ch.as_mut(), 512, 100, 128), a);
    assert_eq!(read(ch.as_mut(), 512, 4000, 64), b);
    // And the bytes are in the file itself, where any other reader sees them.
    let on_disk = std::fs::read(&path).expect("read file");
    assert_eq!(&on_disk[100 * 512..100 * 512 + a.len()], &a[..]);
}

fn zeroes_and_unmap(dev: &FileBdev) -> (u64, bool) {
    let mut ch = dev.open_channel(&[]).expect("channel");
    let bs = dev.block_size();
    let n = 512u32;
    let data = pattern(7, n as usize * bs as usize);
    for part in 0..(n / 64) {
        let chunk = 64 * bs as usize;
        let slice = &data[part as usize * chunk..(part as usize + 1) * chunk];
        write(ch.as_mut(), bs, u64::from(part * 64), slice, false);
    }
    simple(
        ch.as_mut(),
        IoKind::WriteZeroes {
            lba: 3,
            blocks: 200,
        },
    )
    .expect("zeroes");
    let unmap = dev.capabilities().unmap;
    if unmap {
        simple(
            ch.as_mut(),
            IoKind::Unmap {
                lba: 300,
                blocks: 100,
            },
        )
        .expect("unmap");
    } else {
        let (_, e) = ch
            .submit(BdevIo::new(
                1,
                IoKind::Unmap {
                    lba: 300,
                    blocks: 100,
                },
                None,
            ))
            .expect_err("unsupported");
        assert!(matches!(e, BdevError::Unsupported(_)));
    }
    let got: Vec<u8> = (0..n / 64)
        .flat_map(|part| read(ch.as_mut(), bs, u64::from(part * 64), 64))
        .collect();
    for (i, (g, d)) in got
        .chunks(bs as usize)
        .zip(data.chunks(bs as usize))
        .enumerate()
    {
        if (3..203).contains(&i) || (unmap && (300..400).contains(&i)) {
            assert!(g.iter().all(|&x| x == 0), "block {i} reads zero");
        } else {
            assert_eq!(g, d, "block {i} kept");
        }
    }
    // Zero-length requests complete without the kernel.
    simple(ch.as_mut(), IoKind::WriteZeroes { lba: 0, blocks: 0 }).expect("empty zeroes");
    (ch.stats().emulated_zeroes, unmap)
}

#[test]
fn write_zeroes_and_unmap_read_back_zero() {
    let dir = tmpdir();
    let dev = FileBdev::create("f", &dir.path().join("z.img"), 4 << 20, 512).expect("create");
    let (_, unmap) = zeroes_and_unmap(&dev);
    assert!(unmap, "a disk file system punches holes");
}

/// tmpfs has no ZERO_RANGE: WriteZeroes falls back to writing zeroes.
#[test]
fn write_zeroes_emulated_on_tmpfs() {
    let shm = Path::new("/dev/shm");
    if !is_tmpfs(shm) {
        eprintln!("skipped: /dev/shm is not tmpfs here");
        return;
    }
    let dir = tempfile::tempdir_in(shm).expect("temp dir in /dev/shm");
    let dev = FileBdev::create("f", &dir.path().join("z.img"), 4 << 20, 4096).expect("create");
    let (emulated, _) = zeroes_and_unmap(&dev);
    assert!(emulated >= 1, "zeroes written by the backend");
    // Later channels skip the refused fallocate straight away.
    let mut ch = dev.open_channel(&[]).expect("channel");
    simple(
        ch.as_mut(),
        IoKind::WriteZeroes {
            lba: 0,
            blocks: 1000,
        },
    )
    .expect("zeroes");
    assert_eq!(ch.stats().emulated_zeroes, 1);
    assert!(read(ch.as_mut(), 4096, 0, 64).iter().all(|&b| b == 0));
}

#[test]
fn invalid_requests_are_handed_back() {
    let dir = tmpdir();
    let dev = FileBdev::create("f", &dir.path().join("r.img"), 1 << 20, 4096).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    let io = BdevIo::new(
        5,
        IoKind::Read {
            lba: 255,
            blocks: 2,
        },
        Some(IoBuf::new(8192)),
    );
    let (io, e) = ch.submit(io).expect_err("past the end");
    assert_eq!(io.tag, 5);
    assert!(matches!(
        e,
        BdevError::OutOfRange {
            lba: 255,
            blocks: 2,
            num_blocks: 256
        }
    ));
    let io = BdevIo::new(
        6,
        IoKind::Read { lba: 0, blocks: 3 },
        Some(IoBuf::new(8192)),
    );
    let (_, e) = ch.submit(io).expect_err("small buffer");
    assert!(matches!(e, BdevError::BufferTooSmall { .. }));
    let io = BdevIo::new(
        7,
        IoKind::WriteZeroes {
            lba: 200,
            blocks: 57,
        },
        None,
    );
    assert!(matches!(
        ch.submit(io),
        Err((_, BdevError::OutOfRange { .. }))
    ));
    assert_eq!(ch.in_flight(), 0);
}

#[test]
fn queue_full_hands_back() {
    let dir = tmpdir();
    let dev = FileBdev::create("f", &dir.path().join("qf.img"), 1 << 20, 4096)
        .expect("create")
        .with_queue_depth(4);
    let mut ch = dev.open_channel(&[]).expect("channel");
    for lba in 0..4u64 {
        let io = BdevIo::new(lba, IoKind::Read { lba, blocks: 1 }, Some(IoBuf::new(4096)));
        ch.submit(io).expect("fits");
    }
    let io = BdevIo::new(
        99,
        IoKind::Read { lba: 9, blocks: 1 },
        Some(IoBuf::new(4096)),
    );
    let (io, e) = ch.submit(io).expect_err("ring full");
    assert!(matches!(e, BdevError::QueueFull) && e.is_retryable());
    assert_eq!((io.tag, io.buf.is_some()), (99, true));
    assert_eq!(reap(ch.as_mut(), 4).len(), 4);
    ch.submit(io).expect("room after poll");
    assert_eq!(reap(ch.as_mut(), 1).len(), 1);
    assert_eq!(ch.stats().queue_full, 1);
}

#[test]
fn registered_pool_buffers_use_fixed_io() {
    let dir = tmpdir();
    let dev = FileBdev::create("f", &dir.path().join("fx.img"), 4 << 20, 4096).expect("create");
    let mut other_pool = BufferPool::new(2, 8192); // not registered
    let mut pool = BufferPool::new(8, 64 * 1024);
    let small_pool = BufferPool::new(2, 4096);
    let mut ch = dev
        .open_channel(&[small_pool.regions(), pool.regions()])
        .expect("channel");
    let mut bufs: Vec<IoBuf> = (0..4).map(|_| pool.get().expect("free")).collect();
    for (i, buf) in bufs.iter_mut().enumerate() {
        buf.set_len(64 * 1024);
        buf.as_mut_slice()
            .copy_from_slice(&pattern(i as u64, 64 * 1024));
    }
    for (i, buf) in bufs.into_iter().enumerate() {
        let lba = i as u64 * 16;
        let fua = i == 3;
        ch.submit(BdevIo::new(
            i as u64,
            IoKind::Write {
                lba,
                blocks: 16,
                fua,
            },
            Some(buf),
        ))
        .expect("submit");
    }
    for (io, r) in reap(ch.as_mut(), 4) {
        r.expect("fixed write");
        pool.put(io.buf.expect("buffer back"));
    }
    assert_eq!(ch.stats().fixed_buffer_ops, 4);
    for i in 0..4u64 {
        let buf = pool.get().expect("free");
        let (io, r) = run(
            ch.as_mut(),
            BdevIo::new(
                i,
                IoKind::Read {
                    lba: i * 16,
                    blocks: 16,
                },
                Some(buf),
            ),
        );
        r.expect("fixed read");
        let buf = io.buf.expect("buffer back");
        assert!(buf.as_slice() == pattern(i, 64 * 1024), "fixed read {i}");
        pool.put(buf);
    }
    assert_eq!(ch.stats().fixed_buffer_ops, 8);
    // A pooled buffer from a pool that was not registered takes the ordinary path.
    let buf = other_pool.get().expect("free");
    assert_eq!(buf.pool_index(), Some(0));
    let (io, r) = run(
        ch.as_mut(),
        BdevIo::new(9, IoKind::Read { lba: 0, blocks: 2 }, Some(buf)),
    );
    r.expect("unregistered read");
    assert_eq!(
        io.buf.as_ref().map(|b| b.as_slice().to_vec()),
        Some(pattern(0, 8192))
    );
    other_pool.put(io.buf.expect("buffer back"));
    assert_eq!(ch.stats().fixed_buffer_ops, 8);
    assert_eq!(pool.stats().free, 8);
}

#[test]
fn short_transfer_is_resubmitted() {
    let dir = tmpdir();
    let path = dir.path().join("short.img");
    let dev = FileBdev::create("f", &path, 64 * 4096, 4096).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    write(ch.as_mut(), 4096, 0, &pattern(3, 64 * 4096), false);
    // Shrink the file behind the device's back: a read across the new end comes back short,
    // the remainder is submitted again and hits the end of file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(40 * 4096))
        .expect("truncate");
    let io = BdevIo::new(
        1,
        IoKind::Read {
            lba: 32,
            blocks: 16,
        },
        Some(IoBuf::new(16 * 4096)),
    );
    let (_, r) = run(ch.as_mut(), io);
    match r {
        Err(BdevError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
        other => panic!("read past the shrunken end: {other:?}"),
    }
    assert_eq!(ch.stats().short_resubmits, 1);
    assert_eq!(ch.stats().failed, 1);
    // Within the remaining file, reads still work.
    assert_eq!(
        read(ch.as_mut(), 4096, 0, 8),
        pattern(3, 64 * 4096)[..8 * 4096]
    );
}

#[test]
fn wakeup_fd_signals_completions() {
    let dir = tmpdir();
    let dev = FileBdev::create("f", &dir.path().join("w.img"), 1 << 20, 4096).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    let fd = ch
        .wakeup_fd()
        .expect("io_uring eventfd")
        .try_clone_to_owned()
        .expect("dup");
    let mut efd = std::fs::File::from(fd);
    let mut counter = [0u8; 8];
    let err = efd.read(&mut counter).expect_err("nothing pending yet");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    ch.submit(BdevIo::new(1, IoKind::Flush, None))
        .expect("submit");
    // The first poll pushes the submission; every posted completion signals the eventfd.
    let mut done = ch.poll(1, &mut |_, r| r.expect("flush"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match efd.read(&mut counter) {
            Ok(n) => {
                assert_eq!(n, 8);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no wakeup");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("eventfd: {e}"),
        }
    }
    assert!(u64::from_ne_bytes(counter) >= 1);
    done += reap(ch.as_mut(), 1 - done).len();
    assert_eq!(done, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn file_matches_model(ops in ops_strategy(64, 16), big_blocks in any::<bool>()) {
        let bs = if big_blocks { 4096 } else { 512 };
        let dir = tmpdir();
        let dev = FileBdev::create("f", &dir.path().join("m.img"), 64 * u64::from(bs), bs)
            .expect("create");
        check_against_model(&dev, &ops);
    }
}

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    /// `None` where loop devices cannot be set up (not root, no loop driver).
    fn attach(backing: &Path, sector: u32) -> Option<Loop> {
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show", "-b", &sector.to_string()])
            .arg(backing)
            .output()
            .ok()?;
        let dev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !dev.is_empty()).then_some(Loop(dev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn block_device() {
    let dir = tmpdir();
    let backing = dir.path().join("backing.img");
    std::fs::File::create(&backing)
        .and_then(|f| f.set_len(8 << 20))
        .expect("backing file");
    let Some(lo) = Loop::attach(&backing, 4096) else {
        eprintln!("skipped: cannot set up a loop device here");
        return;
    };
    let path = Path::new(&lo.0);
    assert!(matches!(
        FileBdev::open("blk", path, Some(512)),
        Err(BdevError::InvalidConfig(_))
    ));
    let dev = FileBdev::open("blk", path, None).expect("open block device");
    assert_eq!((dev.block_size(), dev.num_blocks()), (4096, 2048));
    assert!(dev.is_direct());
    // Opened exclusively: a second opener (or a mount) is refused while we hold it.
    match FileBdev::open("again", path, None) {
        Err(BdevError::File { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EBUSY))
        }
        other => panic!("second exclusive open: {other:?}"),
    }
    let mut ch = dev.open_channel(&[]).expect("channel");
    let data = pattern(11, 64 * 4096);
    write(ch.as_mut(), 4096, 100, &data, true);
    write(ch.as_mut(), 4096, 2047, &data[..4096], false);
    simple(ch.as_mut(), IoKind::Flush).expect("flush");
    assert_eq!(read(ch.as_mut(), 4096, 100, 64), data);
    simple(
        ch.as_mut(),
        IoKind::WriteZeroes {
            lba: 110,
            blocks: 10,
        },
    )
    .expect("zeroes");
    let got = read(ch.as_mut(), 4096, 100, 64);
    assert!(got[10 * 4096..20 * 4096].iter().all(|&b| b == 0));
    assert_eq!(got[..10 * 4096], data[..10 * 4096]);
    assert_eq!(got[20 * 4096..], data[20 * 4096..]);
    if dev.capabilities().unmap {
        simple(
            ch.as_mut(),
            IoKind::Unmap {
                lba: 140,
                blocks: 4,
            },
        )
        .expect("unmap");
        assert!(read(ch.as_mut(), 4096, 140, 4).iter().all(|&b| b == 0));
    }
    let uuid = dev.uuid();
    drop(ch);
    drop(dev);
    assert_eq!(
        FileBdev::open("blk", path, None).expect("reopen").uuid(),
        uuid
    );
    drop(lo);
    let on_disk = std::fs::read(&backing).expect("backing file");
    assert_eq!(on_disk[100 * 4096..110 * 4096], data[..10 * 4096]);
    assert_eq!(on_disk[2047 * 4096..], data[..4096]);
}

/// Dropping a channel with requests in flight waits for the kernel before freeing buffers
/// (and complains in debug builds: it is a caller bug).
#[test]
fn drop_with_requests_in_flight_waits() {
    let dir = tmpdir();
    let path = dir.path().join("drop.img");
    let dev = FileBdev::create("f", &path, 4 << 20, 4096).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    for lba in 0..64u64 {
        let mut buf = IoBuf::new(4096);
        buf.set_len(4096);
        buf.as_mut_slice().copy_from_slice(&pattern(lba, 4096));
        let io = BdevIo::new(
            lba,
            IoKind::Write {
                lba,
                blocks: 1,
                fua: false,
            },
            Some(buf),
        );
        ch.submit(io).expect("submit");
    }
    // Half of them reach the kernel before the drop, half are still only queued.
    ch.poll(0, &mut |_, _| {});
    for lba in 64..128u64 {
        let io = BdevIo::new(lba, IoKind::Read { lba, blocks: 1 }, Some(IoBuf::new(4096)));
        ch.submit(io).expect("submit");
    }
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(ch)));
    assert_eq!(dropped.is_err(), cfg!(debug_assertions));
    let on_disk = std::fs::read(&path).expect("read file");
    for lba in 0..64usize {
        assert!(on_disk[lba * 4096..(lba + 1) * 4096] == pattern(lba as u64, 4096));
    }
}
