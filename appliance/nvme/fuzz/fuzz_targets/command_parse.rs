//! Fuzz command decoding: the SQE, every typed view (decode and re-encode
//! must agree), Connect data, DSM/Copy range lists and Identify/ANA lists.
#![no_main]

use ferrite_nvme::admin::{Abort, Features, GetLogPage, Identify};
use ferrite_nvme::fabrics::{ConnectCommand, ConnectData, PropertyGet, PropertySet};
use ferrite_nvme::identify::{decode_ns_list, NsDescriptorList};
use ferrite_nvme::io::{
    CopyCommand, CopyRangeError, CopySourceRange, DatasetManagement, DsmRange, ReadWrite,
};
use ferrite_nvme::log::decode_ana_log;
use ferrite_nvme::nqn::validate_nqn;
use ferrite_nvme::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(cmd) = Command::parse(input) else {
        return;
    };
    let data = &input[Command::SIZE..];
    let cid = cmd.cid();
    let _ = cmd.data_direction();
    let _ = cmd.fabrics_type();

    let c = ConnectCommand::parse(&cmd);
    assert_eq!(ConnectCommand::parse(&c.to_command(cid)), c);
    if let Ok(p) = PropertyGet::parse(&cmd) {
        assert_eq!(PropertyGet::parse(&p.to_command(cid)), Ok(p));
    }
    if let Ok(p) = PropertySet::parse(&cmd) {
        assert_eq!(PropertySet::parse(&p.to_command(cid)), Ok(p));
    }
    let g = GetLogPage::parse(&cmd);
    assert_eq!(GetLogPage::parse(&g.to_command(cid)), g);
    let i = Identify::parse(&cmd);
    assert_eq!(Identify::parse(&i.to_command(cid)), i);
    let f = Features::parse(&cmd);
    assert_eq!(Features::parse(&f.to_set_command(cid)).value, f.value);
    let a = Abort::parse(&cmd);
    assert_eq!(Abort::parse(&a.to_command(cid)), a);
    let rw = ReadWrite::parse(&cmd);
    assert_eq!(ReadWrite::parse(&rw.to_command(cmd.opcode, cid)), rw);
    let _ = rw.end_lba();

    let dsm = DatasetManagement::parse(&cmd);
    assert_eq!(DatasetManagement::parse(&dsm.to_command(cid)), dsm);
    if let Ok(ranges) = DsmRange::parse_list(data, dsm.range_count()) {
        assert_eq!(ranges.len(), dsm.range_count());
    }
    let copy = CopyCommand::parse(&cmd);
    assert_eq!(CopyCommand::parse(&copy.to_command(cid)), copy);
    if let Ok(ranges) = CopySourceRange::parse_list(data, copy.range_count()) {
        assert!(ranges.iter().all(|r| r.block_count() >= 1));
    }
    // The checked descriptor parser: format 0h only, every entry present, and each entry's
    // end LBA either computes or reports overflow (never wraps).
    match copy.source_ranges(data) {
        Ok(ranges) => {
            assert_eq!(copy.desfmt, 0);
            assert_eq!(ranges.len(), copy.range_count());
            assert!(data.len() >= copy.data_len());
            for r in ranges {
                match r.end_lba() {
                    Some(end) => assert!(end > r.start_lba()),
                    None => assert!(r.start_lba() > u64::MAX - u64::from(r.block_count())),
                }
            }
        }
        Err(CopyRangeError::UnsupportedFormat(f)) => assert_eq!(f, copy.desfmt),
        Err(CopyRangeError::TooShort { needed, got }) => {
            assert_eq!(copy.desfmt, 0);
            assert!(got < needed && got == data.len());
        }
    }

    if let Ok(cd) = ConnectData::parse(data) {
        if let Ok(nqn) = cd.subnqn_str() {
            let _ = validate_nqn(nqn);
        }
        if let Ok(nqn) = cd.hostnqn_str() {
            let _ = validate_nqn(nqn);
        }
    }
    let _ = NsDescriptorList::decode(data);
    let _ = decode_ns_list(data);
    let _ = decode_ana_log(data);
    if let Ok(s) = core::str::from_utf8(data) {
        let _ = validate_nqn(s);
    }
});
