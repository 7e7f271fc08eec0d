//! The gateway's methods in-process: documentation, refusals with their codes.

use std::sync::Arc;

use ferrite_rpc::protocol;
use ferrite_tape_device::vtl::VirtualLibraryConfig;
use ferrite_tape_device::LibraryConfig;
use serde_json::json;

use crate::gateway::{Config, Gateway, METHODS};
use crate::server::handle_line;

fn gateway(dir: &tempfile::TempDir) -> Arc<Gateway> {
    let cfg = Config {
        socket: dir.path().join("s"),
        catalog: dir.path().join("catalog.db"),
        chunk_bytes: 1 << 20,
        window: 8,
        connections: 2,
        drive: 0,
        retention_days: 30,
        appliance_socket: None,
        auto_recycle: true,
        library: LibraryConfig::Virtual(VirtualLibraryConfig {
            dir: dir.path().join("vtl"),
            slots: 3,
            drives: 1,
            import_export: 1,
            cartridge_capacity: 8 << 20,
            early_warning: 1 << 20,
        }),
    };
    Arc::new(Gateway::open(cfg).expect("gateway"))
}

#[test]
fn every_gateway_method_is_documented_in_rpc_md() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rpc.md");
    let text = std::fs::read_to_string(path).expect("docs/rpc.md");
    let documented: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#### `"))
        .filter_map(|l| l.strip_suffix('`'))
        .filter(|m| m.starts_with("tape_"))
        .collect();
    for m in METHODS {
        assert!(documented.contains(m), "{m} has no section in docs/rpc.md");
    }
    for d in documented {
        assert!(
            METHODS.contains(&d),
            "docs/rpc.md documents no such gateway method {d}"
        );
    }
}

#[test]
fn refusals_carry_the_right_codes_and_name_the_problem() {
    let d = tempfile::tempdir().expect("tmp");
    let gw = gateway(&d);
    let code = |m: &str, p: serde_json::Value| gw.call(m, p).expect_err(m).code;
    assert_eq!(
        code("tape_frobnicate", json!({})),
        protocol::METHOD_NOT_FOUND
    );
    let e = gw
        .call(
            "tape_job_start",
            json!({"address": "127.0.0.1:4420", "subnqn": "x"}),
        )
        .expect_err("nsid");
    assert_eq!(e.code, protocol::INVALID_PARAMS);
    assert!(e.message.contains("nsid"), "{}", e.message);
    let e = gw
        .call(
            "tape_job_start",
            json!({"kind": "incremental", "address": "127.0.0.1:4420", "subnqn": "x", "nsid": 1}),
        )
        .expect_err("base");
    assert!(e.message.contains("base_job"), "{}", e.message);
    let e = gw
        .call(
            "tape_job_start",
            json!({"kind": "incremental", "base_job": 77, "address": "127.0.0.1:4420",
                   "subnqn": "x", "nsid": 1}),
        )
        .expect_err("no such base");
    assert_eq!(e.code, protocol::NOT_FOUND, "{}", e.message);
    let e = gw
        .call(
            "tape_job_start",
            json!({"kind": "journal", "address": "127.0.0.1:4420", "subnqn": "x", "nsid": 1}),
        )
        .expect_err("kind");
    assert!(e.message.contains("journal"), "{}", e.message);
    assert_eq!(
        code("tape_cartridge_import", json!({"barcode": "bad code"})),
        protocol::INVALID_PARAMS
    );
    assert_eq!(
        code("tape_cartridge_eject", json!({"barcode": "NOPE01"})),
        protocol::NOT_FOUND
    );
    assert_eq!(
        code("tape_job_status", json!({"job": 42})),
        protocol::NOT_FOUND
    );
    assert_eq!(
        code(
            "tape_restore",
            json!({"job": 42, "address": "127.0.0.1:1", "subnqn": "x", "nsid": 1})
        ),
        protocol::NOT_FOUND
    );
    assert_eq!(
        code("tape_job_cancel", json!({"job": 42})),
        protocol::NOT_FOUND
    );
    assert_eq!(
        code("tape_job_status", json!({"jobb": 1})),
        protocol::INVALID_PARAMS
    );

    let r = handle_line(&gw, b"{not json").expect("answer");
    assert_eq!(r.error.expect("error").code, protocol::PARSE_ERROR);
    let r = handle_line(
        &gw,
        br#"{"jsonrpc":"2.0","id":3,"method":"tape_cartridge_list"}"#,
    )
    .expect("answer");
    assert_eq!(r.result, Some(json!([])));
}

