//! Cartridge handling for jobs: mounting through the changer, labels, choosing a cartridge to
//! append to, and locating a job's tape file.

use ferrite_tape_device::{Barcode, BlockSize, Element, Library, ReadOutcome, Space, TapeDrive};

use crate::catalog::Catalog;
use crate::error::TapeError;
use crate::format::{self, Kind, VolumeLabel, HEADER_LEN, MAX_PAYLOAD};

/// A read buffer big enough for any block of the format.
pub fn block_buffer() -> Vec<u8> {
    vec![0u8; HEADER_LEN + MAX_PAYLOAD]
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What is at the start of a cartridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelState {
    Blank,
    Ours(VolumeLabel),
    /// Another format (its first block does not parse as a ferrite-tape label).
    Foreign(String),
}

/// One drive of a library, with the changer to feed it.
#[derive(Debug)]
pub struct Mounter<'a> {
    pub lib: &'a mut Library,
    pub drive: usize,
    /// Automatic recycling: a full cartridge whose jobs all finished before this (Unix
    /// seconds, and no retained job builds on them) is erased and reused when nothing else
    /// is writable.
    pub recycle_before: Option<u64>,
}

impl<'a> Mounter<'a> {
    pub fn new(lib: &'a mut Library, drive: usize) -> Result<Mounter<'a>, TapeError> {
        if drive >= lib.drives.len() {
            return Err(TapeError::Invalid(format!(
                "drive {drive} does not exist (the library has {})",
                lib.drives.len()
            )));
        }
        Ok(Mounter {
            lib,
            drive,
            recycle_before: None,
        })
    }

    /// Lets `mount_for_append` recycle cartridges whose jobs finished before `before`.
    pub fn recycling(mut self, before: Option<u64>) -> Mounter<'a> {
        self.recycle_before = before;
        self
    }

    /// Erases and relabels the first of the `full` cartridges retention no longer protects;
    /// its jobs become `expired`. The reasons the others stay go to `skipped`.
    fn recycle_one(
        &mut self,
        full: &[Barcode],
        catalog: &Catalog,
        skipped: &mut Vec<String>,
    ) -> Result<Option<Barcode>, TapeError> {
        let Some(before) = self.recycle_before else {
            return Ok(None);
        };
        let needed = catalog.needed_jobs(before)?;
        for b in full {
            let jobs = catalog.jobs_on_cartridge(b.as_str())?;
            if let Some(j) = jobs.iter().find(|j| needed.contains(&j.id)) {
                skipped.push(format!(
                    "{b}: not recycled, job {} on it is within retention",
                    j.id
                ));
                continue;
            }
            self.mount(b)?;
            self.write_label(b, catalog)?;
            for j in &jobs {
                catalog.expire_job(j.id)?;
            }
            let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
            log::info!("cartridge {b} recycled (past retention); expired jobs {ids:?}");
            return Ok(Some(b.clone()));
        }
        Ok(None)
    }

    pub fn drive(&mut self) -> &mut dyn TapeDrive {
        self.lib.drives[self.drive].as_mut()
    }

    fn element(&self) -> Element {
        Element::Drive(self.drive as u16)
    }

    /// The cartridge in the drive, if any.
    pub fn mounted(&mut self) -> Result<Option<Barcode>, TapeError> {
        let inv = self.lib.changer.inventory()?;
        Ok(inv.drives.get(self.drive).and_then(|d| d.barcode.clone()))
    }

    /// Empties the drive: unloads and moves the cartridge back to where it came from (or the
    /// first free slot).
    pub fn dismount(&mut self) -> Result<(), TapeError> {
        let inv = self.lib.changer.inventory()?;
        let Some(d) = inv.drives.get(self.drive) else {
            return Ok(());
        };
        if d.barcode.is_none() {
            return Ok(());
        }
        self.drive().unload()?;
        let home = d
            .source
            .filter(|s| inv.barcode_at(*s).is_none() && !matches!(s, Element::Drive(_)))
            .or_else(|| inv.free_slot())
            .ok_or_else(|| TapeError::Invalid("no free slot to put the cartridge back".into()))?;
        self.lib.changer.move_medium(self.element(), home)?;
        Ok(())
    }

    /// Loads `barcode` into the drive (from wherever it is) and rewinds it.
    pub fn mount(&mut self, barcode: &Barcode) -> Result<(), TapeError> {
        if self.mounted()?.as_ref() != Some(barcode) {
            self.dismount()?;
            let inv = self.lib.changer.inventory()?;
            let at = inv
                .find(barcode)
                .ok_or_else(|| TapeError::CartridgeNotInLibrary(barcode.to_string()))?;
            if let Element::Drive(i) = at {
                return Err(TapeError::Invalid(format!(
                    "cartridge {barcode} is in drive {i}, in use"
                )));
            }
            self.lib.changer.move_medium(at, self.element())?;
        }
        let d = self.drive();
        d.load()?;
        d.set_block_size(BlockSize::Variable)?;
        d.rewind()?;
        Ok(())
    }

