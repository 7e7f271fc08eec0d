//! Tests of NVMe/TCP PDU validation and encoding.

use super::*;
use crate::command::{opcode, Command, SglDescriptor};
use crate::completion::Completion;
use crate::digest::crc32c;
use crate::status::Status;
use proptest::prelude::*;
use zerocopy::IntoBytes;

const NO_DIGESTS: (bool, bool) = (false, false);
const BIG: u32 = 1 << 20;

/// ICReq as a Linux host sends it with `nvme connect -g -G`: PFV 0, HPDA 0,
/// both digests requested, MAXR2T 0 (one outstanding R2T).
fn linux_icreq() -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..8].copy_from_slice(&[0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00]);
    b[11] = 0x03;
    b
}

#[test]
fn icreq_image() {
    let bytes = linux_icreq();
    let (ch, ty) = CommonHeader::parse(&bytes).expect("8 bytes");
    assert_eq!(ty, PduType::ICReq);
    let layout = validate(&ch, NO_DIGESTS, Direction::FromHost, BIG).expect("valid ICReq");
    assert_eq!(layout.plen, 128);
    assert_eq!(layout.data_len, 0);
    let req = ICReq::parse(&bytes).expect("128 bytes");
    req.check().expect("pfv 0, hpda 0");
    assert!(req.header_digest() && req.data_digest());
    let mut out = [0u8; 128];
    encode_icreq(0, Digests::new(true, true), 0, &mut out).expect("fits");
    assert_eq!(out, bytes);
    // The controller may not send an ICReq.
    assert!(matches!(
        validate(&ch, NO_DIGESTS, Direction::FromController, BIG),
        Err(PduError::WrongDirection { .. })
    ));
}

#[test]
fn icreq_unsupported_parameters() {
    let mut bytes = linux_icreq();
    bytes[8] = 1;
    let e = ICReq::parse(&bytes)
        .expect("128")
        .check()
        .expect_err("pfv 1");
    assert_eq!((e.fes(), e.fei()), (fes::UNSUPPORTED_PARAMETER, 8));
    bytes[8] = 0;
    bytes[10] = 32;
    let e = ICReq::parse(&bytes)
        .expect("128")
        .check()
        .expect_err("hpda 32");
    assert_eq!((e.fes(), e.fei()), (fes::UNSUPPORTED_PARAMETER, 10));
}

#[test]
fn connect_capsule_with_in_capsule_data() {
    let cmd = Command::new_fabrics(opcode::fabrics::CONNECT, 0);
    let mut out = [0u8; 128];
    let n = encode_capsule_cmd(&cmd, 1024, Digests::default(), 0, &mut out).expect("fits");
    assert_eq!(n, 72);
    assert_eq!(&out[..8], &[4, 0, 72, 72, 0x48, 0x04, 0, 0]);
    let (ch, _) = CommonHeader::parse(&out).expect("8 bytes");
    let l = validate(&ch, NO_DIGESTS, Direction::FromHost, 8192).expect("valid");
    assert_eq!((l.pdo, l.data_len, l.data_offset()), (72, 1024, 72));
    assert!(matches!(
        validate(&ch, NO_DIGESTS, Direction::FromHost, 512),
        Err(PduError::DataLimitExceeded {
            len: 1024,
            max: 512
        })
    ));
}

#[test]
fn capsule_with_both_digests() {
    let mut cmd = Command::new(opcode::io::WRITE, 7);
    cmd.dptr = SglDescriptor::in_capsule(0, 512);
    let d = Digests::new(true, true);
    let mut out = [0u8; 128];
    let n = encode_capsule_cmd(&cmd, 512, d, 0, &mut out).expect("fits");
    assert_eq!(n, 76);
    assert_eq!(out[1], HDGSTF | DDGSTF);
    assert_eq!(out[3], 76);
    let (ch, _) = CommonHeader::parse(&out).expect("8 bytes");
    assert_eq!(ch.plen(), 72 + 4 + 512 + 4);
    let l = validate(&ch, d.pair(), Direction::FromHost, BIG).expect("valid");
    assert!(l.header_digest && l.data_digest);
    assert_eq!((l.data_len, l.padding_len()), (512, 0));
    verify_header_digest(&out[..n], &l).expect("digest matches");
    assert_eq!(&out[72..76], &crc32c(&out[..72]).to_le_bytes());
    out[10] ^= 1;
    let e = verify_header_digest(&out[..n], &l).expect_err("corrupted");
    assert_eq!(e.fes(), fes::HEADER_DIGEST_ERROR);
    // Digest flags that disagree with the negotiation are header errors.
    let e =
        validate(&ch, (false, true), Direction::FromHost, BIG).expect_err("hdgst not negotiated");
    assert_eq!((e.fes(), e.fei()), (fes::INVALID_HEADER_FIELD, 1));
    let e =
        validate(&ch, (true, false), Direction::FromHost, BIG).expect_err("ddgst not negotiated");
    assert_eq!(e.fei(), 1);
}

