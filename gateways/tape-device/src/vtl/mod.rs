//! The virtual tape library: a directory with a state file (which cartridge is in which slot,
//! drive or import/export slot) and one file per cartridge (see [`cartridge`]).
//!
//! ```text
//! <dir>/library.json          element state, replaced atomically on every move
//! <dir>/cartridges/<BARCODE>.vtape
//! ```
//!
//! Import: [`VirtualLibrary::insert`] puts a cartridge (new and blank, or one taken out before)
//! into an empty import/export slot; the changer moves it from there. Export: move it to an
//! import/export slot, then [`VirtualLibrary::take_out`] removes it from the library.

pub mod cartridge;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

pub use cartridge::{Cartridge, CartridgeSpec, MAX_BLOCK};

use crate::{
    Barcode, BlockSize, Changer, DeviceError, DriveElement, DriveStatus, Element, Inventory,
    Library, ReadOutcome, Space, TapeDrive, TapePosition, WriteOutcome,
};

fn default_early_warning() -> u64 {
    4 << 20
}

/// Configuration of a virtual library.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtualLibraryConfig {
    pub dir: PathBuf,
    pub slots: u16,
    pub drives: u16,
    #[serde(default)]
    pub import_export: u16,
    /// Capacity of new cartridges in bytes.
    pub cartridge_capacity: u64,
    /// Early-warning zone before the end of the medium, in bytes.
    #[serde(default = "default_early_warning")]
    pub early_warning: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct DriveState {
    barcode: Option<Barcode>,
    source: Option<Element>,
    /// A virtual drive holds the cartridge threaded between load and unload.
    #[serde(default)]
    threaded: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    slots: Vec<Option<Barcode>>,
    drives: Vec<DriveState>,
    import_export: Vec<Option<Barcode>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    spec: CartridgeSpec,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the last persisted state on disk; carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cartridge_path(&self, b: &Barcode) -> PathBuf {
        self.dir.join("cartridges").join(format!("{b}.vtape"))
    }

    fn exported_path(&self, b: &Barcode) -> PathBuf {
        self.dir.join("exported").join(format!("{b}.vtape"))
    }

    fn persist(&self, s: &State) -> Result<(), DeviceError> {
        let path = self.dir.join("library.json");
        let tmp = self.dir.join("library.json.tmp");
        let ctx = || format!("save {}", path.display());
        let bytes = serde_json::to_vec_pretty(s)
            .map_err(|e| DeviceError::io(ctx(), std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| DeviceError::io(ctx(), e))
    }
}

/// A virtual library opened from its directory.
#[derive(Debug, Clone)]
pub struct VirtualLibrary {
    shared: Arc<Shared>,
}

impl VirtualLibrary {
    /// Opens (creating on first use) the library in `config.dir`. Element counts come from the
    /// configuration; a library may grow but not shrink under its cartridges.
    pub fn open(config: &VirtualLibraryConfig) -> Result<VirtualLibrary, DeviceError> {
        if config.drives == 0 || config.slots == 0 {
            return Err(DeviceError::Config(
                "a library needs at least one drive and one slot".into(),
            ));
        }
        let spec = CartridgeSpec {
            capacity: config.cartridge_capacity,
            early_warning: config.early_warning,
        };
        if spec.capacity <= spec.early_warning || spec.capacity < 64 * 1024 {
            return Err(DeviceError::Config(format!(
                "cartridge_capacity {} must be at least 64 KiB and above early_warning {}",
                spec.capacity, spec.early_warning
            )));
        }
        for sub in ["cartridges", "exported"] {
            let d = config.dir.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| DeviceError::io(format!("create {}", d.display()), e))?;
        }
        let path = config.dir.join("library.json");
        let mut state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes)
                .map_err(|e| DeviceError::Config(format!("{} is damaged: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                slots: Vec::new(),
                drives: Vec::new(),
                import_export: Vec::new(),
            },
            Err(e) => return Err(DeviceError::io(format!("read {}", path.display()), e)),
        };
        let shrink = |have: usize, want: u16, what: &str, used: bool| {
            if have > usize::from(want) && used {
                Err(DeviceError::Config(format!(
                    "{what}: the library has {have} with cartridges beyond the configured {want}"
                )))
            } else {
                Ok(())
            }
        };
        shrink(
            state.slots.len(),
            config.slots,
            "slots",
            state
                .slots
                .iter()
                .skip(usize::from(config.slots))
                .any(Option::is_some),
        )?;
        shrink(
            state.drives.len(),
            config.drives,
            "drives",
            state
                .drives
                .iter()
                .skip(usize::from(config.drives))
                .any(|d| d.barcode.is_some()),
        )?;
        shrink(
            state.import_export.len(),
            config.import_export,
            "import/export slots",
            state
                .import_export
                .iter()
                .skip(usize::from(config.import_export))
                .any(Option::is_some),
        )?;
        state.slots.resize(usize::from(config.slots), None);
        state
            .drives
            .resize(usize::from(config.drives), DriveState::default());
        state
            .import_export
            .resize(usize::from(config.import_export), None);
        // A virtual drive is never threaded across a restart.
        for d in &mut state.drives {
            d.threaded = false;
        }
        let shared = Shared {
            dir: config.dir.clone(),
            spec,
            state: Mutex::new(state),
        };
        shared.persist(&shared.lock())?;
        Ok(VirtualLibrary {
            shared: Arc::new(shared),
        })
    }

    /// A changer and drive handles sharing this library's state.
    pub fn into_library(self) -> Result<Library, DeviceError> {
        let n = self.shared.lock().drives.len();
        let drives = (0..n)
            .map(|i| {
                Box::new(VirtualDrive {
                    index: i as u16,
                    shared: self.shared.clone(),
                    cart: None,
                }) as Box<dyn TapeDrive>
            })
            .collect();
        Ok(Library {
            changer: Box::new(VirtualChanger {
                shared: self.shared,
            }),
            drives,
        })
    }

    /// Puts a cartridge into an empty import/export slot (or a storage slot when the library has
    /// none): a cartridge taken out earlier comes back with its data, an unknown barcode comes in
    /// blank.
    pub fn insert(&self, barcode: &Barcode) -> Result<Element, DeviceError> {
        let mut s = self.shared.lock();
        if Inventory::from(&*s).find(barcode).is_some() {
            return Err(DeviceError::DuplicateBarcode(barcode.to_string()));
        }
        let into = if s.import_export.is_empty() {
            s.slots
                .iter()
                .position(Option::is_none)
                .map(|i| Element::Slot(i as u16))
        } else {
            s.import_export
                .iter()
                .position(Option::is_none)
                .map(|i| Element::ImportExport(i as u16))
        }
        .ok_or(DeviceError::DestinationFull(Element::ImportExport(0)))?;
        let path = self.shared.cartridge_path(barcode);
        let exported = self.shared.exported_path(barcode);
        if exported.exists() {
            std::fs::rename(&exported, &path)
                .map_err(|e| DeviceError::io(format!("import {}", exported.display()), e))?;
        } else if !path.exists() {
            Cartridge::create(&path, barcode, self.shared.spec)?;
        }
        *slot_mut(&mut s, into)? = Some(barcode.clone());
        self.shared.persist(&s)?;
        Ok(into)
    }

    /// Removes the cartridge from an import/export slot (an exported cartridge leaves the
    /// library; its file goes to `exported/`).
    pub fn take_out(&self, element: Element) -> Result<Barcode, DeviceError> {
        let mut s = self.shared.lock();
        if !matches!(element, Element::ImportExport(_)) {
            return Err(DeviceError::Config(format!(
                "cartridges leave the library through an import/export slot, not {element}"
            )));
        }
        let slot = slot_mut(&mut s, element)?;
        let b = slot.take().ok_or(DeviceError::SourceEmpty(element))?;
        let from = self.shared.cartridge_path(&b);
        let to = self.shared.exported_path(&b);
        if let Err(e) = std::fs::rename(&from, &to) {
            *slot_mut(&mut s, element)? = Some(b);
            return Err(DeviceError::io(format!("export {}", from.display()), e));
        }
        self.shared.persist(&s)?;
        Ok(b)
    }

    /// Sets the write-protect tab of a cartridge that is not in a drive.
    pub fn set_write_protect(&self, barcode: &Barcode, on: bool) -> Result<(), DeviceError> {
        let s = self.shared.lock();
        match Inventory::from(&*s).find(barcode) {
            None => Err(DeviceError::NoSuchCartridge(barcode.to_string())),
            Some(Element::Drive(i)) if s.drives[usize::from(i)].threaded => {
                Err(DeviceError::DriveLoaded(i))
            }
            Some(_) => Cartridge::set_write_protect(&self.shared.cartridge_path(barcode), on),
        }
    }

    /// The file behind a cartridge (tests corrupt it to play a damaged medium).
    pub fn cartridge_path(&self, barcode: &Barcode) -> PathBuf {
        self.shared.cartridge_path(barcode)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

fn slot_mut(s: &mut State, e: Element) -> Result<&mut Option<Barcode>, DeviceError> {
    let slot = match e {
        Element::Slot(i) => s.slots.get_mut(usize::from(i)),
        Element::Drive(i) => s.drives.get_mut(usize::from(i)).map(|d| &mut d.barcode),
        Element::ImportExport(i) => s.import_export.get_mut(usize::from(i)),
    };
    slot.ok_or(DeviceError::NoSuchElement(e))
}

impl From<&State> for Inventory {
    fn from(s: &State) -> Inventory {
        Inventory {
            slots: s.slots.clone(),
            drives: s
                .drives
                .iter()
                .map(|d| DriveElement {
                    barcode: d.barcode.clone(),
                    source: d.source,
                })
                .collect(),
            import_export: s.import_export.clone(),
        }
    }
}

/// The virtual robot.
#[derive(Debug)]
pub struct VirtualChanger {
    shared: Arc<Shared>,
}

impl Changer for VirtualChanger {
    fn name(&self) -> String {
        format!("vtl:{}", self.shared.dir.display())
    }

    fn inventory(&mut self) -> Result<Inventory, DeviceError> {
        Ok(Inventory::from(&*self.shared.lock()))
    }

    fn move_medium(&mut self, from: Element, to: Element) -> Result<(), DeviceError> {
        let mut s = self.shared.lock();
        slot_mut(&mut s, to)?;
        if slot_mut(&mut s, from)?.is_none() {
            return Err(DeviceError::SourceEmpty(from));
        }
        if slot_mut(&mut s, to)?.is_some() {
            return Err(DeviceError::DestinationFull(to));
        }
        if let Element::Drive(i) = from {
            if s.drives[usize::from(i)].threaded {
                return Err(DeviceError::DriveLoaded(i));
            }
        }
        let b = slot_mut(&mut s, from)?.take();
        *slot_mut(&mut s, to)? = b;
        if let Element::Drive(i) = to {
            s.drives[usize::from(i)].source = Some(from);
        }
        if let Element::Drive(i) = from {
            s.drives[usize::from(i)].source = None;
        }
        self.shared.persist(&s)
    }
}

/// A virtual drive: holds the cartridge file open between load and unload.
#[derive(Debug)]
pub struct VirtualDrive {
    index: u16,
    shared: Arc<Shared>,
    cart: Option<Cartridge>,
}

impl VirtualDrive {
    fn cart(&mut self) -> Result<&mut Cartridge, DeviceError> {
        let name = self.name();
        self.cart.as_mut().ok_or(DeviceError::NotLoaded(name))
    }
}

impl TapeDrive for VirtualDrive {
    fn name(&self) -> String {
        format!("vtl:drive{}", self.index)
    }

    fn load(&mut self) -> Result<(), DeviceError> {
        if self.cart.is_some() {
            return Ok(());
        }
        let mut s = self.shared.lock();
        let d = &mut s.drives[usize::from(self.index)];
        let b = d
            .barcode
            .clone()
            .ok_or_else(|| DeviceError::NotLoaded(self.name()))?;
        let cart = Cartridge::open(&self.shared.cartridge_path(&b))?;
        if cart.barcode() != &b {
            return Err(DeviceError::NotACartridge(
                b.to_string(),
                format!("its file carries barcode {}", cart.barcode()),
            ));
        }
        d.threaded = true;
        self.cart = Some(cart);
        Ok(())
    }

    fn unload(&mut self) -> Result<(), DeviceError> {
        if let Some(mut c) = self.cart.take() {
            c.rewind();
        }
        self.shared.lock().drives[usize::from(self.index)].threaded = false;
        Ok(())
    }

    fn status(&mut self) -> Result<DriveStatus, DeviceError> {
        if let Some(c) = &self.cart {
            return Ok(c.status());
        }
        let barcode = self.shared.lock().drives[usize::from(self.index)]
            .barcode
            .clone();
        Ok(DriveStatus::unloaded(barcode, BlockSize::Variable))
    }

    fn set_block_size(&mut self, size: BlockSize) -> Result<(), DeviceError> {
        self.cart()?.set_block_size(size)
    }

    fn write_block(&mut self, data: &[u8]) -> Result<WriteOutcome, DeviceError> {
        self.cart()?.write_block(data)
    }

    fn write_filemarks(&mut self, count: u32) -> Result<WriteOutcome, DeviceError> {
        self.cart()?.write_filemarks(count)
    }

    fn read_block(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, DeviceError> {
        self.cart()?.read_block(buf)
    }

    fn rewind(&mut self) -> Result<(), DeviceError> {
        self.cart()?.rewind();
        Ok(())
    }

    fn space(&mut self, space: Space) -> Result<(), DeviceError> {
        self.cart()?.space(space)
    }

    fn locate(&mut self, logical: u64) -> Result<(), DeviceError> {
        self.cart()?.locate(logical)
    }

    fn position(&mut self) -> Result<TapePosition, DeviceError> {
        Ok(self.cart()?.position())
    }

    fn erase(&mut self) -> Result<(), DeviceError> {
        self.cart()?.erase()
    }
}

#[cfg(test)]
mod tests;
