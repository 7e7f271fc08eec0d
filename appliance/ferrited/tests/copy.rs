//! Copy (19h), write-protected and thin namespaces, online resize: over NVMe/TCP with the host
//! library, against a real `ferrited` process (malloc and file namespaces) or an in-process
//! daemon with a test-only block device (`TestBdev`: failing ranges, read-only, thin, a size
//! that changes).

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{file_config, free_port, pattern, ram_config, Ferrited, NQN};
use ferrite_bdev::{BdevError, BdevIo, BlockDevice, Capabilities, IoChannel, IoKind, MallocBdev};
use ferrite_daemon::{Config, Daemon};
use ferrite_host::{ConnectOptions, Controller, HostError, IoData};
use ferrite_nvme::identify::{nsattr, nsfeat, ocfs, oncs};
use ferrite_nvme::io::CopyCommand;
use ferrite_nvme::log::{LID_CHANGED_NAMESPACES, LID_COMMANDS_SUPPORTED};
use ferrite_nvme::Status;
use ferrite_nvmf::NamespaceParams;

fn expect_status<T: std::fmt::Debug>(result: Result<T, HostError>, want: Status) {
    match result {
        Err(HostError::Status(s)) if s.code() == want.code() => {}
        other => panic!("expected {want}, got {other:?}"),
    }
}

/// Writes a distinct pattern over `(lba, blocks)`.
fn fill(c: &mut Controller, lba: u64, blocks: usize, bs: usize, generation: u64) {
    // At most 128 KiB per write (MDTS).
    let per = (128 * 1024 / bs).max(1);
    let mut done = 0;
    while done < blocks {
        let n = per.min(blocks - done);
        let at = lba + done as u64;
        c.write(1, 1, at, &pattern(at, n, bs, generation), false)
            .expect("write pattern");
        done += n;
    }
}

fn read(c: &mut Controller, lba: u64, blocks: usize, bs: usize) -> Vec<u8> {
    let per = (128 * 1024 / bs).max(1);
    let mut out = Vec::with_capacity(blocks * bs);
    let mut done = 0;
    while done < blocks {
        let n = per.min(blocks - done);
        let mut buf = vec![0u8; n * bs];
        c.read(1, 1, lba + done as u64, n as u32, &mut buf)
            .expect("read back");
        out.extend_from_slice(&buf);
        done += n;
    }
    out
}

/// Copies `ranges` to `sdlba` and checks the destination holds the sources, in order.
fn copy_and_verify(c: &mut Controller, ranges: &[(u64, u32)], sdlba: u64, bs: usize, fua: bool) {
    let expected: Vec<u8> = ranges
        .iter()
        .flat_map(|&(lba, n)| read(c, lba, n as usize, bs))
        .collect();
    c.copy(1, 1, sdlba, ranges, fua).expect("copy");
    let total: usize = ranges.iter().map(|&(_, n)| n as usize).sum();
    let got = read(c, sdlba, total, bs);
    assert!(got == expected, "destination differs from the sources");
}

#[test]
fn copy_on_malloc_is_offloaded_and_advertised() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut c = t.connect(1);
    let id = c.identify_controller().expect("identify controller");
    assert_ne!(id.oncs.get() & oncs::COPY, 0, "ONCS Copy");
    assert_eq!(id.oncs.get() & oncs::ALL_FAST_COPY, 0);
    assert_eq!(id.ocfs.get(), ocfs::FORMAT_0);
    let ns = c.identify_namespace(1).expect("identify namespace");
    assert_eq!(ns.msrc, 127);
    assert_eq!(ns.mssrl.get(), 65535);
    assert_eq!(ns.mcl.get(), (64 << 20) / 512);
    let effects = c
        .get_log_page(LID_COMMANDS_SUPPORTED, 0, 4096, 0)
        .expect("effects log");
    let copy = u32::from_le_bytes(effects[1024 + 0x19 * 4..][..4].try_into().expect("4 bytes"));
    assert_eq!(copy & 0b11, 0b11, "Copy supported, changes logical blocks");

    let bs = 512;
    fill(&mut c, 0, 1200, bs, 1);
    fill(&mut c, 9000, 40, bs, 2);
    // Three ranges, one longer than an emulation chunk, out of LBA order.
    copy_and_verify(
        &mut c,
        &[(9000, 40), (0, 700), (1100, 3)],
        20_000,
        bs,
        false,
    );
    copy_and_verify(&mut c, &[(5, 1)], 30_000, bs, true);
    // A range overlapping its destination (emulated: one chunk, read before written).
    copy_and_verify(&mut c, &[(100, 50)], 120, bs, false);
    t.stop();
}

