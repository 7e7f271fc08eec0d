use super::*;
use proptest::prelude::*;

const KIB: u64 = 1024;

fn blank(dir: &tempfile::TempDir, capacity: u64, ew: u64) -> Cartridge {
    let p = dir.path().join("c.vtape");
    let b = Barcode::new("T00001L8").expect("barcode");
    Cartridge::create(
        &p,
        &b,
        CartridgeSpec {
            capacity,
            early_warning: ew,
        },
    )
    .expect("create");
    Cartridge::open(&p).expect("open")
}

fn read(c: &mut Cartridge) -> Result<Option<Vec<u8>>, DeviceError> {
    let mut buf = vec![0u8; 1 << 20];
    match c.read_block(&mut buf)? {
        ReadOutcome::Block(n) => Ok(Some(buf[..n].to_vec())),
        ReadOutcome::Filemark => Ok(None),
        ReadOutcome::EndOfData => Err(DeviceError::EndOfData),
    }
}

#[test]
fn variable_blocks_and_filemarks_read_back_in_order() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = blank(&d, 1 << 20, 64 * KIB);
    assert_eq!(c.write_block(b"a").expect("w"), WriteOutcome::Written);
    assert_eq!(
        c.write_block(&[7u8; 3000]).expect("w"),
        WriteOutcome::Written
    );
    assert_eq!(c.write_filemarks(1).expect("fm"), WriteOutcome::Written);
    assert_eq!(
        c.write_block(b"second file").expect("w"),
        WriteOutcome::Written
    );
    c.write_filemarks(1).expect("fm");
    assert_eq!(
        c.position(),
        TapePosition {
            logical: 5,
            file_number: 2,
            block_in_file: 0
        }
    );
    c.rewind();
    assert!(c.status().beginning_of_tape);
    assert_eq!(read(&mut c).expect("r"), Some(b"a".to_vec()));
    assert_eq!(read(&mut c).expect("r"), Some(vec![7u8; 3000]));
    assert_eq!(
        c.position(),
        TapePosition {
            logical: 2,
            file_number: 0,
            block_in_file: 2
        }
    );
    assert_eq!(read(&mut c).expect("r"), None, "filemark");
    assert_eq!(
        c.position(),
        TapePosition {
            logical: 3,
            file_number: 1,
            block_in_file: 0
        }
    );
    assert_eq!(read(&mut c).expect("r"), Some(b"second file".to_vec()));
    assert_eq!(read(&mut c).expect("r"), None);
    let mut buf = [0u8; 16];
    assert_eq!(c.read_block(&mut buf).expect("eod"), ReadOutcome::EndOfData);
    assert_eq!(c.position().logical, 5, "end of data does not move");
}

#[test]
fn fixed_mode_takes_only_whole_blocks() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = blank(&d, 1 << 20, 64 * KIB);
    c.set_block_size(BlockSize::Fixed(512)).expect("fixed");
    assert!(matches!(
        c.write_block(&[1u8; 100]),
        Err(DeviceError::InvalidBlockSize { len: 100, .. })
    ));
    c.write_block(&[1u8; 512]).expect("512");
    c.set_block_size(BlockSize::Variable).expect("variable");
    c.write_block(&[2u8; 100]).expect("variable 100");
    c.rewind();
    c.set_block_size(BlockSize::Fixed(512)).expect("fixed");
    assert_eq!(read(&mut c).expect("r"), Some(vec![1u8; 512]));
    assert!(matches!(
        read(&mut c),
        Err(DeviceError::InvalidBlockSize { len: 100, .. })
    ));
    assert!(c.set_block_size(BlockSize::Fixed(0)).is_err());
    c.set_block_size(BlockSize::Variable).expect("variable");
    assert!(matches!(
        c.write_block(&[]),
        Err(DeviceError::InvalidBlockSize { len: 0, .. })
    ));
}

