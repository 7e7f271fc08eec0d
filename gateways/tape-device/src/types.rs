//! Values the drive and changer traits exchange.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DeviceError;

/// A cartridge's barcode (primary volume tag): 1 to 32 printable ASCII characters without
/// spaces, as SMC volume tags allow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Barcode(String);

impl Barcode {
    pub fn new(s: &str) -> Result<Barcode, DeviceError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !s.starts_with('.');
        if ok {
            Ok(Barcode(s.to_string()))
        } else {
            Err(DeviceError::InvalidBarcode(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Barcode {
    type Error = DeviceError;
    fn try_from(s: String) -> Result<Barcode, DeviceError> {
        Barcode::new(&s)
    }
}

impl From<Barcode> for String {
    fn from(b: Barcode) -> String {
        b.0
    }
}

impl fmt::Display for Barcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Block mode of a drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockSize {
    /// Every write is one block of its own length (up to the drive's maximum).
    Variable,
    /// Every block has exactly this many bytes.
    Fixed(u32),
}

/// A changer element, by index within its kind (0-based, in element address order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Element {
    Slot(u16),
    Drive(u16),
    ImportExport(u16),
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Slot(i) => write!(f, "slot {i}"),
            Element::Drive(i) => write!(f, "drive {i}"),
            Element::ImportExport(i) => write!(f, "import/export slot {i}"),
        }
    }
}

/// A drive element in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveElement {
    pub barcode: Option<Barcode>,
    /// The storage slot the cartridge came from, if the library knows.
    pub source: Option<Element>,
}

/// What the changer reports: every element and the barcode in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub slots: Vec<Option<Barcode>>,
    pub drives: Vec<DriveElement>,
    pub import_export: Vec<Option<Barcode>>,
}

impl Inventory {
    /// Where a cartridge is.
    pub fn find(&self, barcode: &Barcode) -> Option<Element> {
        let pos = |v: &[Option<Barcode>]| v.iter().position(|b| b.as_ref() == Some(barcode));
        if let Some(i) = pos(&self.slots) {
            return Some(Element::Slot(i as u16));
        }
        if let Some(i) = self
            .drives
            .iter()
            .position(|d| d.barcode.as_ref() == Some(barcode))
        {
            return Some(Element::Drive(i as u16));
        }
        pos(&self.import_export).map(|i| Element::ImportExport(i as u16))
    }

    /// The barcode in an element, or None if it is empty or does not exist.
    pub fn barcode_at(&self, e: Element) -> Option<&Barcode> {
        match e {
            Element::Slot(i) => self.slots.get(usize::from(i))?.as_ref(),
            Element::Drive(i) => self.drives.get(usize::from(i))?.barcode.as_ref(),
            Element::ImportExport(i) => self.import_export.get(usize::from(i))?.as_ref(),
        }
    }

    /// The first empty storage slot.
    pub fn free_slot(&self) -> Option<Element> {
        self.slots
            .iter()
            .position(Option::is_none)
            .map(|i| Element::Slot(i as u16))
    }
}

/// Result of a write that reached the medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// Written, and the tape is past early warning: finish the file and change cartridges.
    EarlyWarning,
}

/// Result of reading one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A block of this many bytes was read into the buffer.
    Block(usize),
    /// A filemark was crossed; the position is after it.
    Filemark,
    /// End of recorded data (blank check); the position did not move.
    EndOfData,
}

/// A SPACE operation. Counts may be negative (backwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Over blocks; stops at a filemark (after it forwards, before it backwards) with
    /// [`DeviceError::FilemarkEncountered`].
    Blocks(i64),
    /// Over filemarks: forwards ends after the n-th, backwards before it.
    Filemarks(i64),
    /// To end of recorded data.
    EndOfData,
}

/// Where the tape is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapePosition {
    /// Logical object number (blocks and filemarks from BOT).
    pub logical: u64,
    /// Filemarks between BOT and here.
    pub file_number: u64,
    /// Blocks since the last filemark.
    pub block_in_file: u64,
}

/// Drive status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveStatus {
    pub loaded: bool,
    pub barcode: Option<Barcode>,
    pub write_protected: bool,
    pub block_size: BlockSize,
    pub position: Option<TapePosition>,
    pub beginning_of_tape: bool,
    pub end_of_data: bool,
    pub early_warning: bool,
    /// Bytes the medium holds and bytes written, when the backend knows.
    pub capacity_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
}

impl DriveStatus {
    /// A drive with no cartridge threaded (`barcode`: one the changer put there, if known).
    pub fn unloaded(barcode: Option<Barcode>, block_size: BlockSize) -> DriveStatus {
        DriveStatus {
            loaded: false,
            barcode,
            write_protected: false,
            block_size,
            position: None,
            beginning_of_tape: false,
            end_of_data: false,
            early_warning: false,
            capacity_bytes: None,
            used_bytes: None,
        }
    }
}
