//! Backup, restore and scan against the virtual library with in-memory namespaces.

use std::sync::Arc;

use ferrite_tape_device::vtl::{VirtualLibrary, VirtualLibraryConfig};
use ferrite_tape_device::{Barcode, Element, Library};

use crate::backup::{run_backup, BackupSpec, Progress};
use crate::catalog::{Catalog, JobState};
use crate::restore::{run_restore, scan_cartridge, RestoreSpec};
use crate::source::memory::MemoryEndpoint;
use crate::tapeio::Mounter;
use crate::TapeError;

const CHUNK: u32 = 64 * 1024;

struct Rig {
    _dir: tempfile::TempDir,
    vtl: VirtualLibrary,
    lib: Library,
    catalog: Catalog,
    cat_path: std::path::PathBuf,
}

fn rig(cartridges: &[&str], capacity: u64) -> Rig {
    let dir = tempfile::tempdir().expect("tmp");
    let vtl = VirtualLibrary::open(&VirtualLibraryConfig {
        dir: dir.path().join("vtl"),
        slots: 6,
        drives: 1,
        import_export: 1,
        cartridge_capacity: capacity,
        early_warning: 512 * 1024,
    })
    .expect("vtl");
    let mut lib = vtl.clone().into_library().expect("lib");
    for (i, b) in cartridges.iter().enumerate() {
        vtl.insert(&Barcode::new(b).expect("bc")).expect("insert");
        lib.changer
            .move_medium(Element::ImportExport(0), Element::Slot(i as u16))
            .expect("move");
    }
    let cat_path = dir.path().join("catalog.db");
    let catalog = Catalog::open(&cat_path).expect("catalog");
    Rig {
        _dir: dir,
        vtl,
        lib,
        catalog,
        cat_path,
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn backup(
    r: &mut Rig,
    job: u64,
    src: &MemoryEndpoint,
    shuffle: bool,
) -> Result<crate::backup::BackupReport, TapeError> {
    let spec = BackupSpec {
        job,
        endpoint: Arc::new(src.clone()),
        connections: 4,
        chunk_bytes: CHUNK,
        window: 8,
        shuffle,
        drive: 0,
        incremental: None,
        recycle_before: None,
    };
    run_backup(&mut r.lib, &r.catalog, &spec, &Progress::new(job, "backup"))
}

fn restore(
    r: &mut Rig,
    job: u64,
    from: u64,
    dst: &MemoryEndpoint,
) -> Result<crate::restore::RestoreReport, TapeError> {
    let spec = RestoreSpec {
        job,
        from_job: from,
        endpoint: Arc::new(dst.clone()),
        connections: 3,
        window: 8,
        drive: 0,
    };
    run_restore(
        &mut r.lib,
        &r.catalog,
        &spec,
        &Progress::new(job, "restore"),
    )
}

#[test]
fn shuffled_backup_restores_byte_exact() {
    let mut r = rig(&["J00001"], 64 << 20);
    let data = pattern(5 * 1024 * 1024 + 4096, 3);
    let src = MemoryEndpoint::new(data.clone());
    let rep = backup(&mut r, 1, &src, true).expect("backup");
    assert_eq!(rep.bytes, data.len() as u64);
    assert_eq!(rep.parts.len(), 1);
    assert!(
        rep.queue.queue.out_of_order > 0,
        "the shuffle reordered deliveries: {:?}",
        rep.queue
    );
    assert_eq!(rep.queue.queue.written, rep.blocks);
    assert_eq!(r.catalog.job(1).expect("job").state, JobState::Done);
    let dst = MemoryEndpoint::new(vec![0u8; data.len()]);
    restore(&mut r, 2, 1, &dst).expect("restore");
    assert!(
        *dst.data.lock().expect("dst") == data,
        "restored bytes differ"
    );
}

#[test]
fn a_backup_spans_two_cartridges_and_restores() {
    let mut r = rig(&["S00001", "S00002"], 2 << 20);
    let data = pattern(3 * 1024 * 1024, 5);
    let src = MemoryEndpoint::new(data.clone());
    let rep = backup(&mut r, 1, &src, true).expect("backup");
    assert_eq!(rep.parts.len(), 2, "{:?}", rep.parts);
    assert_eq!(rep.parts[0].barcode, "S00001");
    assert_eq!(rep.parts[1].barcode, "S00002");
    assert!(rep.parts[0].continued && !rep.parts[1].continued);
    assert_eq!(rep.parts[1].first_block, rep.parts[0].blocks);
    let dst = MemoryEndpoint::new(vec![0u8; data.len() + 8192]);
    restore(&mut r, 2, 1, &dst).expect("restore");
    assert!(dst.data.lock().expect("dst")[..data.len()] == data[..]);
}

#[test]
fn protected_and_foreign_cartridges_are_skipped_and_left_untouched() {
    let mut r = rig(&["WP0001", "FOREIGN", "GOOD01"], 16 << 20);
    r.vtl
        .set_write_protect(&Barcode::new("WP0001").expect("bc"), true)
        .expect("wp");
    // Put a block of another format on FOREIGN.
    {
        let mut m = Mounter::new(&mut r.lib, 0).expect("m");
        m.mount(&Barcode::new("FOREIGN").expect("bc"))
            .expect("mount");
        m.drive().write_block(b"VOL1FOREIGN ANSI LABEL").expect("w");
        m.drive().write_filemarks(1).expect("fm");
        m.dismount().expect("dismount");
    }
    let foreign_before =
        std::fs::read(r.vtl.cartridge_path(&Barcode::new("FOREIGN").expect("bc"))).expect("read");
    let src = MemoryEndpoint::new(pattern(1 << 20, 9));
    let rep = backup(&mut r, 1, &src, false).expect("backup");
    assert_eq!(rep.parts[0].barcode, "GOOD01");
    let foreign_after =
        std::fs::read(r.vtl.cartridge_path(&Barcode::new("FOREIGN").expect("bc"))).expect("read");
    assert_eq!(
        foreign_before, foreign_after,
        "a foreign cartridge is never overwritten"
    );

    let mut r = rig(&["WP0002"], 16 << 20);
    r.vtl
        .set_write_protect(&Barcode::new("WP0002").expect("bc"), true)
        .expect("wp");
    let e = backup(&mut r, 1, &src, false).expect_err("nothing writable");
    assert!(e.to_string().contains("WP0002: write protected"), "{e}");
}

#[test]
fn a_restore_target_smaller_than_the_backup_is_refused_before_writing() {
    let mut r = rig(&["T00001"], 16 << 20);
    let src = MemoryEndpoint::new(pattern(1 << 20, 1));
    backup(&mut r, 1, &src, false).expect("backup");
    let dst = MemoryEndpoint::new(vec![0xEE; 512 * 1024]);
    let e = restore(&mut r, 2, 1, &dst).expect_err("too small");
    assert!(
        matches!(
            e,
            TapeError::TargetTooSmall {
                target: 524288,
                backup: 1048576
            }
        ),
        "{e}"
    );
    assert!(
        dst.data.lock().expect("dst").iter().all(|&b| b == 0xEE),
        "nothing written"
    );
}

#[test]
fn a_corrupted_block_on_tape_fails_the_restore_naming_it() {
    let mut r = rig(&["C00001"], 16 << 20);
    let src = MemoryEndpoint::new(pattern(1 << 20, 2));
    backup(&mut r, 1, &src, false).expect("backup");
    let path = r.vtl.cartridge_path(&Barcode::new("C00001").expect("bc"));
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, bytes).expect("corrupt");
    let dst = MemoryEndpoint::new(vec![0u8; 1 << 20]);
    let e = restore(&mut r, 2, 1, &dst).expect_err("corrupt");
    let s = e.to_string();
    assert!(s.contains("C00001") && s.contains("block"), "{s}");
}

#[test]
fn scan_rebuilds_a_deleted_catalog_and_the_restore_works_from_it() {
    let mut r = rig(&["N00001", "N00002"], 2 << 20);
    let data = pattern(3 * 1024 * 1024 - 8192, 11);
    let src = MemoryEndpoint::new(data.clone());
    let rep = backup(&mut r, 7, &src, true).expect("backup");
    assert_eq!(rep.parts.len(), 2);
    drop(std::mem::replace(
        &mut r.catalog,
        Catalog::open(&r.cat_path.with_extension("other")).expect("tmp"),
    ));
    for ext in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(r.cat_path.with_extension(ext));
    }
    r.catalog = Catalog::open(&r.cat_path).expect("fresh catalog");
    assert!(r.catalog.job(7).is_err());
    let mut m = Mounter::new(&mut r.lib, 0).expect("m");
    let s1 =
        scan_cartridge(&mut m, &Barcode::new("N00001").expect("bc"), &r.catalog).expect("scan 1");
    assert_eq!(s1.parts.len(), 1);
    assert_eq!(
        r.catalog.job(7).expect("job").state,
        JobState::Interrupted,
        "half the job found"
    );
    scan_cartridge(&mut m, &Barcode::new("N00002").expect("bc"), &r.catalog).expect("scan 2");
    m.dismount().expect("dismount");
    assert_eq!(r.catalog.job(7).expect("job").state, JobState::Done);
    let dst = MemoryEndpoint::new(vec![0u8; data.len()]);
    restore(&mut r, 8, 7, &dst).expect("restore from scanned catalog");
    assert!(*dst.data.lock().expect("dst") == data);
}