#[test]
fn early_warning_then_end_of_medium_writes_nothing() {
    let d = tempfile::tempdir().expect("tmp");
    let cap = 256 * KIB;
    let mut c = blank(&d, cap, 64 * KIB);
    let block = vec![9u8; 32 * 1024];
    let mut written = 0;
    let mut warned_at = None;
    loop {
        match c.write_block(&block) {
            Ok(WriteOutcome::Written) => assert!(warned_at.is_none(), "warning is sticky"),
            Ok(WriteOutcome::EarlyWarning) => {
                warned_at.get_or_insert(written);
            }
            Err(DeviceError::EndOfMedium(n)) => {
                assert_eq!(n, block.len() + 12);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        written += 1;
        assert!(written < 100, "bounded");
    }
    let warned_at = warned_at.expect("early warning before end of medium");
    assert!(
        warned_at < written,
        "blocks fit after the warning: {warned_at} < {written}"
    );
    let st = c.status();
    assert!(st.early_warning && st.used_bytes.expect("used") <= cap);
    let before = c.position();
    assert!(matches!(
        c.write_block(&block),
        Err(DeviceError::EndOfMedium(_))
    ));
    assert_eq!(
        c.position(),
        before,
        "a refused write leaves the tape as it was"
    );
    // A filemark still fits in the zone a full block no longer does.
    assert_eq!(
        c.write_filemarks(1).expect("fm"),
        WriteOutcome::EarlyWarning
    );
    c.rewind();
    for _ in 0..written {
        assert_eq!(read(&mut c).expect("r"), Some(block.clone()));
    }
    assert_eq!(read(&mut c).expect("fm"), None);
}

#[test]
fn writes_only_append_at_end_of_data() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = blank(&d, 1 << 20, 64 * KIB);
    for i in 0..4u8 {
        c.write_block(&[i; 10]).expect("w");
    }
    c.write_filemarks(1).expect("fm");
    c.locate(2).expect("locate");
    assert!(matches!(
        c.write_block(b"x"),
        Err(DeviceError::NotAtEndOfData {
            position: 2,
            end: 5
        })
    ));
    assert!(matches!(
        c.write_filemarks(1),
        Err(DeviceError::NotAtEndOfData { .. })
    ));
    c.space(Space::EndOfData).expect("eod");
    c.write_block(b"appended")
        .expect("append after the last filemark");
    c.rewind();
    c.space(Space::Filemarks(1)).expect("fsf");
    assert_eq!(read(&mut c).expect("r"), Some(b"appended".to_vec()));
}

#[test]
fn space_blocks_stops_at_filemarks_like_ssc() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = blank(&d, 1 << 20, 64 * KIB);
    // file 0: blocks 0,1,2; fm at 3; file 1: blocks 4,5; fm at 6
    for i in 0..3u8 {
        c.write_block(&[i; 4]).expect("w");
    }
    c.write_filemarks(1).expect("fm");
    c.write_block(&[10; 4]).expect("w");
    c.write_block(&[11; 4]).expect("w");
    c.write_filemarks(1).expect("fm");
    c.rewind();
    c.space(Space::Blocks(2)).expect("fsr 2");
    assert_eq!(c.position().logical, 2);
    assert!(matches!(
        c.space(Space::Blocks(5)),
        Err(DeviceError::FilemarkEncountered { remaining: 4 })
    ));
    assert_eq!(c.position().logical, 4, "forward: after the filemark");
    assert!(matches!(
        c.space(Space::Blocks(-3)),
        Err(DeviceError::FilemarkEncountered { remaining: 3 })
    ));
    assert_eq!(
        c.position().logical,
        3,
        "backward: on the BOT side of the filemark"
    );
    c.rewind();
    c.space(Space::Filemarks(2)).expect("fsf 2");
    assert_eq!(c.position().logical, 7);
    assert!(matches!(
        c.space(Space::Filemarks(1)),
        Err(DeviceError::EndOfData)
    ));
    c.space(Space::Filemarks(-1)).expect("bsf");
    assert_eq!(c.position().logical, 6, "before the last filemark");
    assert!(matches!(
        c.space(Space::Filemarks(-5)),
        Err(DeviceError::BeginningOfMedium)
    ));
    assert_eq!(c.position().logical, 0);
    assert!(matches!(
        c.space(Space::Blocks(-1)),
        Err(DeviceError::BeginningOfMedium)
    ));
    assert!(matches!(c.locate(8), Err(DeviceError::EndOfData)));
    assert_eq!(c.position().logical, 7);
    c.locate(5).expect("locate");
    assert_eq!(
        c.position(),
        TapePosition {
            logical: 5,
            file_number: 1,
            block_in_file: 1
        }
    );
    assert_eq!(read(&mut c).expect("r"), Some(vec![11; 4]));
}