#[test]
fn copy_on_a_file_namespace_is_emulated_in_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = Ferrited::start(&file_config(free_port(), &dir.path().join("disk0.img")));
    let mut c = t.connect(1);
    let bs = 4096;
    let ns = c.identify_namespace(1).expect("identify namespace");
    assert_eq!(ns.mcl.get(), (64 << 20) / 4096);
    fill(&mut c, 0, 100, bs, 3);
    fill(&mut c, 500, 8, bs, 4);
    // 70 blocks = 280 KiB: three 128 KiB chunks for the first range.
    copy_and_verify(&mut c, &[(10, 70), (500, 8), (0, 1)], 2000, bs, true);
    copy_and_verify(&mut c, &[(2000, 79)], 4000, bs, false);
    t.stop();
}

/// A Copy command with raw control over CDW12 and the descriptor data.
fn raw_copy(
    c: &mut Controller,
    copy: CopyCommand,
    ranges: &[(u64, u32)],
) -> ferrite_nvme::Completion {
    // Format 0h entries by hand: SLBA at bytes 15:08, NLB (0-based) at 17:16.
    let list: Vec<u8> = ranges
        .iter()
        .flat_map(|&(lba, n)| {
            let mut e = [0u8; 32];
            e[8..16].copy_from_slice(&lba.to_le_bytes());
            e[16..18].copy_from_slice(&((n - 1) as u16).to_le_bytes());
            e
        })
        .collect();
    c.raw_io(1, &copy.to_command(0), IoData::Write(&list))
        .expect("copy completes")
}

#[test]
fn bad_copy_commands_get_the_specified_status() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut c = t.connect(1);
    let blocks = 64 * 1024 * 1024 / 512;
    let base = CopyCommand {
        nsid: 1,
        sdlba: 1000,
        ..CopyCommand::default()
    };
    let status = |cqe: ferrite_nvme::Completion| cqe.status().code();
    // Descriptor format 1h is not in OCFS.
    let f1 = CopyCommand { desfmt: 1, ..base };
    assert_eq!(
        status(raw_copy(&mut c, f1, &[(0, 1)])),
        Status::INVALID_FIELD.code()
    );
    // NR = 128 > MSRC = 127.
    let many: Vec<(u64, u32)> = (0..129).map(|i| (i, 1)).collect();
    let nr = CopyCommand { nr: 128, ..base };
    assert_eq!(
        status(raw_copy(&mut c, nr, &many)),
        Status::COMMAND_SIZE_LIMIT_EXCEEDED.code()
    );
    // One range of 65536 blocks > MSSRL = 65535.
    assert_eq!(
        status(raw_copy(&mut c, base, &[(0, 65536)])),
        Status::COMMAND_SIZE_LIMIT_EXCEEDED.code()
    );
    // Three ranges of 65535 blocks > MCL = 131072.
    let three = CopyCommand {
        nr: 2,
        sdlba: 0,
        ..base
    };
    assert_eq!(
        status(raw_copy(&mut c, three, &[(0, 65535); 3])),
        Status::COMMAND_SIZE_LIMIT_EXCEEDED.code()
    );
    // A source or the destination past the end.
    assert_eq!(
        status(raw_copy(&mut c, base, &[(blocks - 4, 8)])),
        Status::LBA_OUT_OF_RANGE.code()
    );
    let far = CopyCommand {
        sdlba: blocks - 4,
        ..base
    };
    assert_eq!(
        status(raw_copy(&mut c, far, &[(0, 8)])),
        Status::LBA_OUT_OF_RANGE.code()
    );
    // NR says two ranges, the data holds one.
    let short = CopyCommand { nr: 1, ..base };
    assert_eq!(
        status(raw_copy(&mut c, short, &[(0, 8)])),
        Status::DATA_SGL_LENGTH_INVALID.code()
    );
    // The queue still works.
    c.copy(1, 1, 100, &[(0, 8)], false).expect("valid copy");
    t.stop();
}

