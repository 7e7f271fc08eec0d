//! Fuzz the NVMe/TCP receive path: common header parse, per-type
//! validation, header digest check and every fixed PDU header decoder.
#![no_main]

use ferrite_nvme::tcp::{
    validate, verify_header_digest, CapsuleCmdHeader, CapsuleRespPdu, CommonHeader, DataHeader,
    Direction, ICReq, ICResp, PduType, R2tPdu, TermReqHeader,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // Byte 0 picks digests and direction, bytes 1..5 the data limit; the
    // rest is the PDU as received.
    let Some((&sel, rest)) = input.split_first() else {
        return;
    };
    let Some((limit, pdu)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let digests = (sel & 1 != 0, sel & 2 != 0);
    let dir = if sel & 4 != 0 {
        Direction::FromHost
    } else {
        Direction::FromController
    };
    let max_data = u32::from_le_bytes(*limit);

    let _ = ICReq::parse(pdu).map(|r| r.check());
    let _ = ICResp::parse(pdu);
    let _ = CapsuleCmdHeader::parse(pdu);
    let _ = CapsuleRespPdu::parse(pdu);
    let _ = DataHeader::parse(pdu);
    let _ = R2tPdu::parse(pdu);
    let _ = TermReqHeader::parse(pdu);

    let Ok((ch, ty)) = CommonHeader::parse(pdu) else {
        return;
    };
    match validate(&ch, digests, dir, max_data) {
        Ok(layout) => {
            assert_eq!(layout.pdu_type, ty);
            assert_eq!(layout.hlen, ty.hlen());
            assert!(layout.header_with_digest_len() <= layout.plen as usize);
            let end = layout.data_offset() as u64 + u64::from(layout.data_len);
            assert!(end <= u64::from(layout.plen));
            if !matches!(ty, PduType::H2CTermReq | PduType::C2HTermReq) {
                assert!(layout.data_len <= max_data);
            }
            let _ = verify_header_digest(pdu, &layout);
        }
        Err(e) => {
            // Every rejection must be reportable in a TermReq.
            assert!((1..=6).contains(&e.fes()));
            assert!(e.fei() < 128);
        }
    }
});
