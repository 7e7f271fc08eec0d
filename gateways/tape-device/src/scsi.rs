//! A real library through the Linux SCSI stack: drives on the st driver's non-rewinding nodes
//! (`/dev/nstN`: read/write, MTIOCTOP, MTIOCGET, MTIOCPOS) and the changer on its SCSI generic
//! node (`/dev/sgN`: INQUIRY, READ ELEMENT STATUS, MOVE MEDIUM through SG_IO).
//!
//! Tested against the byte layouts of the specifications only (see `ferrite-scsi`); no real
//! drive or library was attached where this was written. The mapping of st's answers follows
//! the kernel's documentation (Documentation/scsi/st.rst): a read of 0 bytes crossed a filemark
//! (or hit end of data when MTIOCGET then reports EOD), ENOSPC on write is end of medium,
//! `GMT_EOT` after a successful write is early warning, ENOMEM on read is a block larger than
//! the buffer.

use std::path::{Path, PathBuf};

use ferrite_scsi::cdb::device_type;
use ferrite_scsi::{ElementKind, ElementStatus, MtOp, ScsiError, SgDevice, TapeDevice};
use serde::{Deserialize, Serialize};

use crate::{
    Barcode, BlockSize, Changer, DeviceError, DriveElement, DriveStatus, Element, Inventory,
    Library, ReadOutcome, Space, TapeDrive, TapePosition, WriteOutcome,
};

/// Configuration of a SCSI library.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScsiLibraryConfig {
    /// The changer's SCSI generic node, e.g. `/dev/sg3`.
    pub changer: PathBuf,
    /// The drives' non-rewinding nodes in data-transfer element address order, e.g. `/dev/nst0`.
    pub drives: Vec<PathBuf>,
}

/// Opens the changer (checking it is one) and names the drives; drives open at load.
pub fn open(config: &ScsiLibraryConfig) -> Result<Library, DeviceError> {
    for d in &config.drives {
        let name = d.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("nst") {
            return Err(DeviceError::Config(format!(
                "drive {}: use the non-rewinding node /dev/nstN (a rewinding node loses the \
                 position on every close)",
                d.display()
            )));
        }
    }
    let sg = SgDevice::open(&config.changer)?;
    let inq = sg.inquiry()?;
    if inq.device_type != device_type::MEDIUM_CHANGER {
        return Err(DeviceError::Config(format!(
            "{} is a {} {} of SCSI device type {:#04x}, not a medium changer (0x08)",
            config.changer.display(),
            inq.vendor,
            inq.product,
            inq.device_type
        )));
    }
    let drives = config
        .drives
        .iter()
        .map(|p| {
            Box::new(ScsiDrive {
                path: p.clone(),
                dev: None,
                block_size: BlockSize::Variable,
            }) as Box<dyn TapeDrive>
        })
        .collect();
    Ok(Library {
        changer: Box::new(ScsiChanger { sg }),
        drives,
    })
}

/// Element addresses of one inventory, by kind in address order.
#[derive(Debug, Default)]
struct Addresses {
    transport: Option<u16>,
    slots: Vec<u16>,
    drives: Vec<u16>,
    import_export: Vec<u16>,
}

fn sorted(els: &[ElementStatus], kind: ElementKind) -> Vec<&ElementStatus> {
    let mut v: Vec<&ElementStatus> = els.iter().filter(|e| e.kind == kind).collect();
    v.sort_by_key(|e| e.address);
    v
}

/// Turns a READ ELEMENT STATUS answer into the gateway's inventory and an address map.
fn inventory_of(els: &[ElementStatus]) -> (Inventory, Addresses) {
    let barcode = |e: &ElementStatus| {
        if e.full {
            e.barcode.as_deref().and_then(|b| Barcode::new(b).ok())
        } else {
            None
        }
    };
    let slots = sorted(els, ElementKind::Storage);
    let drives = sorted(els, ElementKind::DataTransfer);
    let ie = sorted(els, ElementKind::ImportExport);
    let element_of = |addr: u16| {
        slots
            .iter()
            .position(|e| e.address == addr)
            .map(|i| Element::Slot(i as u16))
            .or_else(|| {
                ie.iter()
                    .position(|e| e.address == addr)
                    .map(|i| Element::ImportExport(i as u16))
            })
    };
    let inv = Inventory {
        slots: slots.iter().map(|e| barcode(e)).collect(),
        drives: drives
            .iter()
            .map(|e| DriveElement {
                barcode: barcode(e),
                source: e.source.and_then(element_of),
            })
            .collect(),
        import_export: ie.iter().map(|e| barcode(e)).collect(),
    };
    let addrs = Addresses {
        transport: sorted(els, ElementKind::Transport)
            .first()
            .map(|e| e.address),
        slots: slots.iter().map(|e| e.address).collect(),
        drives: drives.iter().map(|e| e.address).collect(),
        import_export: ie.iter().map(|e| e.address).collect(),
    };
    (inv, addrs)
}

