//! Receive side of the queue pair: PDU framing, checks and dispatch.

use ferrite_nvme::digest::{read_digest, Crc32c};
use ferrite_nvme::tcp::{
    validate, verify_header_digest, CapsuleRespPdu, CommonHeader, DataHeader, Digests, Direction,
    ICResp, PduError, PduLayout, PduType, R2tPdu, TermReqHeader, DATA_LAST, DATA_SUCCESS,
    DIGEST_LEN, MAX_PDA, PFV_1_0,
};
use ferrite_nvme::{Completion, NvmeError, Status};

use super::slots::Dir;
use super::{Completed, QpState, TcpQueuePair};
use crate::error::{HostError, Result, Violation};

/// Where the receiver is within the byte stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RxState {
    /// At a PDU boundary.
    Header,
    /// Inside the data of a C2HData PDU.
    Data {
        cid: u16,
        remaining: u32,
        digest: bool,
        crc: Crc32c,
        last: bool,
        success: bool,
    },
}

/// The smallest MAXH2CDATA the transport binding allows.
const MIN_MAXH2CDATA: u32 = 4096;

fn decode_err(what: &'static str) -> impl FnOnce(NvmeError) -> HostError {
    move |source| Violation::Decode { what, source }.into()
}

impl TcpQueuePair {
    /// Consumes every complete piece of the receive buffer.
    pub(super) fn process_rx(&mut self, out: &mut Vec<Completed>) -> Result<()> {
        loop {
            let progressed = match self.rx_state {
                RxState::Header => self.rx_header(out)?,
                RxState::Data { .. } => self.rx_data(out)?,
            };
            if !progressed {
                break;
            }
        }
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        }
        Ok(())
    }

    /// Handles one PDU header if it is fully buffered. Returns false when more bytes are needed.
    fn rx_header(&mut self, out: &mut Vec<Completed>) -> Result<bool> {
        let avail = self.rx_end - self.rx_start;
        if avail < CommonHeader::SIZE {
            return Ok(false);
        }
        let buf = &self.rx[self.rx_start..self.rx_end];
        let (ch, _) = CommonHeader::parse(buf).map_err(Violation::Pdu)?;
        let layout = if self.state == QpState::AwaitIcResp {
            validate(&ch, (false, false), Direction::FromController, 0)
        } else {
            validate(
                &ch,
                self.neg.digests.pair(),
                Direction::FromController,
                u32::MAX,
            )
        }
        .map_err(Violation::Pdu)?;
        let need = if layout.pdu_type == PduType::C2HData {
            layout.data_offset()
        } else {
            layout.plen as usize
        };
        if avail < need {
            if self.rx_start + need > self.rx.len() {
                self.compact_rx();
            }
            return Ok(false);
        }
        verify_header_digest(&buf[..layout.header_with_digest_len()], &layout)
            .map_err(Violation::Pdu)?;
        let start = self.rx_start;
        self.rx_start += need;
        match layout.pdu_type {
            PduType::ICResp => {
                let resp = ICResp::parse(&self.rx[start..]).map_err(decode_err("ICResp"))?;
                self.on_icresp(&resp)?;
            }
            PduType::C2HTermReq => {
                let t = TermReqHeader::parse(&self.rx[start..]).map_err(decode_err("TermReq"))?;
                return Err(HostError::TermReq {
                    fes: t.fes.get(),
                    fei: t.fei.get(),
                });
            }
            ty if self.state == QpState::AwaitIcResp => {
                return Err(Violation::Unexpected {
                    pdu_type: ty,
                    state: "awaiting ICResp",
                }
                .into());
            }
            PduType::CapsuleResp => {
                let p =
                    CapsuleRespPdu::parse(&self.rx[start..]).map_err(decode_err("CapsuleResp"))?;
                let cid = p.cqe.cid();
                if self.slots.in_flight_mut(cid).is_none() {
                    return Err(Violation::UnknownCid {
                        pdu: "CapsuleResp",
                        cid,
                    }
                    .into());
                }
                self.complete(cid, p.cqe, false, out)?;
            }
            PduType::C2HData => {
                let h = DataHeader::parse(&self.rx[start..]).map_err(decode_err("C2HData"))?;
                self.on_c2h_header(&h, &layout)?;
            }
            PduType::R2T => {
                let r = R2tPdu::parse(&self.rx[start..]).map_err(decode_err("R2T"))?;
                self.on_r2t(&r)?;
            }
            ty => {
                return Err(Violation::Unexpected {
                    pdu_type: ty,
                    state: self.state.name(),
                }
                .into());
            }
        }
        Ok(true)
    }

    fn on_icresp(&mut self, resp: &ICResp) -> Result<()> {
        if self.state != QpState::AwaitIcResp {
            return Err(Violation::Unexpected {
                pdu_type: PduType::ICResp,
                state: self.state.name(),
            }
            .into());
        }
        let bad = |field, value| -> HostError { Violation::BadIcResp { field, value }.into() };
        if resp.pfv.get() != PFV_1_0 {
            return Err(bad("pfv", u32::from(resp.pfv.get())));
        }
        let got = Digests::from_dgst_byte(resp.dgst);
        let asked = self.cfg.digests;
        if (got.header && !asked.header) || (got.data && !asked.data) {
            return Err(bad("dgst (digest not requested)", u32::from(resp.dgst)));
        }
        if resp.cpda > MAX_PDA {
            return Err(bad("cpda", u32::from(resp.cpda)));
        }
        let maxh2cdata = resp.maxh2cdata.get();
        if maxh2cdata < MIN_MAXH2CDATA || maxh2cdata % 4 != 0 {
            return Err(bad("maxh2cdata", maxh2cdata));
        }
        if got != asked {
            log::info!(
                "queue {}: controller enabled digests {got:?}, requested {asked:?}",
                self.cfg.qid
            );
        }
        self.neg.digests = got;
        self.neg.cpda = resp.cpda;
        self.neg.maxh2cdata = maxh2cdata;
        self.queue_connect()
    }

    fn on_c2h_header(&mut self, h: &DataHeader, layout: &PduLayout) -> Result<()> {
        let cid = h.cccid.get();
        let datao = h.datao.get();
        let datal = h.datal.get();
        let Some(slot) = self.slots.in_flight_mut(cid) else {
            return Err(Violation::UnknownCid {
                pdu: "C2HData",
                cid,
            }
            .into());
        };
        if slot.dir != Dir::FromController {
            return Err(Violation::WrongDirection {
                pdu: "C2HData",
                cid,
            }
            .into());
        }
        if datal != layout.data_len {
            return Err(Violation::Pdu(PduError::InvalidField {
                field: "datal",
                offset: DataHeader::DATAL_OFFSET,
                value: datal,
            })
            .into());
        }
        if slot.c2h_last {
            return Err(Violation::Pdu(PduError::Sequence {
                reason: "C2HData after the last one of the command",
            })
            .into());
        }
        if datao != slot.received {
            return Err(Violation::DataOffset {
                cid,
                expected: slot.received,
                got: datao,
            }
            .into());
        }
        if u64::from(datao) + u64::from(datal) > u64::from(slot.len) {
            return Err(Violation::OutOfRange {
                pdu: "C2HData",
                cid,
                offset: datao,
                len: datal,
                total: slot.len,
            }
            .into());
        }
        let flags = h.ch.flags;
        self.rx_state = RxState::Data {
            cid,
            remaining: datal,
            digest: layout.data_digest,
            crc: Crc32c::new(),
            last: flags & DATA_LAST != 0,
            success: flags & DATA_SUCCESS != 0,
        };
        Ok(())
    }

    /// Copies buffered C2H data into the command's slot. Returns false when more bytes are needed.
    fn rx_data(&mut self, out: &mut Vec<Completed>) -> Result<bool> {
        let RxState::Data {
            cid,
            mut remaining,
            digest,
            mut crc,
            last,
            success,
        } = self.rx_state
        else {
            return Ok(false);
        };
        let avail = self.rx_end - self.rx_start;
        let slot = self
            .slots
            .get_mut(cid)
            .expect("C2HData cid was checked to be outstanding");
        if remaining > 0 {
            let n = avail.min(remaining as usize);
            if n == 0 {
                return Ok(false);
            }
            let src = &self.rx[self.rx_start..self.rx_start + n];
            let off = slot.received as usize;
            slot.buf[off..off + n].copy_from_slice(src);
            if digest {
                crc.update(src);
            }
            slot.received += n as u32;
            remaining -= n as u32;
            self.rx_start += n;
            self.rx_state = RxState::Data {
                cid,
                remaining,
                digest,
                crc,
                last,
                success,
            };
            if remaining > 0 {
                return Ok(false);
            }
        }
        if digest {
            if self.rx_end - self.rx_start < DIGEST_LEN {
                return Ok(false);
            }
            let received = read_digest(&self.rx[self.rx_start..]).expect("four bytes are buffered");
            self.rx_start += DIGEST_LEN;
            if received != crc.value() {
                log::warn!(
                    "queue {}: C2H data digest mismatch on cid {cid}: computed {:#010x}, received {received:#010x}",
                    self.cfg.qid,
                    crc.value()
                );
                slot.data_digest_error = true;
            }
        }
        if last {
            slot.c2h_last = true;
        }
        self.rx_state = RxState::Header;
        if success {
            let cqe = Completion::new(cid, Status::SUCCESS).with_sq(0, self.cfg.qid);
            self.complete(cid, cqe, true, out)?;
        }
        Ok(true)
    }

    /// When nothing is buffered and a large C2H payload is pending, the
    /// (cid, offset, length) to read straight from the socket into the
    /// slot, saving a copy.
    pub(super) fn direct_data_range(&self) -> Option<(u16, usize, usize)> {
        let RxState::Data { cid, remaining, .. } = self.rx_state else {
            return None;
        };
        if self.rx_start != self.rx_end || (remaining as usize) < self.rx.len() / 4 {
            return None;
        }
        let slot = self.slots.get(cid)?;
        Some((cid, slot.received as usize, remaining as usize))
    }

    /// Accounts `n` bytes read into the range from [`TcpQueuePair::direct_data_range`].
    pub(super) fn direct_data_done(&mut self, n: usize) {
        if let RxState::Data {
            cid,
            remaining,
            digest,
            mut crc,
            last,
            success,
        } = self.rx_state
        {
            if let Some(slot) = self.slots.get_mut(cid) {
                let off = slot.received as usize;
                if digest {
                    crc.update(&slot.buf[off..off + n]);
                }
                slot.received += n as u32;
            }
            self.rx_state = RxState::Data {
                cid,
                remaining: remaining - n as u32,
                digest,
                crc,
                last,
                success,
            };
        }
    }

    fn on_r2t(&mut self, r: &R2tPdu) -> Result<()> {
        let cid = r.cccid.get();
        let (r2to, r2tl) = (r.r2to.get(), r.r2tl.get());
        let Some(slot) = self.slots.in_flight_mut(cid) else {
            return Err(Violation::UnknownCid { pdu: "R2T", cid }.into());
        };
        match slot.dir {
            Dir::ToControllerR2t => {}
            Dir::ToControllerInCapsule => {
                return Err(Violation::BadR2t {
                    cid,
                    reason: "its data was sent in-capsule",
                }
                .into())
            }
            _ => return Err(Violation::WrongDirection { pdu: "R2T", cid }.into()),
        }
        if r2tl == 0 {
            return Err(Violation::BadR2t {
                cid,
                reason: "zero length",
            }
            .into());
        }
        if u64::from(r2to) + u64::from(r2tl) > u64::from(slot.len) {
            return Err(Violation::OutOfRange {
                pdu: "R2T",
                cid,
                offset: r2to,
                len: r2tl,
                total: slot.len,
            }
            .into());
        }
        slot.r2t_requested = slot.r2t_requested.saturating_add(r2tl);
        self.push_h2c(cid, r.ttag.get(), r2to, r2tl)
    }
}