#[test]
fn write_protect_refuses_writes_filemarks_and_erase_but_reads() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("c.vtape");
    {
        let mut c = blank(&d, 1 << 20, 64 * KIB);
        c.write_block(b"kept").expect("w");
    }
    Cartridge::set_write_protect(&p, true).expect("protect");
    let mut c = Cartridge::open(&p).expect("open");
    assert!(c.status().write_protected);
    c.space(Space::EndOfData).expect("eod");
    assert!(matches!(
        c.write_block(b"x"),
        Err(DeviceError::WriteProtected(_))
    ));
    assert!(matches!(
        c.write_filemarks(1),
        Err(DeviceError::WriteProtected(_))
    ));
    c.rewind();
    assert!(matches!(c.erase(), Err(DeviceError::WriteProtected(_))));
    assert_eq!(read(&mut c).expect("r"), Some(b"kept".to_vec()));
    drop(c);
    Cartridge::set_write_protect(&p, false).expect("unprotect");
    let mut c = Cartridge::open(&p).expect("open");
    c.erase().expect("erase from BOT");
    assert_eq!(c.status().used_bytes, Some(0));
    assert_eq!(
        c.read_block(&mut [0u8; 8]).expect("blank"),
        ReadOutcome::EndOfData
    );
}

#[test]
fn corrupted_payload_is_a_medium_error_and_the_next_block_reads() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("c.vtape");
    {
        let mut c = blank(&d, 1 << 20, 64 * KIB);
        c.write_block(&[1u8; 100]).expect("w");
        c.write_block(&[2u8; 100]).expect("w");
    }
    let f = OpenOptions::new().write(true).open(&p).expect("open raw");
    f.write_all_at(&[0xff], HEADER_LEN + RECORD_HEADER + 50)
        .expect("corrupt");
    let mut c = Cartridge::open(&p).expect("open");
    assert!(matches!(read(&mut c), Err(DeviceError::MediumError(0))));
    assert_eq!(read(&mut c).expect("next"), Some(vec![2u8; 100]));
}

#[test]
fn torn_tail_is_cut_at_open_and_persisted_blocks_survive() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("c.vtape");
    {
        let mut c = blank(&d, 1 << 20, 64 * KIB);
        c.write_block(&[1u8; 100]).expect("w");
        c.write_filemarks(1).expect("fm");
        c.write_block(&[2u8; 100]).expect("w");
    }
    let len = std::fs::metadata(&p).expect("meta").len();
    OpenOptions::new()
        .write(true)
        .open(&p)
        .expect("raw")
        .set_len(len - 10)
        .expect("tear");
    let mut c = Cartridge::open(&p).expect("open");
    c.space(Space::EndOfData).expect("eod");
    assert_eq!(
        c.position().logical,
        2,
        "the torn block is gone, the filemark stays"
    );
    c.write_block(&[3u8; 5]).expect("append after repair");
    c.rewind();
    assert_eq!(read(&mut c).expect("r"), Some(vec![1u8; 100]));
    assert_eq!(read(&mut c).expect("r"), None);
    assert_eq!(read(&mut c).expect("r"), Some(vec![3u8; 5]));
}

#[test]
fn foreign_files_are_not_cartridges() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("x");
    std::fs::write(&p, vec![0u8; 1024]).expect("write");
    assert!(matches!(
        Cartridge::open(&p),
        Err(DeviceError::NotACartridge(_, _))
    ));
    std::fs::write(&p, b"short").expect("write");
    assert!(matches!(
        Cartridge::open(&p),
        Err(DeviceError::NotACartridge(_, _))
    ));
}