#[test]
fn a_failing_source_fails_the_job_and_the_next_job_appends_after_it() {
    let mut r = rig(&["F00001"], 32 << 20);
    let mut bad = MemoryEndpoint::new(pattern(2 << 20, 4));
    bad.fail_reads_at = Some(1 << 20);
    let e = backup(&mut r, 1, &bad, false).expect_err("read error");
    assert!(e.to_string().contains("injected read error"), "{e}");
    r.catalog
        .finish_job(1, JobState::Failed, 0, 0, Some(&e.to_string()))
        .expect("mark");
    let good = MemoryEndpoint::new(pattern(1 << 20, 6));
    let rep = backup(&mut r, 2, &good, true).expect("second job");
    assert_eq!(rep.parts[0].file_number, 2, "file 1 holds the failed part");
    let mut m = Mounter::new(&mut r.lib, 0).expect("m");
    let s = scan_cartridge(&mut m, &Barcode::new("F00001").expect("bc"), &r.catalog).expect("scan");
    assert_eq!(s.unfinished.len(), 1, "{s:?}");
    assert_eq!(s.parts.len(), 1);
    m.dismount().expect("dismount");
    let dst = MemoryEndpoint::new(vec![0u8; 1 << 20]);
    restore(&mut r, 3, 2, &dst).expect("restore");
    assert!(*dst.data.lock().expect("dst") == *good.data.lock().expect("src"));
}