#[test]
fn import_label_list_and_eject_a_cartridge() {
    let d = tempfile::tempdir().expect("tmp");
    let gw = gateway(&d);
    let r = gw
        .call("tape_cartridge_import", json!({"barcode": "L00001"}))
        .expect("import");
    assert_eq!(r["element"], json!({"slot": 0}));
    let r = gw
        .call("tape_cartridge_label", json!({"barcode": "L00001"}))
        .expect("label blank");
    assert_eq!(r["barcode"], "L00001");
    let e = gw
        .call("tape_cartridge_label", json!({"barcode": "L00001"}))
        .expect_err("labelled");
    assert_eq!(e.code, protocol::INVALID_PARAMS);
    assert!(e.message.contains("force"), "{}", e.message);
    gw.call(
        "tape_cartridge_label",
        json!({"barcode": "L00001", "force": true}),
    )
    .expect("relabel");
    let list = gw.call("tape_cartridge_list", json!({})).expect("list");
    assert_eq!(list[0]["barcode"], "L00001");
    assert_eq!(list[0]["element"], json!({"slot": 0}));
    let st = gw.call("tape_library_status", json!({})).expect("status");
    assert_eq!(st["inventory"]["slots"][0], "L00001");
    let r = gw
        .call("tape_cartridge_eject", json!({"barcode": "L00001"}))
        .expect("eject");
    assert_eq!(r["exported"], true);
    let st = gw.call("tape_library_status", json!({})).expect("status");
    assert_eq!(st["inventory"]["slots"][0], json!(null));
    let scan = gw
        .call("tape_scan", json!({}))
        .expect("scan of an empty library");
    assert_eq!(scan, json!([]));
}

#[test]
fn recycling_respects_retention_and_expires_the_jobs() {
    use crate::catalog::{Catalog, JobRow, JobState, PartRow};
    let d = tempfile::tempdir().expect("tmp");
    let gw = gateway(&d);
    for b in ["R00001", "R00002"] {
        gw.call("tape_cartridge_import", json!({"barcode": b}))
            .expect("import");
        gw.call("tape_cartridge_label", json!({"barcode": b}))
            .expect("label");
    }
    let cat = Catalog::open(&d.path().join("catalog.db")).expect("catalog");
    let now = crate::tapeio::now_secs();
    for (id, barcode, finished) in [
        (1u64, "R00001", now - 40 * 86_400),
        (2, "R00002", now - 86_400),
    ] {
        cat.put_job(&JobRow {
            id,
            kind: "backup".into(),
            source: json!({}),
            state: JobState::Done,
            total_blocks: 1,
            source_bytes: 4096,
            bytes_written: 4096,
            started_at: finished,
            finished_at: Some(finished),
            error: None,
            base_job: None,
        })
        .expect("job");
        cat.put_part(&PartRow {
            job: id,
            part: 1,
            barcode: barcode.into(),
            file_number: 1,
            first_block: 0,
            blocks: 1,
            bytes: 4096,
            continued: false,
        })
        .expect("part");
    }
    let r = gw
        .call("tape_cartridge_recycle", json!({"barcode": "R00001"}))
        .expect("past retention");
    assert_eq!(r["expired_jobs"], json!([1]));
    assert_eq!(cat.job(1).expect("job 1").state, JobState::Expired);
    let e = gw
        .call("tape_cartridge_recycle", json!({"barcode": "R00002"}))
        .expect_err("within retention");
    assert_eq!(e.code, protocol::INVALID_PARAMS);
    assert!(e.message.contains("job 2"), "{}", e.message);
    assert_eq!(
        cat.job(2).expect("job 2").state,
        JobState::Done,
        "nothing erased"
    );
    gw.call(
        "tape_cartridge_recycle",
        json!({"barcode": "R00002", "force": true}),
    )
    .expect("forced");
    assert_eq!(cat.job(2).expect("job 2").state, JobState::Expired);
    assert!(cat.parts(2).expect("parts").is_empty());
    let e = gw
        .call("tape_cartridge_recycle", json!({"barcode": "NOPE99"}))
        .expect_err("unknown");
    assert_eq!(e.code, protocol::NOT_FOUND);
}