#[test]
fn small_buffer_reports_the_block_length() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = blank(&d, 1 << 20, 64 * KIB);
    c.write_block(&[5u8; 100]).expect("w");
    c.write_block(&[6u8; 10]).expect("w");
    c.rewind();
    let mut small = [0u8; 50];
    assert!(matches!(
        c.read_block(&mut small),
        Err(DeviceError::BlockTooLarge { len: 100, buf: 50 })
    ));
    assert_eq!(
        c.read_block(&mut small).expect("next"),
        ReadOutcome::Block(10)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Write(u16),
    Filemark,
    Rewind,
    Read,
    SpaceBlocks(i8),
    SpaceFiles(i8),
    Locate(u8),
    Eod,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u16..2000).prop_map(Op::Write),
        Just(Op::Filemark),
        Just(Op::Rewind),
        Just(Op::Read),
        (-4i8..5).prop_map(Op::SpaceBlocks),
        (-2i8..3).prop_map(Op::SpaceFiles),
        any::<u8>().prop_map(Op::Locate),
        Just(Op::Eod),
    ]
}

/// The oracle: a tape is a vector of records and a position.
#[derive(Debug, Default)]
struct Model {
    recs: Vec<Option<Vec<u8>>>,
    pos: usize,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any sequence of operations leaves the cartridge where a vector-of-records model says,
    /// reads what the model holds, and survives a reopen unchanged.
    #[test]
    fn cartridge_matches_a_record_vector_model(ops in proptest::collection::vec(op(), 1..60)) {
        let d = tempfile::tempdir().expect("tmp");
        let mut c = blank(&d, 4 << 20, 64 * KIB);
        let mut m = Model::default();
        let mut n: u8 = 0;
        for o in ops {
            match o {
                Op::Write(len) => {
                    n = n.wrapping_add(1);
                    let data = vec![n; usize::from(len)];
                    let r = c.write_block(&data);
                    if m.pos == m.recs.len() {
                        prop_assert!(r.is_ok());
                        m.recs.push(Some(data));
                        m.pos += 1;
                    } else {
                        prop_assert!(matches!(r, Err(DeviceError::NotAtEndOfData { .. })), "{r:?}");
                    }
                }
                Op::Filemark => {
                    let r = c.write_filemarks(1);
                    if m.pos == m.recs.len() {
                        prop_assert!(r.is_ok());
                        m.recs.push(None);
                        m.pos += 1;
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Rewind => { c.rewind(); m.pos = 0; }
                Op::Eod => { c.space(Space::EndOfData).expect("eod"); m.pos = m.recs.len(); }
                Op::Read => {
                    let got = read(&mut c);
                    match m.recs.get(m.pos) {
                        None => prop_assert!(matches!(got, Err(DeviceError::EndOfData))),
                        Some(want) => { prop_assert_eq!(got.expect("read"), want.clone()); m.pos += 1; }
                    }
                }
                Op::SpaceBlocks(k) => {
                    let _ = c.space(Space::Blocks(i64::from(k)));
                    let mut left = i64::from(k);
                    while left > 0 {
                        match m.recs.get(m.pos) { None => break, Some(r) => { m.pos += 1; left -= 1; if r.is_none() { break; } } }
                    }
                    while left < 0 {
                        if m.pos == 0 { break; }
                        m.pos -= 1; left += 1;
                        if m.recs[m.pos].is_none() { break; }
                    }
                }
                Op::SpaceFiles(k) => {
                    let _ = c.space(Space::Filemarks(i64::from(k)));
                    let mut left = i64::from(k);
                    while left > 0 {
                        match m.recs.get(m.pos) { None => break, Some(r) => { m.pos += 1; if r.is_none() { left -= 1; } } }
                    }
                    while left < 0 {
                        if m.pos == 0 { break; }
                        m.pos -= 1;
                        if m.recs[m.pos].is_none() { left += 1; }
                    }
                }
                Op::Locate(l) => {
                    let _ = c.locate(u64::from(l));
                    m.pos = usize::from(l).min(m.recs.len());
                }
            }
            prop_assert_eq!(c.position().logical, m.pos as u64);
            let fm = m.recs[..m.pos].iter().filter(|r| r.is_none()).count() as u64;
            prop_assert_eq!(c.position().file_number, fm);
        }
        drop(c);
        let mut c = Cartridge::open(&d.path().join("c.vtape")).expect("reopen");
        for want in &m.recs {
            prop_assert_eq!(&read(&mut c).expect("read"), want);
        }
        prop_assert!(matches!(read(&mut c), Err(DeviceError::EndOfData)));
    }
}