// ---- In-process daemon with a test-only block device ----

/// What a `TestBdev` and its channels share.
#[derive(Debug)]
struct TestState {
    blocks: AtomicU64,
    read_only: AtomicBool,
    /// Requests touching these blocks fail with EIO.
    bad: Option<(u64, u64)>,
    copy: bool,
    thin: Option<u64>,
    /// Modifying requests that reached the inner device.
    modifying: AtomicU64,
}

/// A malloc device behind a size that can change, optional failing blocks, read-only and thin
/// flags, and Copy offload on or off.
#[derive(Debug)]
struct TestBdev {
    inner: MallocBdev,
    state: Arc<TestState>,
}

impl TestBdev {
    fn new(blocks: u64, max_blocks: u64, copy: bool) -> (Arc<TestBdev>, Arc<TestState>) {
        Self::with(blocks, max_blocks, copy, None, None)
    }

    fn with(
        blocks: u64,
        max_blocks: u64,
        copy: bool,
        bad: Option<(u64, u64)>,
        thin: Option<u64>,
    ) -> (Arc<TestBdev>, Arc<TestState>) {
        let state = Arc::new(TestState {
            blocks: AtomicU64::new(blocks),
            read_only: AtomicBool::new(false),
            bad,
            copy,
            thin,
            modifying: AtomicU64::new(0),
        });
        let inner = MallocBdev::new("test-inner", max_blocks, 512).expect("malloc");
        (
            Arc::new(TestBdev {
                inner,
                state: Arc::clone(&state),
            }),
            state,
        )
    }
}

impl BlockDevice for TestBdev {
    fn name(&self) -> &str {
        "test"
    }
    fn block_size(&self) -> u32 {
        512
    }
    fn num_blocks(&self) -> u64 {
        self.state.blocks.load(Ordering::SeqCst)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            copy: self.state.copy,
            read_only: self.state.read_only.load(Ordering::SeqCst),
            thin_provisioned: self.state.thin.is_some(),
            ..self.inner.capabilities()
        }
    }
    fn uuid(&self) -> [u8; 16] {
        [7; 16]
    }
    fn open_channel(
        &self,
        buffers: &[&ferrite_bdev::PoolRegions],
    ) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(TestChannel {
            inner: self.inner.open_channel(buffers)?,
            failed: VecDeque::new(),
            state: Arc::clone(&self.state),
        }))
    }
    fn allocated_blocks(&self) -> Option<u64> {
        self.state.thin
    }
}

struct TestChannel {
    inner: Box<dyn IoChannel>,
    failed: VecDeque<BdevIo>,
    state: Arc<TestState>,
}

impl IoChannel for TestChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        let blocks = self.state.blocks.load(Ordering::SeqCst);
        let ranges = io.kind.range().into_iter().chain(io.kind.source_range());
        for (lba, n) in ranges.clone() {
            if lba.checked_add(n).is_none_or(|end| end > blocks) {
                return Err((
                    io,
                    BdevError::OutOfRange {
                        lba,
                        blocks: n,
                        num_blocks: blocks,
                    },
                ));
            }
        }
        if io.kind.modifies() && self.state.read_only.load(Ordering::SeqCst) {
            return Err((io, BdevError::ReadOnly));
        }
        if matches!(io.kind, IoKind::Copy { .. }) && !self.state.copy {
            return Err((io, BdevError::Unsupported("copy")));
        }
        let hits_bad = self.state.bad.is_some_and(|(bad, len)| {
            ranges
                .clone()
                .any(|(lba, n)| lba < bad + len && bad < lba + n)
        });
        if hits_bad {
            self.failed.push_back(io);
            return Ok(());
        }
        if io.kind.modifies() {
            self.state.modifying.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.submit(io)
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        let mut n = 0;
        while n < max {
            let Some(io) = self.failed.pop_front() else {
                break;
            };
            done(io, Err(BdevError::Io(std::io::Error::from_raw_os_error(5))));
            n += 1;
        }
        n + self.inner.poll(max - n, done)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.failed.len()
    }
}