#[test]
fn capsule_without_data() {
    let cmd = Command::new(opcode::io::READ, 1);
    let mut out = [0u8; 128];
    let n = encode_capsule_cmd(&cmd, 0, Digests::new(false, true), 0, &mut out).expect("fits");
    assert_eq!((n, out[1], out[3]), (72, 0, 0));
    let (ch, _) = CommonHeader::parse(&out).expect("8 bytes");
    let l = validate(&ch, (false, true), Direction::FromHost, BIG).expect("valid");
    assert_eq!((l.data_len, l.pdo, l.data_offset()), (0, 0, 72));
}

#[test]
fn header_field_errors_carry_offsets() {
    let good = CommonHeader::new(PduType::H2CData, DATA_LAST, 24, 24 + 100);
    validate(&good, NO_DIGESTS, Direction::FromHost, BIG).expect("valid");
    let cases: [(CommonHeader, u32); 6] = [
        (CommonHeader { hlen: 28, ..good }, 2),
        (CommonHeader { pdo: 20, ..good }, 3),
        (
            CommonHeader {
                pdo: 0,
                plen: 24.into(),
                ..good
            },
            3,
        ),
        (
            CommonHeader {
                plen: 20.into(),
                ..good
            },
            4,
        ),
        (
            CommonHeader {
                flags: HDGSTF,
                ..good
            },
            1,
        ),
        (
            CommonHeader {
                flags: DDGSTF,
                ..good
            },
            1,
        ),
    ];
    for (ch, fei) in cases {
        let e = validate(&ch, NO_DIGESTS, Direction::FromHost, BIG).expect_err("invalid");
        assert_eq!(
            (e.fes(), e.fei()),
            (fes::INVALID_HEADER_FIELD, fei),
            "{ch:?}"
        );
    }
    let unknown = CommonHeader {
        pdu_type: 8,
        ..good
    };
    let e = validate(&unknown, NO_DIGESTS, Direction::FromHost, BIG).expect_err("type 8");
    assert_eq!((e.fes(), e.fei()), (fes::INVALID_HEADER_FIELD, 0));
    let e = validate(&good, NO_DIGESTS, Direction::FromHost, 99).expect_err("limit");
    assert_eq!(e.fes(), fes::DATA_LIMIT_EXCEEDED);
    assert!(CommonHeader::parse(&[4, 0, 72]).is_err());
}

#[test]
fn c2h_success_requires_last() {
    let mut out = [0u8; 64];
    let flags = C2hDataFlags {
        last: false,
        success: true,
    };
    assert!(encode_c2h_data(1, 0, 8, flags, Digests::default(), 0, &mut out).is_err());
    let ch = CommonHeader::new(PduType::C2HData, DATA_SUCCESS, 24, 32);
    let e = validate(&ch, NO_DIGESTS, Direction::FromController, BIG).expect_err("no LAST");
    assert_eq!(e.fei(), 1);
}