impl Addresses {
    fn of(&self, e: Element) -> Result<u16, DeviceError> {
        let v = match e {
            Element::Slot(i) => self.slots.get(usize::from(i)),
            Element::Drive(i) => self.drives.get(usize::from(i)),
            Element::ImportExport(i) => self.import_export.get(usize::from(i)),
        };
        v.copied().ok_or(DeviceError::NoSuchElement(e))
    }
}

/// A SCSI medium changer.
#[derive(Debug)]
pub struct ScsiChanger {
    sg: SgDevice,
}

impl Changer for ScsiChanger {
    fn name(&self) -> String {
        "scsi changer".to_string()
    }

    fn inventory(&mut self) -> Result<Inventory, DeviceError> {
        Ok(inventory_of(&self.sg.read_element_status(None)?).0)
    }

    fn move_medium(&mut self, from: Element, to: Element) -> Result<(), DeviceError> {
        let (inv, addrs) = inventory_of(&self.sg.read_element_status(None)?);
        let (src, dst) = (addrs.of(from)?, addrs.of(to)?);
        if inv.barcode_at(from).is_none() {
            return Err(DeviceError::SourceEmpty(from));
        }
        if inv.barcode_at(to).is_some() {
            return Err(DeviceError::DestinationFull(to));
        }
        // SMC-3: transport address 0 means the library's default robot.
        self.sg
            .move_medium(addrs.transport.unwrap_or(0), src, dst)?;
        Ok(())
    }
}

/// A drive on the st driver.
#[derive(Debug)]
pub struct ScsiDrive {
    path: PathBuf,
    dev: Option<TapeDevice>,
    block_size: BlockSize,
}

fn errno_is(e: &ScsiError, code: i32) -> bool {
    e.errno() == Some(code)
}

impl ScsiDrive {
    fn dev(&mut self) -> Result<&mut TapeDevice, DeviceError> {
        let name = self.path.display().to_string();
        self.dev.as_mut().ok_or(DeviceError::NotLoaded(name))
    }

    fn write_protected_error(&self) -> DeviceError {
        DeviceError::WriteProtected(self.path.display().to_string())
    }
}

impl TapeDrive for ScsiDrive {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&mut self) -> Result<(), DeviceError> {
        // A write-protected cartridge refuses a read-write open with EROFS/EACCES.
        let dev = match TapeDevice::open(&self.path, true) {
            Ok(d) => d,
            Err(e) if errno_is(&e, libc::EROFS) || errno_is(&e, libc::EACCES) => {
                TapeDevice::open(&self.path, false)?
            }
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = dev.op(MtOp::Load) {
            // Drives that load on insertion refuse MTLOAD; they are ready if online.
            if !dev.status()?.online {
                return Err(e.into());
            }
        }
        dev.op(MtOp::SetBlockSize(0))?;
        self.block_size = BlockSize::Variable;
        self.dev = Some(dev);
        Ok(())
    }

    fn unload(&mut self) -> Result<(), DeviceError> {
        if let Some(dev) = self.dev.take() {
            dev.op(MtOp::Rewind)?;
            dev.op(MtOp::Unload)?;
        }
        Ok(())
    }

    fn status(&mut self) -> Result<DriveStatus, DeviceError> {
        let block_size = self.block_size;
        let Some(dev) = self.dev.as_mut() else {
            return Ok(DriveStatus::unloaded(None, block_size));
        };
        let s = dev.status()?;
        let logical = dev.position()?;
        Ok(DriveStatus {
            loaded: s.online,
            barcode: None,
            write_protected: s.write_protected,
            block_size,
            position: Some(TapePosition {
                logical,
                file_number: u64::try_from(s.file_number).unwrap_or(0),
                block_in_file: u64::try_from(s.block_number).unwrap_or(0),
            }),
            beginning_of_tape: s.bot,
            end_of_data: s.eod,
            early_warning: s.eot,
            capacity_bytes: None,
            used_bytes: None,
        })
    }

