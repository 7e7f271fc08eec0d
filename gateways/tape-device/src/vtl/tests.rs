use super::*;
use crate::{open_library, LibraryConfig};

fn config(dir: &Path) -> VirtualLibraryConfig {
    VirtualLibraryConfig {
        dir: dir.to_path_buf(),
        slots: 4,
        drives: 2,
        import_export: 1,
        cartridge_capacity: 1 << 20,
        early_warning: 64 * 1024,
    }
}

fn bc(s: &str) -> Barcode {
    Barcode::new(s).expect("barcode")
}

#[test]
fn import_move_load_write_unload_and_export() {
    let d = tempfile::tempdir().expect("tmp");
    let vtl = VirtualLibrary::open(&config(d.path())).expect("open");
    assert_eq!(
        vtl.insert(&bc("F00001L8")).expect("insert"),
        Element::ImportExport(0)
    );
    assert!(matches!(
        vtl.insert(&bc("F00001L8")),
        Err(DeviceError::DuplicateBarcode(_))
    ));
    let mut lib = vtl.clone().into_library().expect("library");
    lib.changer
        .move_medium(Element::ImportExport(0), Element::Slot(2))
        .expect("to slot");
    let inv = lib.changer.inventory().expect("inv");
    assert_eq!(inv.find(&bc("F00001L8")), Some(Element::Slot(2)));
    assert_eq!(inv.free_slot(), Some(Element::Slot(0)));

    assert!(matches!(
        lib.drives[0].write_block(b"x"),
        Err(DeviceError::NotLoaded(_))
    ));
    lib.changer
        .move_medium(Element::Slot(2), Element::Drive(0))
        .expect("to drive");
    let inv = lib.changer.inventory().expect("inv");
    assert_eq!(inv.drives[0].source, Some(Element::Slot(2)));
    lib.drives[0].load().expect("load");
    assert_eq!(
        lib.drives[0].status().expect("st").barcode,
        Some(bc("F00001L8"))
    );
    lib.drives[0].write_block(b"hello tape").expect("write");
    lib.drives[0].write_filemarks(1).expect("fm");
    assert!(matches!(
        lib.changer.move_medium(Element::Drive(0), Element::Slot(2)),
        Err(DeviceError::DriveLoaded(0))
    ));
    lib.drives[0].unload().expect("unload");
    lib.changer
        .move_medium(Element::Drive(0), Element::ImportExport(0))
        .expect("to mail slot");
    assert_eq!(
        vtl.take_out(Element::ImportExport(0)).expect("take out"),
        bc("F00001L8")
    );
    assert_eq!(
        lib.changer.inventory().expect("inv").find(&bc("F00001L8")),
        None
    );

    // Re-import: the data comes back with it.
    vtl.insert(&bc("F00001L8")).expect("re-insert");
    lib.changer
        .move_medium(Element::ImportExport(0), Element::Drive(1))
        .expect("to drive 1");
    lib.drives[1].load().expect("load");
    let mut buf = [0u8; 64];
    assert_eq!(
        lib.drives[1].read_block(&mut buf).expect("read"),
        ReadOutcome::Block(10)
    );
    assert_eq!(&buf[..10], b"hello tape");
}

#[test]
fn changer_refuses_empty_sources_full_destinations_and_unknown_elements() {
    let d = tempfile::tempdir().expect("tmp");
    let vtl = VirtualLibrary::open(&config(d.path())).expect("open");
    vtl.insert(&bc("A1")).expect("insert");
    let mut lib = vtl.clone().into_library().expect("library");
    lib.changer
        .move_medium(Element::ImportExport(0), Element::Slot(0))
        .expect("move");
    vtl.insert(&bc("A2")).expect("insert");
    let c = &mut lib.changer;
    assert!(matches!(
        c.move_medium(Element::Slot(1), Element::Slot(3)),
        Err(DeviceError::SourceEmpty(_))
    ));
    assert!(matches!(
        c.move_medium(Element::ImportExport(0), Element::Slot(0)),
        Err(DeviceError::DestinationFull(_))
    ));
    assert!(matches!(
        c.move_medium(Element::Slot(0), Element::Slot(9)),
        Err(DeviceError::NoSuchElement(_))
    ));
    assert!(matches!(
        c.move_medium(Element::Drive(5), Element::Slot(1)),
        Err(DeviceError::NoSuchElement(_))
    ));
    assert!(matches!(
        vtl.take_out(Element::Slot(0)),
        Err(DeviceError::Config(_))
    ));
    assert!(matches!(
        Barcode::new("has space"),
        Err(DeviceError::InvalidBarcode(_))
    ));
    assert!(Barcode::new(&"x".repeat(33)).is_err());
    assert!(Barcode::new("../etc").is_err());
}