#[test]
fn response_r2t_and_term_req_images() {
    let mut out = [0u8; 200];
    let cqe = Completion::new(0x0A, Status::SUCCESS).with_result(1);
    assert_eq!(
        encode_capsule_resp(&cqe, false, &mut out).expect("fits"),
        24
    );
    assert_eq!(&out[..8], &[5, 0, 24, 0, 24, 0, 0, 0]);
    assert_eq!(&out[8..24], cqe.as_bytes());

    assert_eq!(
        encode_r2t(3, 0x11, 8192, 4096, true, &mut out).expect("fits"),
        28
    );
    assert_eq!(&out[..8], &[9, HDGSTF, 24, 0, 28, 0, 0, 0]);
    let r2t = R2tPdu::parse(&out).expect("24");
    assert_eq!(
        (
            r2t.cccid.get(),
            r2t.ttag.get(),
            r2t.r2to.get(),
            r2t.r2tl.get()
        ),
        (3, 0x11, 8192, 4096)
    );
    let (ch, _) = CommonHeader::parse(&out).expect("8");
    let l = validate(&ch, (true, false), Direction::FromController, BIG).expect("valid");
    verify_header_digest(&out[..28], &l).expect("digest");

    let bad_header = [0xEEu8; 200];
    let n = encode_term_req(
        Direction::FromController,
        fes::INVALID_HEADER_FIELD,
        2,
        &bad_header,
        &mut out,
    )
    .expect("fits");
    assert_eq!(n, 152);
    assert_eq!(&out[..12], &[3, 0, 24, 0, 152, 0, 0, 0, 1, 0, 2, 0]);
    let (ch, _) = CommonHeader::parse(&out).expect("8");
    let l = validate(&ch, (true, true), Direction::FromController, BIG).expect("valid");
    assert_eq!((l.data_len, l.data_offset()), (128, 24));
    let t = TermReqHeader::parse(&out).expect("24");
    assert_eq!((t.fes.get(), t.fei.get()), (1, 2));
    assert!(encode_term_req(Direction::FromHost, 1, 0, &bad_header, &mut out[..100]).is_err());
}

#[test]
fn c2h_data_alignment() {
    let mut out = [0xFFu8; 256];
    let flags = C2hDataFlags {
        last: true,
        success: true,
    };
    // HPDA 7: data aligned to 32 bytes; header + digest is 28 bytes.
    let n =
        encode_c2h_data(5, 4096, 512, flags, Digests::new(true, true), 7, &mut out).expect("fits");
    assert_eq!(n, 32);
    assert_eq!(&out[28..32], &[0; 4]);
    let (ch, _) = CommonHeader::parse(&out).expect("8");
    assert_eq!(ch.flags, HDGSTF | DDGSTF | DATA_LAST | DATA_SUCCESS);
    let l = validate(&ch, (true, true), Direction::FromController, BIG).expect("valid");
    assert_eq!(
        (l.pdo, l.data_len, l.padding_len(), l.plen),
        (32, 512, 4, 32 + 512 + 4)
    );
}

#[test]
fn icresp_image() {
    let mut out = [0u8; 128];
    encode_icresp(0, Digests::new(true, false), 131072, &mut out).expect("fits");
    assert_eq!(
        &out[..16],
        &[1, 0, 128, 0, 128, 0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0]
    );
    let r = ICResp::parse(&out).expect("128");
    assert_eq!(r.maxh2cdata.get(), 131072);
    assert_eq!(Digests::from_dgst_byte(r.dgst), Digests::new(true, false));
}

fn digests() -> impl Strategy<Value = Digests> {
    (any::<bool>(), any::<bool>()).prop_map(|(h, d)| Digests::new(h, d))
}