    /// Reads what is at the beginning of the mounted cartridge; leaves the tape after the label
    /// file when it is ours.
    pub fn read_label(&mut self) -> Result<LabelState, TapeError> {
        let d = self.drive();
        d.rewind()?;
        let mut buf = block_buffer();
        let n = match d.read_block(&mut buf) {
            Ok(ReadOutcome::EndOfData) => return Ok(LabelState::Blank),
            Ok(ReadOutcome::Filemark) => {
                return Ok(LabelState::Foreign("starts with a filemark".into()))
            }
            Ok(ReadOutcome::Block(n)) => n,
            Err(e @ ferrite_tape_device::DeviceError::BlockTooLarge { .. }) => {
                return Ok(LabelState::Foreign(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        match format::parse_record::<VolumeLabel>(&buf[..n], Kind::Label) {
            Ok((_, label)) => {
                if d.read_block(&mut buf)? != ReadOutcome::Filemark {
                    return Ok(LabelState::Foreign(
                        "label not followed by a filemark".into(),
                    ));
                }
                Ok(LabelState::Ours(label))
            }
            Err(e) => Ok(LabelState::Foreign(e.to_string())),
        }
    }

    /// Writes a new label on the mounted cartridge (erasing it: the caller checked it may).
    pub fn write_label(
        &mut self,
        barcode: &Barcode,
        catalog: &Catalog,
    ) -> Result<VolumeLabel, TapeError> {
        let label = VolumeLabel {
            barcode: barcode.to_string(),
            labelled_at: now_secs(),
            writer: format!("ferrite-tape {}", env!("CARGO_PKG_VERSION")),
        };
        let d = self.drive();
        d.rewind()?;
        d.erase()?;
        d.write_block(&format::encode_record(Kind::Label, 0, 0, &label))?;
        d.write_filemarks(1)?;
        catalog.forget_cartridge(barcode.as_str())?;
        catalog.add_cartridge(barcode.as_str(), label.labelled_at)?;
        Ok(label)
    }

    /// Mounts a cartridge to append a job to and positions it at end of data. Tries the
    /// cartridges in slot order, skipping those in `exclude`, write-protected, of another
    /// format, or past early warning; a blank one gets a label. The error lists every reason.
    pub fn mount_for_append(
        &mut self,
        exclude: &[Barcode],
        catalog: &Catalog,
    ) -> Result<Barcode, TapeError> {
        let inv = self.lib.changer.inventory()?;
        let mut candidates: Vec<Barcode> = inv.slots.iter().flatten().cloned().collect();
        if let Some(b) = inv.drives.get(self.drive).and_then(|d| d.barcode.clone()) {
            candidates.insert(0, b);
        }
        let mut skipped = Vec::new();
        let mut full = Vec::new();
        for b in candidates {
            if exclude.contains(&b) {
                continue;
            }
            self.mount(&b)?;
            let st = self.drive().status()?;
            if st.write_protected {
                skipped.push(format!("{b}: write protected"));
                continue;
            }
            match self.read_label()? {
                LabelState::Blank => {
                    self.write_label(&b, catalog)?;
                }
                LabelState::Ours(_) => {
                    if !catalog.is_known_cartridge(b.as_str())? {
                        catalog.add_cartridge(b.as_str(), now_secs())?;
                    }
                    self.drive().space(Space::EndOfData)?;
                    if self.drive().status()?.early_warning {
                        skipped.push(format!("{b}: full (past early warning)"));
                        full.push(b);
                        continue;
                    }
                }
                LabelState::Foreign(why) => {
                    skipped.push(format!("{b}: another format, left untouched ({why})"));
                    continue;
                }
            }
            self.drive().space(Space::EndOfData)?;
            if self.drive().position()?.block_in_file > 0 {
                // A job died before closing its file (kill -9): close it, so this job's part
                // starts a file of its own.
                self.drive().write_filemarks(1)?;
            }
            return Ok(b);
        }
        if let Some(b) = self.recycle_one(&full, catalog, &mut skipped)? {
            return Ok(b);
        }
        if skipped.is_empty() {
            skipped.push("the library has no cartridges in its slots".into());
        }
        Err(TapeError::NoWritableCartridge(skipped.join("; ")))
    }

    /// Positions the mounted cartridge at the start of tape file `file_number`.
    pub fn locate_file(&mut self, file_number: u64) -> Result<(), TapeError> {
        let d = self.drive();
        d.rewind()?;
        if file_number > 0 {
            let n =
                i64::try_from(file_number).map_err(|_| TapeError::Invalid("file number".into()))?;
            d.space(Space::Filemarks(n))?;
        }
        Ok(())
    }
}