#[test]
fn verify_reads_everything_back_and_finds_a_corrupt_block() {
    let mut r = rig(&["V00001", "V00002"], 2 << 20);
    let src = MemoryEndpoint::new(pattern(3 << 20, 8));
    backup(&mut r, 1, &src, true).expect("backup");
    let p = Progress::new(2, "verify");
    let rep = crate::restore::run_verify(&mut r.lib, &r.catalog, 1, 0, &p).expect("verify");
    assert_eq!(rep.bytes, 3 << 20);
    assert_eq!(
        p.done_bytes.load(std::sync::atomic::Ordering::Relaxed),
        3 << 20
    );
    let path = r.vtl.cartridge_path(&Barcode::new("V00002").expect("bc"));
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() - 200_000;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).expect("corrupt");
    let e = crate::restore::run_verify(&mut r.lib, &r.catalog, 1, 0, &Progress::new(3, "verify"))
        .expect_err("corrupt");
    assert!(e.to_string().contains("V00002"), "{e}");
}

#[test]
fn a_cancelled_backup_ends_cancelled_and_leaves_the_tape_appendable() {
    let mut r = rig(&["K00001"], 32 << 20);
    let src = MemoryEndpoint::new(pattern(4 << 20, 12));
    let spec = BackupSpec {
        job: 1,
        endpoint: Arc::new(src.clone()),
        connections: 2,
        chunk_bytes: CHUNK,
        window: 4,
        shuffle: false,
        drive: 0,
        incremental: None,
        recycle_before: None,
    };
    let p = Progress::new(1, "backup");
    p.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = run_backup(&mut r.lib, &r.catalog, &spec, &p).expect_err("cancelled");
    assert!(matches!(e, TapeError::Cancelled(1)), "{e}");
    let rep = backup(&mut r, 2, &src, false).expect("next job");
    assert_eq!(
        rep.parts[0].file_number, 2,
        "the cancelled part's file was closed"
    );
    let dst = MemoryEndpoint::new(vec![0u8; 4 << 20]);
    restore(&mut r, 3, 2, &dst).expect("restore");
    assert!(*dst.data.lock().expect("dst") == *src.data.lock().expect("src"));
}