/// An in-process daemon exporting `bdev` as NSID 1 of NQN.
fn daemon_with(bdev: Arc<TestBdev>) -> (Daemon, Controller) {
    let port = free_port();
    let text = format!(
        r#"cores = "0"
listen = ["127.0.0.1:{port}"]
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
namespaces = []
"#
    );
    let config = Config::parse(&text, Path::new("copy-test.toml")).expect("config");
    let d = Daemon::start(&config, false).expect("daemon starts");
    d.target.add_bdev("t0", bdev).expect("add test bdev");
    d.target
        .add_namespace(
            NQN,
            NamespaceParams {
                nsid: Some(1),
                bdev_name: "t0".into(),
                ..Default::default()
            },
        )
        .expect("export it");
    let mut opts = ConnectOptions::new(d.listening[0], NQN);
    opts.io_queues = 1;
    let c = Controller::connect(opts).expect("connect");
    (d, c)
}

#[test]
fn a_failed_range_is_reported_in_dword_0() {
    for offload in [true, false] {
        // Blocks 1000..1008 fail.
        let (bdev, _) = TestBdev::with(8192, 8192, offload, Some((1000, 8)), None);
        let (d, mut c) = daemon_with(bdev);
        let bs = 512;
        fill(&mut c, 0, 200, bs, 5);
        let ranges = [(0u64, 8u32), (100, 50), (1004, 2), (150, 8)];
        let cqe = c
            .copy_completion(1, 1, 4000, &ranges, false)
            .expect("copy completes");
        let want = if offload {
            Status::WRITE_FAULT
        } else {
            Status::UNRECOVERED_READ_ERROR
        };
        assert_eq!(cqe.status().code(), want.code(), "offload {offload}");
        assert_eq!(
            cqe.result(),
            2,
            "lowest range not copied (offload {offload})"
        );
        // Ranges 0 and 1 reached the destination.
        let expected: Vec<u8> = [(0u64, 8usize), (100, 50)]
            .iter()
            .flat_map(|&(lba, n)| read(&mut c, lba, n, bs))
            .collect();
        assert!(read(&mut c, 4000, 58, bs) == expected);
        // A failure in the first range reports 0.
        let cqe = c
            .copy_completion(1, 1, 5000, &[(999, 4), (0, 1)], false)
            .expect("copy completes");
        assert!(!cqe.status().is_success());
        assert_eq!(cqe.result(), 0);
        // Success reports 0 too, and the queue goes on.
        copy_and_verify(&mut c, &[(0, 8), (20, 300)], 6000, bs, false);
        drop(c);
        d.shutdown().expect("daemon stops");
    }
}