    fn set_block_size(&mut self, size: BlockSize) -> Result<(), DeviceError> {
        let n = match size {
            BlockSize::Variable => 0,
            BlockSize::Fixed(n) => i32::try_from(n).map_err(|_| DeviceError::InvalidBlockSize {
                len: n as usize,
                reason: "too large for MTSETBLK".into(),
            })?,
        };
        self.dev()?.op(MtOp::SetBlockSize(n))?;
        self.block_size = size;
        Ok(())
    }

    fn write_block(&mut self, data: &[u8]) -> Result<WriteOutcome, DeviceError> {
        let wp = self.write_protected_error();
        let dev = self.dev()?;
        match dev.write_block(data) {
            Ok(n) if n == data.len() => {}
            Ok(_) => return Err(DeviceError::EndOfMedium(data.len())),
            Err(e) if errno_is(&e, libc::ENOSPC) => {
                return Err(DeviceError::EndOfMedium(data.len()))
            }
            Err(e) if errno_is(&e, libc::EROFS) || errno_is(&e, libc::EACCES) => return Err(wp),
            Err(e) => return Err(e.into()),
        }
        Ok(if dev.status()?.eot {
            WriteOutcome::EarlyWarning
        } else {
            WriteOutcome::Written
        })
    }

    fn write_filemarks(&mut self, count: u32) -> Result<WriteOutcome, DeviceError> {
        let n =
            i32::try_from(count).map_err(|_| DeviceError::Config("too many filemarks".into()))?;
        let dev = self.dev()?;
        match dev.op(MtOp::WriteFilemarks(n)) {
            Ok(()) => {}
            Err(e) if errno_is(&e, libc::ENOSPC) => return Err(DeviceError::EndOfMedium(0)),
            Err(e) => return Err(e.into()),
        }
        Ok(if dev.status()?.eot {
            WriteOutcome::EarlyWarning
        } else {
            WriteOutcome::Written
        })
    }

