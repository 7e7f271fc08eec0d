//! Admin and Fabrics commands of the blocking controller.

use std::time::Instant;

use ferrite_nvme::admin::{Features, GetLogPage, Identify};
use ferrite_nvme::command::opcode;
use ferrite_nvme::fabrics::{property, PropertyGet, PropertySet, PropertySize};
use ferrite_nvme::identify::{
    decode_ns_list, IdentifyController, IdentifyNamespace, NsDescriptorList, CNS_ACTIVE_NAMESPACES,
    CNS_CONTROLLER, CNS_NAMESPACE, CNS_NS_DESCRIPTORS, IDENTIFY_DATA_SIZE, NS_LIST_MAX,
};
use ferrite_nvme::{Command, Completion};

use super::{Controller, IoData};
use crate::error::{HostError, Result, Violation};
use crate::qpair::SglMode;

fn decode<T>(what: &'static str, r: ferrite_nvme::error::Result<T>) -> Result<T> {
    r.map_err(|source| Violation::Decode { what, source }.into())
}

impl Controller {
    /// Sends an admin command and returns its completion whatever the
    /// status; read data lands in `data`. For tests that send odd commands.
    pub fn raw_admin(&mut self, cmd: &Command, data: IoData<'_>) -> Result<Completion> {
        self.raw_admin_with(cmd, data, SglMode::Auto)
    }

    /// [`Controller::raw_admin`] with control over the data pointer.
    pub fn raw_admin_with(
        &mut self,
        cmd: &Command,
        data: IoData<'_>,
        mode: SglMode,
    ) -> Result<Completion> {
        let timeout = self.opts.timeout;
        let done = self.admin.exec(cmd, data, mode, timeout)?;
        if done.data_digest_error {
            return Err(HostError::DataDigest { cid: done.cid.0 });
        }
        Ok(done.cqe)
    }

    /// Sends an admin command; a non-success status is an error.
    fn admin_cmd(&mut self, cmd: &Command, data: IoData<'_>) -> Result<Completion> {
        self.maybe_keep_alive()?;
        let timeout = self.opts.timeout;
        let done = self.admin.exec(cmd, data, SglMode::Auto, timeout)?;
        done.check()?;
        Ok(done.cqe)
    }

    /// Property Get; the size comes from the property offset (CAP is 8 bytes).
    pub fn property_get(&mut self, offset: u32) -> Result<u64> {
        let size = match property::size_of(offset) {
            Some(8) => PropertySize::Eight,
            _ => PropertySize::Four,
        };
        let cmd = PropertyGet { size, offset }.to_command(0);
        let cqe = self.admin_cmd(&cmd, IoData::None)?;
        Ok(match size {
            PropertySize::Eight => cqe.result64(),
            PropertySize::Four => u64::from(cqe.result()),
        })
    }

    /// Property Set.
    pub fn property_set(&mut self, offset: u32, value: u64) -> Result<()> {
        let size = match property::size_of(offset) {
            Some(8) => PropertySize::Eight,
            _ => PropertySize::Four,
        };
        let cmd = PropertySet {
            size,
            offset,
            value,
        }
        .to_command(0);
        self.admin_cmd(&cmd, IoData::None)?;
        Ok(())
    }

    /// Identify with any CNS; returns the 4096-byte structure.
    pub fn identify_raw(&mut self, cns: u8, nsid: u32, cntid: u16, csi: u8) -> Result<Vec<u8>> {
        let cmd = Identify {
            cns,
            cntid,
            cnssid: 0,
            csi,
            nsid,
        }
        .to_command(0);
        let mut buf = vec![0u8; IDENTIFY_DATA_SIZE];
        self.admin_cmd(&cmd, IoData::Read(&mut buf))?;
        Ok(buf)
    }

    /// Identify Controller (fresh from the controller).
    pub fn identify_controller(&mut self) -> Result<IdentifyController> {
        let buf = self.identify_raw(CNS_CONTROLLER, 0, 0, 0)?;
        decode("Identify Controller", IdentifyController::parse(&buf))
    }