#[test]
fn state_survives_reopen_and_a_drive_is_unthreaded_after_restart() {
    let d = tempfile::tempdir().expect("tmp");
    let cfg = LibraryConfig::Virtual(config(d.path()));
    {
        let vtl = VirtualLibrary::open(&config(d.path())).expect("open");
        vtl.insert(&bc("R1")).expect("insert");
        let mut lib = vtl.into_library().expect("lib");
        lib.changer
            .move_medium(Element::ImportExport(0), Element::Drive(1))
            .expect("move");
        lib.drives[1].load().expect("load");
        lib.drives[1].write_block(b"persist").expect("write");
        lib.drives[1].write_filemarks(1).expect("fm");
    }
    let mut lib = open_library(&cfg).expect("reopen");
    let inv = lib.changer.inventory().expect("inv");
    assert_eq!(inv.drives[1].barcode, Some(bc("R1")));
    assert_eq!(inv.drives[1].source, Some(Element::ImportExport(0)));
    // After a restart the cartridge can be moved without an unload (the process that threaded
    // it is gone), or loaded again.
    lib.drives[1].load().expect("load again");
    let mut buf = [0u8; 16];
    assert_eq!(
        lib.drives[1].read_block(&mut buf).expect("read"),
        ReadOutcome::Block(7)
    );
    lib.drives[1].unload().expect("unload");
    lib.changer
        .move_medium(Element::Drive(1), Element::Slot(0))
        .expect("home");
}

#[test]
fn shrinking_below_occupied_elements_is_refused_and_growing_works() {
    let d = tempfile::tempdir().expect("tmp");
    let vtl = VirtualLibrary::open(&config(d.path())).expect("open");
    vtl.insert(&bc("S1")).expect("insert");
    let mut lib = vtl.into_library().expect("lib");
    lib.changer
        .move_medium(Element::ImportExport(0), Element::Slot(3))
        .expect("move");
    let mut small = config(d.path());
    small.slots = 2;
    assert!(matches!(
        VirtualLibrary::open(&small),
        Err(DeviceError::Config(_))
    ));
    let mut big = config(d.path());
    big.slots = 8;
    let mut lib = VirtualLibrary::open(&big)
        .expect("grow")
        .into_library()
        .expect("lib");
    assert_eq!(lib.changer.inventory().expect("inv").slots.len(), 8);
}

#[test]
fn write_protect_through_the_library() {
    let d = tempfile::tempdir().expect("tmp");
    let vtl = VirtualLibrary::open(&config(d.path())).expect("open");
    vtl.insert(&bc("W1")).expect("insert");
    vtl.set_write_protect(&bc("W1"), true).expect("protect");
    assert!(matches!(
        vtl.set_write_protect(&bc("NOPE"), true),
        Err(DeviceError::NoSuchCartridge(_))
    ));
    let mut lib = vtl.into_library().expect("lib");
    lib.changer
        .move_medium(Element::ImportExport(0), Element::Drive(0))
        .expect("move");
    lib.drives[0].load().expect("load");
    assert!(lib.drives[0].status().expect("st").write_protected);
    let e = lib.drives[0].write_block(b"x").expect_err("protected");
    assert!(
        e.to_string().contains("W1") && e.to_string().contains("write protected"),
        "{e}"
    );
}

#[test]
fn damaged_state_file_and_bad_config_are_refused() {
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join("library.json"), b"{not json").expect("write");
    let e = VirtualLibrary::open(&config(d.path())).expect_err("damaged");
    assert!(e.to_string().contains("damaged"), "{e}");
    let mut c = config(d.path());
    c.drives = 0;
    assert!(VirtualLibrary::open(&c).is_err());
    let mut c = config(tempfile::tempdir().expect("tmp").path());
    c.early_warning = c.cartridge_capacity;
    assert!(VirtualLibrary::open(&c).is_err());
}

#[test]
fn library_config_parses_both_kinds() {
    let v: LibraryConfig = serde_json::from_str(
        r#"{"kind":"virtual","dir":"/var/lib/ferrite/vtl","slots":8,"drives":2,"cartridge_capacity":1073741824}"#,
    )
    .expect("virtual");
    assert!(
        matches!(v, LibraryConfig::Virtual(ref c) if c.early_warning == 4 << 20 && c.import_export == 0)
    );
    let s: LibraryConfig =
        serde_json::from_str(r#"{"kind":"scsi","changer":"/dev/sg3","drives":["/dev/nst0"]}"#)
            .expect("scsi");
    assert!(matches!(s, LibraryConfig::Scsi(_)));
    assert!(serde_json::from_str::<LibraryConfig>(r#"{"kind":"floppy"}"#).is_err());
}