#[test]
fn a_write_protected_namespace_refuses_changes_before_the_backend() {
    let (bdev, state) = TestBdev::with(4096, 4096, true, None, Some(10));
    state.read_only.store(true, Ordering::SeqCst);
    let (d, mut c) = daemon_with(bdev);
    let ns = c.identify_namespace(1).expect("identify namespace");
    assert_eq!(ns.nsattr & nsattr::WRITE_PROTECTED, nsattr::WRITE_PROTECTED);
    assert_eq!(
        ns.nsfeat & nsfeat::THIN_PROVISIONING,
        nsfeat::THIN_PROVISIONING
    );
    assert_eq!(
        (ns.nsze.get(), ns.ncap.get(), ns.nuse.get()),
        (4096, 4096, 10)
    );
    let block = vec![0xA5u8; 512];
    expect_status(
        c.write(1, 1, 0, &block, false),
        Status::NAMESPACE_WRITE_PROTECTED,
    );
    expect_status(
        c.write_zeroes(1, 1, 0, 8, false),
        Status::NAMESPACE_WRITE_PROTECTED,
    );
    expect_status(
        c.deallocate(1, 1, &[(0, 8)]),
        Status::NAMESPACE_WRITE_PROTECTED,
    );
    expect_status(
        c.copy(1, 1, 100, &[(0, 8)], false),
        Status::NAMESPACE_WRITE_PROTECTED,
    );
    assert_eq!(
        state.modifying.load(Ordering::SeqCst),
        0,
        "nothing reached the bdev"
    );
    let mut buf = vec![0u8; 4096];
    c.read(1, 1, 0, 8, &mut buf).expect("reads still work");
    c.flush(1, 1).expect("flush works");
    drop(c);
    d.shutdown().expect("daemon stops");
}

/// Waits for an AER completion and returns its Dword 0.
fn wait_event(c: &mut Controller) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = c.take_admin_events().expect("admin events");
        if let Some(e) = events.first() {
            assert!(e.cqe.status().is_success(), "{e:?}");
            return e.cqe.result();
        }
        assert!(Instant::now() < deadline, "no asynchronous event");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn changed_namespaces(c: &mut Controller) -> Vec<u32> {
    let page = c
        .get_log_page(LID_CHANGED_NAMESPACES, 0, 4096, 0)
        .expect("changed namespace log");
    page.chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
        .take_while(|&n| n != 0)
        .collect()
}

#[test]
fn online_resize_is_seen_by_identify_io_and_the_changed_namespace_log() {
    let (bdev, state) = TestBdev::new(1024, 4096, true);
    let (d, mut c) = daemon_with(bdev);
    // The add itself may have queued a change: consume it.
    let _ = changed_namespaces(&mut c);
    let block = vec![0x5Au8; 512];
    expect_status(c.write(1, 1, 1500, &block, false), Status::LBA_OUT_OF_RANGE);

    // Grow.
    c.submit_async_event_request().expect("aer");
    state.blocks.store(2048, Ordering::SeqCst);
    let notified = d.target.bdev_resized("t0").expect("resize notification");
    assert_eq!(notified, vec![(NQN.to_string(), 1)]);
    // Notice (type 2), Namespace Attribute Changed (00h), log page 04h.
    assert_eq!(wait_event(&mut c), 0x0004_0002);
    assert_eq!(changed_namespaces(&mut c), vec![1]);
    assert_eq!(c.identify_namespace(1).expect("identify").nsze.get(), 2048);
    c.write(1, 1, 1500, &block, false)
        .expect("write past the old end");
    c.copy(1, 1, 2000, &[(1500, 1)], false)
        .expect("copy into the new blocks");
    let mut buf = vec![0u8; 512];
    c.read(1, 1, 2000, 1, &mut buf).expect("read it back");
    assert_eq!(buf, block);

    // Shrink.
    c.submit_async_event_request().expect("aer");
    state.blocks.store(512, Ordering::SeqCst);
    d.target.bdev_resized("t0").expect("resize notification");
    assert_eq!(wait_event(&mut c), 0x0004_0002);
    assert_eq!(changed_namespaces(&mut c), vec![1]);
    assert_eq!(c.identify_namespace(1).expect("identify").nsze.get(), 512);
    expect_status(c.write(1, 1, 600, &block, false), Status::LBA_OUT_OF_RANGE);
    expect_status(c.read(1, 1, 1500, 1, &mut buf), Status::LBA_OUT_OF_RANGE);
    expect_status(
        c.copy(1, 1, 0, &[(511, 2)], false),
        Status::LBA_OUT_OF_RANGE,
    );
    c.read(1, 1, 100, 1, &mut buf)
        .expect("blocks inside still read");
    drop(c);
    d.shutdown().expect("daemon stops");
}