/// An incremental of `src` on top of job `base`: the data extents and zero extents given.
fn incremental(
    r: &mut Rig,
    job: u64,
    base: u64,
    src: &MemoryEndpoint,
    data: Vec<(u64, u64)>,
    zero: Vec<(u64, u64)>,
) -> Result<crate::backup::BackupReport, TapeError> {
    let source_bytes = src.data.lock().expect("src").len() as u64;
    let spec = BackupSpec {
        job,
        endpoint: Arc::new(src.clone()),
        connections: 3,
        chunk_bytes: CHUNK,
        window: 8,
        shuffle: true,
        drive: 0,
        incremental: Some(crate::incremental::Incremental {
            base_job: base,
            data,
            zero,
            source_bytes,
        }),
        recycle_before: None,
    };
    run_backup(
        &mut r.lib,
        &r.catalog,
        &spec,
        &Progress::new(job, "incremental"),
    )
}

#[test]
fn full_and_two_incrementals_restore_byte_exact_in_order() {
    const C: u64 = 64 * 1024;
    let mut r = rig(&["I00001", "I00002"], 64 << 20);
    let mut image = pattern(32 * C as usize, 21);
    let src = MemoryEndpoint::new(image.clone());
    backup(&mut r, 1, &src, true).expect("full");

    // Change clusters 3..5 and 20, deallocate 9: only those go to tape.
    let change = |image: &mut Vec<u8>, at: u64, len: u64, seed: u64| {
        image[at as usize..(at + len) as usize].copy_from_slice(&pattern(len as usize, seed));
    };
    change(&mut image, 3 * C, 2 * C, 22);
    change(&mut image, 20 * C, C, 23);
    image[9 * C as usize..10 * C as usize].fill(0);
    *src.data.lock().expect("src") = image.clone();
    let rep = incremental(
        &mut r,
        2,
        1,
        &src,
        vec![(3 * C, 2 * C), (20 * C, C)],
        vec![(9 * C, C)],
    )
    .expect("incremental 1");
    assert_eq!(rep.bytes, 3 * C, "only the changed clusters are on tape");
    let after_first = image.clone();

    // The second: one cluster rewritten again (4), a new one (30), the zeroed one written.
    change(&mut image, 4 * C, C, 24);
    change(&mut image, 30 * C, C, 25);
    change(&mut image, 9 * C, C, 26);
    *src.data.lock().expect("src") = image.clone();
    let rep = incremental(
        &mut r,
        3,
        2,
        &src,
        vec![(4 * C, C), (9 * C, C), (30 * C, 2 * C)],
        vec![],
    )
    .expect("incremental 2");
    assert_eq!(rep.bytes, 4 * C);
    let j = r.catalog.job(3).expect("job 3");
    assert_eq!((j.kind.as_str(), j.base_job), ("incremental", Some(2)));

    // Restore of the last: full, then both incrementals, over a target holding garbage.
    let dst = MemoryEndpoint::new(pattern(image.len(), 99));
    let rep = restore(&mut r, 4, 3, &dst).expect("restore chain");
    assert_eq!(rep.blocks, 32 + 3 + 4);
    assert!(
        *dst.data.lock().expect("dst") == image,
        "restored chain differs"
    );
    // Restoring the middle link stops there.
    let dst = MemoryEndpoint::new(pattern(image.len(), 98));
    restore(&mut r, 5, 2, &dst).expect("restore first incremental");
    assert!(*dst.data.lock().expect("dst") == after_first);

    // Nothing changed: an empty incremental still records the link.
    incremental(&mut r, 6, 3, &src, vec![], vec![]).expect("empty incremental");
    let dst = MemoryEndpoint::new(vec![0u8; image.len()]);
    restore(&mut r, 7, 6, &dst).expect("restore through an empty link");
    assert!(*dst.data.lock().expect("dst") == image);

    // The catalog rebuilt by scan keeps the chain.
    let path = r.cat_path.clone();
    drop(std::mem::replace(
        &mut r.catalog,
        Catalog::open(&r._dir.path().join("other.db")).expect("tmp"),
    ));
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    r.catalog = Catalog::open(&path).expect("fresh catalog");
    let mut m = Mounter::new(&mut r.lib, 0).expect("mounter");
    scan_cartridge(&mut m, &Barcode::new("I00001").expect("bc"), &r.catalog).expect("scan");
    let j = r.catalog.job(3).expect("job 3 scanned");
    assert_eq!(
        (j.kind.as_str(), j.base_job, j.state),
        ("incremental", Some(2), JobState::Done)
    );
    let dst = MemoryEndpoint::new(vec![7u8; image.len()]);
    restore(&mut r, 8, 3, &dst).expect("restore from the scanned catalog");
    assert!(*dst.data.lock().expect("dst") == image);

    // A broken chain is refused before anything is written.
    r.catalog.expire_job(2).expect("expire");
    let dst = MemoryEndpoint::new(vec![7u8; image.len()]);
    let e = restore(&mut r, 9, 3, &dst).expect_err("chain broken");
    assert!(e.to_string().contains("job 2"), "{e}");
    assert!(dst.data.lock().expect("dst").iter().all(|&b| b == 7));
}