    fn read_block(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, DeviceError> {
        let len = buf.len();
        let dev = self.dev()?;
        match dev.read_block(buf) {
            Ok(0) => Ok(if dev.status()?.eod {
                ReadOutcome::EndOfData
            } else {
                ReadOutcome::Filemark
            }),
            Ok(n) => Ok(ReadOutcome::Block(n)),
            Err(e) if errno_is(&e, libc::ENOMEM) => Err(DeviceError::BlockTooLarge {
                len: len + 1,
                buf: len,
            }),
            Err(e) => {
                if dev.status().map(|s| s.eod).unwrap_or(false) {
                    Ok(ReadOutcome::EndOfData)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    fn rewind(&mut self) -> Result<(), DeviceError> {
        Ok(self.dev()?.op(MtOp::Rewind)?)
    }

    fn space(&mut self, space: Space) -> Result<(), DeviceError> {
        let count = |n: i64| {
            i32::try_from(n.unsigned_abs())
                .map_err(|_| DeviceError::Config(format!("space count {n} too large")))
        };
        let op = match space {
            Space::Blocks(n) if n >= 0 => MtOp::ForwardRecord(count(n)?),
            Space::Blocks(n) => MtOp::BackRecord(count(n)?),
            Space::Filemarks(n) if n >= 0 => MtOp::ForwardFile(count(n)?),
            Space::Filemarks(n) => MtOp::BackFile(count(n)?),
            Space::EndOfData => MtOp::EndOfData,
        };
        Ok(self.dev()?.op(op)?)
    }

    fn locate(&mut self, logical: u64) -> Result<(), DeviceError> {
        let n = i32::try_from(logical)
            .map_err(|_| DeviceError::Config(format!("block {logical} beyond MTSEEK's range")))?;
        Ok(self.dev()?.op(MtOp::Seek(n))?)
    }

    fn position(&mut self) -> Result<TapePosition, DeviceError> {
        self.status()?
            .position
            .ok_or_else(|| DeviceError::NotLoaded(self.name()))
    }

    fn erase(&mut self) -> Result<(), DeviceError> {
        Ok(self.dev()?.op(MtOp::Erase)?)
    }
}

/// Whether a path looks like a non-rewinding st node (for configuration checks and tests).
pub fn is_non_rewinding(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("nst"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(
        kind: ElementKind,
        address: u16,
        barcode: Option<&str>,
        source: Option<u16>,
    ) -> ElementStatus {
        ElementStatus {
            kind,
            address,
            full: barcode.is_some(),
            except: false,
            asc: 0,
            ascq: 0,
            source,
            barcode: barcode.map(str::to_string),
        }
    }

    #[test]
    fn element_status_maps_to_indexes_in_address_order() {
        let els = vec![
            el(ElementKind::Storage, 0x1001, None, None),
            el(ElementKind::Storage, 0x1000, Some("A00001L8"), None),
            el(ElementKind::DataTransfer, 0x0101, None, None),
            el(
                ElementKind::DataTransfer,
                0x0100,
                Some("A00002L8"),
                Some(0x1001),
            ),
            el(ElementKind::ImportExport, 0x0010, Some("A00003L8"), None),
            el(ElementKind::Transport, 0x0001, None, None),
        ];
        let (inv, addrs) = inventory_of(&els);
        let b = |s: &str| Some(Barcode::new(s).expect("valid"));
        assert_eq!(inv.slots, vec![b("A00001L8"), None]);
        assert_eq!(inv.drives[0].barcode, b("A00002L8"));
        assert_eq!(inv.drives[0].source, Some(Element::Slot(1)));
        assert_eq!(inv.drives[1].barcode, None);
        assert_eq!(inv.import_export, vec![b("A00003L8")]);
        assert_eq!(addrs.transport, Some(1));
        assert_eq!(addrs.of(Element::Drive(0)).expect("drive 0"), 0x0100);
        assert_eq!(addrs.of(Element::Slot(1)).expect("slot 1"), 0x1001);
        assert!(matches!(
            addrs.of(Element::Slot(2)),
            Err(DeviceError::NoSuchElement(_))
        ));
    }

    #[test]
    fn full_element_without_a_readable_barcode_shows_empty_barcode() {
        let mut e = el(ElementKind::Storage, 5, Some("bad code with spaces"), None);
        e.full = true;
        let (inv, _) = inventory_of(&[e]);
        assert_eq!(inv.slots, vec![None]);
    }

    #[test]
    fn rewinding_nodes_are_refused_in_the_configuration() {
        let cfg = ScsiLibraryConfig {
            changer: "/dev/sg-none".into(),
            drives: vec!["/dev/st0".into()],
        };
        let e = open(&cfg).expect_err("rewinding node");
        assert!(e.to_string().contains("non-rewinding"), "{e}");
        assert!(is_non_rewinding(Path::new("/dev/nst0")));
        assert!(!is_non_rewinding(Path::new("/dev/st0")));
    }

    #[test]
    fn a_missing_changer_node_is_named() {
        let cfg = ScsiLibraryConfig {
            changer: "/dev/sg-ferrite-none".into(),
            drives: vec![],
        };
        let e = open(&cfg).expect_err("missing changer");
        assert!(e.to_string().contains("/dev/sg-ferrite-none"), "{e}");
    }

    /// Device test: a real library named by FERRITE_CHANGER_DEVICE and FERRITE_TAPE_DEVICE.
    #[test]
    fn real_library_inventory_and_drive_status_when_available() {
        let (Some(changer), Some(drive)) = (
            std::env::var_os("FERRITE_CHANGER_DEVICE"),
            std::env::var_os("FERRITE_TAPE_DEVICE"),
        ) else {
            eprintln!(
                "skipped: no tape library (set FERRITE_CHANGER_DEVICE=/dev/sgN and \
                 FERRITE_TAPE_DEVICE=/dev/nstN to run)"
            );
            return;
        };
        let mut lib = open(&ScsiLibraryConfig {
            changer: changer.into(),
            drives: vec![drive.into()],
        })
        .expect("open the library");
        let inv = lib.changer.inventory().expect("inventory");
        assert!(!inv.drives.is_empty(), "{inv:?}");
        lib.drives[0].status().expect("drive status");
    }
}
