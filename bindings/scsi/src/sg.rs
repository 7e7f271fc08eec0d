//! A safe handle on a SCSI generic node (`/dev/sgN`) for medium changers: CDBs through `SG_IO`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::cdb::{self, ElementKind, ElementStatus, Inquiry, Sense};
use crate::error::ScsiError;
use crate::raw::{self, SgIoHdrRaw};

/// SCSI status GOOD and CHECK CONDITION (SAM-5).
const STATUS_GOOD: u8 = 0x00;
const STATUS_CHECK_CONDITION: u8 = 0x02;

/// Direction of a command's data phase.
#[derive(Debug)]
pub enum Data<'a> {
    None,
    FromDevice(&'a mut [u8]),
    ToDevice(&'a [u8]),
}

/// An open SCSI generic device.
#[derive(Debug)]
pub struct SgDevice {
    file: File,
    path: PathBuf,
    /// Per-command timeout in milliseconds (robot moves take minutes on real libraries).
    pub timeout_ms: u32,
}

impl SgDevice {
    pub fn open(path: &Path) -> Result<SgDevice, ScsiError> {
        let file = crate::error::open_node(path, true)?;
        Ok(SgDevice {
            file,
            path: path.to_path_buf(),
            timeout_ms: 600_000,
        })
    }

    /// Runs one CDB; returns the number of bytes transferred.
    pub fn execute(
        &self,
        op: &'static str,
        cdb: &[u8],
        data: Data<'_>,
    ) -> Result<usize, ScsiError> {
        let path = || self.path.display().to_string();
        let cmd_len = u8::try_from(cdb.len())
            .map_err(|_| ScsiError::malformed("cdb", format!("{} bytes", cdb.len())))?;
        let mut sense = [0u8; 64];
        let (direction, ptr, len) = match data {
            Data::None => (raw::SG_DXFER_NONE, std::ptr::null_mut(), 0usize),
            Data::FromDevice(b) => (raw::SG_DXFER_FROM_DEV, b.as_mut_ptr().cast(), b.len()),
            Data::ToDevice(b) => (raw::SG_DXFER_TO_DEV, b.as_ptr().cast_mut().cast(), b.len()),
        };
        let dxfer_len = u32::try_from(len)
            .map_err(|_| ScsiError::malformed("data buffer", format!("{len} bytes")))?;
        let mut hdr = SgIoHdrRaw {
            interface_id: raw::SG_INTERFACE_ID,
            dxfer_direction: direction,
            cmd_len,
            mx_sb_len: sense.len() as u8,
            iovec_count: 0,
            dxfer_len,
            dxferp: ptr,
            cmdp: cdb.as_ptr(),
            sbp: sense.as_mut_ptr(),
            timeout: self.timeout_ms,
            flags: 0,
            pack_id: 0,
            usr_ptr: std::ptr::null_mut(),
            status: 0,
            masked_status: 0,
            msg_status: 0,
            sb_len_wr: 0,
            host_status: 0,
            driver_status: 0,
            resid: 0,
            duration: 0,
            info: 0,
        };
        // SAFETY: `hdr` is a valid `sg_io_hdr` (layout asserted in `raw`). Every pointer in it
        // refers to memory that outlives this synchronous call: `cdb` (cmd_len bytes, read by the
        // kernel), `sense` (mx_sb_len bytes, written), and the data buffer of `dxfer_len` bytes,
        // borrowed mutably for FromDevice (written) or shared for ToDevice (only read by the
        // kernel despite the `*mut` field type). SG_IO blocks until the command completes.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                raw::SG_IO as libc::c_ulong,
                &mut hdr as *mut SgIoHdrRaw,
            )
        };
        if rc < 0 {
            return Err(ScsiError::Os {
                op,
                path: path(),
                source: std::io::Error::last_os_error(),
            });
        }
        if hdr.status == STATUS_CHECK_CONDITION && hdr.sb_len_wr > 0 {
            let n = usize::from(hdr.sb_len_wr).min(sense.len());
            let sense = Sense::parse(&sense[..n])?;
            return Err(ScsiError::CheckCondition {
                op,
                path: path(),
                sense,
            });
        }
        if hdr.status != STATUS_GOOD || hdr.host_status != 0 || (hdr.driver_status & 0x0f) != 0 {
            return Err(ScsiError::Status {
                op,
                path: path(),
                status: hdr.status,
                host: hdr.host_status,
                driver: hdr.driver_status,
            });
        }
        let resid = usize::try_from(hdr.resid.max(0)).unwrap_or(0);
        Ok(len.saturating_sub(resid))
    }

    pub fn test_unit_ready(&self) -> Result<(), ScsiError> {
        self.execute("TEST UNIT READY", &cdb::test_unit_ready(), Data::None)
            .map(|_| ())
    }

    pub fn inquiry(&self) -> Result<Inquiry, ScsiError> {
        let mut buf = [0u8; 96];
        let n = self.execute(
            "INQUIRY",
            &cdb::inquiry(buf.len() as u16),
            Data::FromDevice(&mut buf),
        )?;
        Inquiry::parse(&buf[..n])
    }

    /// All elements (or those of one kind) with barcodes.
    pub fn read_element_status(
        &self,
        kind: Option<ElementKind>,
    ) -> Result<Vec<ElementStatus>, ScsiError> {
        let mut buf = vec![0u8; 256 * 1024];
        let cdb = cdb::read_element_status(kind, 0, 0xffff, buf.len() as u32);
        let n = self.execute("READ ELEMENT STATUS", &cdb, Data::FromDevice(&mut buf))?;
        cdb::parse_element_status(&buf[..n])
    }

    pub fn move_medium(
        &self,
        transport: u16,
        source: u16,
        destination: u16,
    ) -> Result<(), ScsiError> {
        let cdb = cdb::move_medium(transport, source, destination);
        self.execute("MOVE MEDIUM", &cdb, Data::None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Device test: runs against a real changer named by FERRITE_CHANGER_DEVICE, else says why not.
    #[test]
    fn real_changer_inventory_when_available() {
        let Some(dev) = std::env::var_os("FERRITE_CHANGER_DEVICE") else {
            eprintln!("skipped: no changer device (set FERRITE_CHANGER_DEVICE=/dev/sgN to run)");
            return;
        };
        let sg = SgDevice::open(Path::new(&dev)).expect("open the sg node");
        let inq = sg.inquiry().expect("INQUIRY");
        assert_eq!(inq.device_type, cdb::device_type::MEDIUM_CHANGER, "{inq:?}");
        let els = sg.read_element_status(None).expect("READ ELEMENT STATUS");
        assert!(
            els.iter().any(|e| e.kind == ElementKind::DataTransfer),
            "{els:?}"
        );
    }
}