fn backup_recycling(
    r: &mut Rig,
    job: u64,
    src: &MemoryEndpoint,
    before: u64,
) -> Result<crate::backup::BackupReport, TapeError> {
    let spec = BackupSpec {
        job,
        endpoint: Arc::new(src.clone()),
        connections: 2,
        chunk_bytes: CHUNK,
        window: 8,
        shuffle: false,
        drive: 0,
        incremental: None,
        recycle_before: Some(before),
    };
    run_backup(&mut r.lib, &r.catalog, &spec, &Progress::new(job, "backup"))
}

#[test]
fn full_cartridges_past_retention_are_recycled_by_the_next_job() {
    let mut r = rig(&["R00001", "R00002"], 2 << 20);
    let data = pattern(1200 * 1024, 31);
    let src = MemoryEndpoint::new(data.clone());
    // Job 1 on R00001; job 2 fills R00001 to early warning and spans onto R00002.
    backup(&mut r, 1, &src, false).expect("job 1");
    let rep = backup(&mut r, 2, &src, false).expect("job 2");
    assert_eq!(rep.parts.len(), 2, "{:?}", rep.parts);
    let now = crate::tapeio::now_secs();
    // Both finished within retention: job 3 fills R00002 and finds nothing to span onto.
    let e = backup_recycling(&mut r, 3, &src, now - 1000).expect_err("no room");
    assert!(e.to_string().contains("R00001: not recycled, job 1"), "{e}");
    assert_eq!(r.catalog.job(1).expect("1").state, JobState::Done);
    // Both past retention: R00002 is full too now (job 3's unfinished part), so job 4 erases
    // and relabels R00001 and starts over on it.
    for j in [1, 2] {
        r.catalog
            .finish_job(j, JobState::Done, 0, now - 90 * 86_400, None)
            .expect("age");
    }
    let rep = backup_recycling(&mut r, 4, &src, now - 30 * 86_400).expect("job 4");
    let carts: Vec<(&str, u64)> = rep
        .parts
        .iter()
        .map(|p| (p.barcode.as_str(), p.file_number))
        .collect();
    assert_eq!(carts, vec![("R00001", 1)], "{:?}", rep.parts);
    for j in [1, 2] {
        assert_eq!(r.catalog.job(j).expect("job").state, JobState::Expired);
    }
    let dst = MemoryEndpoint::new(vec![0u8; data.len()]);
    restore(&mut r, 5, 4, &dst).expect("restore the job on the recycled cartridge");
    assert!(*dst.data.lock().expect("dst") == data);
}