proptest! {
    #[test]
    fn parse_and_validate_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        hd: bool, dd: bool, from_host: bool, max_data: u32,
    ) {
        let dir = if from_host { Direction::FromHost } else { Direction::FromController };
        if let Ok((ch, ty)) = CommonHeader::parse(&bytes) {
            if let Ok(l) = validate(&ch, (hd, dd), dir, max_data) {
                prop_assert_eq!(l.pdu_type, ty);
                prop_assert!(l.data_len <= max_data || matches!(ty, PduType::H2CTermReq | PduType::C2HTermReq));
                prop_assert!(l.data_offset() as u64 + u64::from(l.data_len) <= u64::from(l.plen));
                prop_assert!(l.header_with_digest_len() <= l.plen as usize);
                let _ = verify_header_digest(&bytes, &l);
            }
        }
        let _ = ICReq::parse(&bytes).map(|r| r.check());
        let _ = ICResp::parse(&bytes);
        let _ = DataHeader::parse(&bytes);
        let _ = R2tPdu::parse(&bytes);
        let _ = TermReqHeader::parse(&bytes);
        let _ = CapsuleCmdHeader::parse(&bytes);
        let _ = CapsuleRespPdu::parse(&bytes);
    }

    #[test]
    fn capsule_cmd_round_trip(cmd_bytes in proptest::collection::vec(any::<u8>(), 64),
                              data_len in 0usize..9000, d in digests(), cpda in 0u8..32) {
        let cmd = Command::parse(&cmd_bytes).expect("64");
        let mut out = [0u8; 256];
        let n = encode_capsule_cmd(&cmd, data_len, d, cpda, &mut out).expect("fits");
        let (ch, ty) = CommonHeader::parse(&out).expect("8");
        prop_assert_eq!(ty, PduType::CapsuleCmd);
        let l = validate(&ch, d.pair(), Direction::FromHost, 9000).expect("valid");
        prop_assert_eq!(l.data_len as usize, data_len);
        prop_assert_eq!(l.data_offset(), n);
        if data_len > 0 { prop_assert_eq!(usize::from(l.pdo) % ((usize::from(cpda) + 1) * 4), 0); }
        verify_header_digest(&out[..n], &l).expect("digest");
        prop_assert_eq!(CapsuleCmdHeader::parse(&out).expect("72").cmd, cmd);
    }

    #[test]
    fn data_pdus_round_trip(cccid: u16, ttag: u16, datao: u32, datal in 1u32..1_000_000, last: bool,
                            success: bool, d in digests(), pda in 0u8..32) {
        let mut out = [0u8; 256];
        let n = encode_h2c_data(cccid, ttag, datao, datal, last, d, pda, &mut out).expect("fits");
        let (ch, _) = CommonHeader::parse(&out).expect("8");
        let l = validate(&ch, d.pair(), Direction::FromHost, 1_000_000).expect("valid");
        prop_assert_eq!((l.data_len, l.data_offset()), (datal, n));
        prop_assert_eq!(ch.flags & DATA_LAST != 0, last);
        let h = DataHeader::parse(&out).expect("24");
        prop_assert_eq!((h.cccid.get(), h.ttag.get(), h.datao.get(), h.datal.get()), (cccid, ttag, datao, datal));
        verify_header_digest(&out[..n], &l).expect("digest");

        let flags = C2hDataFlags { last: last || success, success };
        let n = encode_c2h_data(cccid, datao, datal, flags, d, pda, &mut out).expect("fits");
        let (ch, _) = CommonHeader::parse(&out).expect("8");
        let l = validate(&ch, d.pair(), Direction::FromController, 1_000_000).expect("valid");
        prop_assert_eq!((l.data_len, l.data_offset()), (datal, n));
        prop_assert_eq!(ch.flags & DATA_SUCCESS != 0, success);
    }

    #[test]
    fn resp_r2t_term_round_trip(cqe_bytes in proptest::collection::vec(any::<u8>(), 16), hd: bool,
                                cccid: u16, ttag: u16, r2to: u32, r2tl: u32, fes_v: u16, fei: u32,
                                offending in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut out = [0u8; 256];
        let cqe = Completion::parse(&cqe_bytes).expect("16");
        let n = encode_capsule_resp(&cqe, hd, &mut out).expect("fits");
        let (ch, _) = CommonHeader::parse(&out).expect("8");
        let l = validate(&ch, (hd, false), Direction::FromController, 0).expect("valid");
        prop_assert_eq!(l.plen as usize, n);
        prop_assert_eq!(CapsuleRespPdu::parse(&out).expect("24").cqe, cqe);

        let n = encode_r2t(cccid, ttag, r2to, r2tl, hd, &mut out).expect("fits");
        let (ch, _) = CommonHeader::parse(&out).expect("8");
        let l = validate(&ch, (hd, true), Direction::FromController, 0).expect("valid");
        prop_assert_eq!(l.plen as usize, n);

        let n = encode_term_req(Direction::FromHost, fes_v, fei, &offending, &mut out).expect("fits");
        let (ch, ty) = CommonHeader::parse(&out).expect("8");
        prop_assert_eq!(ty, PduType::H2CTermReq);
        let l = validate(&ch, (hd, true), Direction::FromHost, 0).expect("valid");
        prop_assert_eq!(l.plen as usize, n);
        prop_assert_eq!(&out[24..n], &offending[..offending.len().min(128)]);
    }

    #[test]
    fn ic_round_trip(pda in 0u8..32, d in digests(), v: u32) {
        let mut out = [0u8; 128];
        encode_icreq(pda, d, v, &mut out).expect("fits");
        let r = ICReq::parse(&out).expect("128");
        r.check().expect("valid");
        prop_assert_eq!((r.hpda, Digests::from_dgst_byte(r.dgst), r.maxr2t.get()), (pda, d, v));
        encode_icresp(pda, d, v, &mut out).expect("fits");
        let r = ICResp::parse(&out).expect("128");
        prop_assert_eq!((r.cpda, Digests::from_dgst_byte(r.dgst), r.maxh2cdata.get()), (pda, d, v));
        let (ch, _) = CommonHeader::parse(&out).expect("8");
        validate(&ch, (false, false), Direction::FromController, 0).expect("valid");
    }
}