    /// Identify Namespace; also remembers the namespace's block size.
    pub fn identify_namespace(&mut self, nsid: u32) -> Result<IdentifyNamespace> {
        let buf = self.identify_raw(CNS_NAMESPACE, nsid, 0, 0)?;
        let ns = decode("Identify Namespace", IdentifyNamespace::parse(&buf))?;
        if let Some(bs) = ns.current_lba_format().block_size() {
            if ns.nsze.get() > 0 {
                self.block_sizes.insert(nsid, bs);
            }
        }
        Ok(ns)
    }

    /// Every active NSID, ascending (follows lists longer than one page).
    pub fn active_namespaces(&mut self) -> Result<Vec<u32>> {
        let mut all = Vec::new();
        let mut after = 0u32;
        loop {
            let buf = self.identify_raw(CNS_ACTIVE_NAMESPACES, after, 0, 0)?;
            let page = decode_ns_list(&buf);
            let full = page.len() == NS_LIST_MAX;
            match page.last() {
                Some(&last) if full && last < 0xFFFF_FFFE => after = last,
                _ => {
                    all.extend(page);
                    return Ok(all);
                }
            }
            all.extend(page);
        }
    }

    /// Namespace Identification Descriptor list.
    pub fn ns_descriptors(&mut self, nsid: u32) -> Result<NsDescriptorList> {
        let buf = self.identify_raw(CNS_NS_DESCRIPTORS, nsid, 0, 0)?;
        decode(
            "Namespace Identification Descriptors",
            NsDescriptorList::decode(&buf),
        )
    }

    /// Get Log Page: `len` bytes (a multiple of 4) at byte `offset`.
    pub fn get_log_page(&mut self, lid: u8, nsid: u32, len: u32, offset: u64) -> Result<Vec<u8>> {
        if len == 0 || len % 4 != 0 {
            return Err(HostError::InvalidArgument(format!(
                "log page length {len} is not a non-zero multiple of 4"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        let chunk = (self.max_transfer.min(1 << 20) / 4 * 4).max(4);
        let mut done = 0u32;
        while done < len {
            let n = (len - done).min(chunk);
            let cmd = GetLogPage {
                lid,
                numd: u64::from(n / 4),
                lpo: offset + u64::from(done),
                nsid,
                ..GetLogPage::default()
            }
            .to_command(0);
            self.admin_cmd(
                &cmd,
                IoData::Read(&mut buf[done as usize..(done + n) as usize]),
            )?;
            done += n;
        }
        Ok(buf)
    }

    /// Get Features (current value); returns completion dword 0.
    pub fn get_features(&mut self, fid: u8, nsid: u32, cdw11: u32) -> Result<u32> {
        let cmd = Features {
            fid,
            sv: false,
            sel: 0,
            value: cdw11,
            nsid,
        }
        .to_get_command(0);
        Ok(self.admin_cmd(&cmd, IoData::None)?.result())
    }

    /// Set Features with CDW11 = `value`; returns completion dword 0.
    pub fn set_features(&mut self, fid: u8, nsid: u32, value: u32, save: bool) -> Result<u32> {
        let cmd = Features {
            fid,
            sv: save,
            sel: 0,
            value,
            nsid,
        }
        .to_set_command(0);
        Ok(self.admin_cmd(&cmd, IoData::None)?.result())
    }

    /// Keep Alive.
    pub fn keep_alive(&mut self) -> Result<()> {
        let cmd = Command::new(opcode::admin::KEEP_ALIVE, 0);
        let timeout = self.opts.timeout;
        let done = self
            .admin
            .exec(&cmd, IoData::None, SglMode::Auto, timeout)?;
        done.check()?;
        self.last_keep_alive = Instant::now();
        Ok(())
    }

    /// Submits an Asynchronous Event Request without waiting; its
    /// completion shows up in [`Controller::take_admin_events`].
    pub fn submit_async_event_request(&mut self) -> Result<crate::types::Cid> {
        let cmd = Command::new(opcode::admin::ASYNC_EVENT_REQUEST, 0);
        let cid = self.admin.qp.submit(&cmd, crate::qpair::Data::None)?;
        self.admin.qp.flush()?;
        Ok(cid)
    }
}
