//! The fault-test backends through a real `ferrited`: an `error` bdev exported to a host fails
//! exactly the injected requests with a media-error status, a `delay` bdev holds completions,
//! a `power-cut` bdev fails everything after the cut; bases in use cannot be deleted; the
//! stacked bdevs survive `save_config` and a restart from it.

use std::time::{Duration, Instant};

use ferrite_host::{ConnectOptions, Controller};
use serde_json::json;

mod common;

use common::{free_port, start_with_config, CtlDaemon};

const NQN: &str = "nqn.2026-01.io.ferrite:faults";
const BS: usize = 512;

fn config(port: u16) -> String {
    format!(
        r#"listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "m0"
kind = "malloc"
size = "4MiB"
block_size = 512
[[bdev]]
name = "slow"
kind = "delay"
base = "m0"
latency = {{ avg_read_us = 0, p99_read_us = 0, avg_write_us = 0, p99_write_us = 0 }}
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
"#
    )
}

fn connect(d: &CtlDaemon) -> Controller {
    let mut opts = ConnectOptions::new(d.addr, NQN);
    opts.io_queues = 1;
    Controller::connect(opts).unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_text()))
}

#[test]
fn error_delay_and_power_cut_bdevs_through_rpc() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let d = start_with_config(dir.path(), &config(port), port, &[]);

    // error bdev over m0, exported as NSID 1.
    let name = d
        .call("bdev_error_create", json!({"base_name": "m0"}))
        .expect("error bdev");
    assert_eq!(name, json!("EE_m0"));
    let e = d
        .call(
            "bdev_error_create",
            json!({"base_name": "nope", "name": "x"}),
        )
        .expect_err("no base");
    assert!(e.message.contains("nope"), "{e:?}");
    d.ok(&["ns", "add", NQN, "EE_m0", "--nsid", "1"]);
    let mut c = connect(&d);
    let data = vec![0x5A; 4 * BS];
    c.write(1, 1, 8, &data, false).expect("plain write");
    d.call(
        "bdev_error_inject_error",
        json!({"name": "EE_m0", "io_type": "write", "error_type": "failure", "num": 1}),
    )
    .expect("inject");
    let err = c
        .write(1, 1, 8, &vec![0xA5; 4 * BS], false)
        .expect_err("the injected write fails");
    assert!(
        err.status().is_some(),
        "an NVMe status, not a lost connection: {err}"
    );
    c.write(1, 1, 16, &data, false)
        .expect("only one write failed");
    let mut buf = vec![0u8; 4 * BS];
    c.read(1, 1, 8, 4, &mut buf).expect("read");
    assert_eq!(buf, data, "the failed write never reached the base");
    for (params, needle) in [
        (
            json!({"name": "EE_m0", "io_type": "fetch", "error_type": "failure"}),
            "io_type",
        ),
        (
            json!({"name": "EE_m0", "io_type": "all", "error_type": "boom"}),
            "error_type",
        ),
        (
            json!({"name": "slow", "io_type": "all", "error_type": "failure"}),
            "not an error bdev",
        ),
        (
            json!({"name": "m0", "io_type": "all", "error_type": "failure"}),
            "no error, delay",
        ),
    ] {
        let e = d
            .call("bdev_error_inject_error", params)
            .expect_err("refused");
        assert!(e.message.contains(needle), "{needle}: {e:?}");
    }
    d.call(
        "bdev_error_inject_error",
        json!({"name": "EE_m0", "io_type": "all", "error_type": "clear"}),
    )
    .expect("clear");

    // delay: a read takes at least the configured latency once it is raised.
    d.ok(&["ns", "add", NQN, "slow", "--nsid", "2"]);
    d.call(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "slow", "latency_type": "avg_read", "latency_us": 300000}),
    )
    .expect("update latency");
    let t = Instant::now();
    c.read(1, 2, 8, 4, &mut buf).expect("slow read");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(buf, data, "the delay bdev shows the base");
    let e = d
        .call(
            "bdev_delay_create",
            json!({"base_bdev_name": "m0", "name": "d2", "avg_read_latency": 10, "p99_read_latency": 5}),
        )
        .expect_err("p99 below average");
    assert!(e.message.contains("p99"), "{e:?}");
    let e = d
        .call(
            "bdev_delay_update_latency",
            json!({"delay_bdev_name": "slow", "latency_type": "median", "latency_us": 1}),
        )
        .expect_err("unknown type");
    assert!(e.message.contains("median"), "{e:?}");

    // power-cut: everything fails after the cut.
    d.call(
        "bdev_power_cut_create",
        json!({"base_bdev_name": "m0", "name": "pc"}),
    )
    .expect("power-cut bdev");
    d.ok(&["ns", "add", NQN, "pc", "--nsid", "3"]);
    drop(c);
    let mut c = connect(&d);
    c.write(1, 3, 64, &data, false)
        .expect("write before the cut");
    let r = d
        .call("bdev_power_cut", json!({"name": "pc"}))
        .expect("cut");
    assert_eq!(r["volatile_blocks"], json!(4), "{r}");
    let err = c.write(1, 3, 64, &data, false).expect_err("no power");
    assert!(err.status().is_some(), "{err}");
    let list = d.json(&["bdev", "list"]);
    let kinds: Vec<(String, String)> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_owned(),
                b["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (n, k) in [("EE_m0", "error"), ("slow", "delay"), ("pc", "power-cut")] {
        assert!(kinds.contains(&(n.into(), k.into())), "{kinds:?}");
    }
    d.fails(&["bdev", "delete", "m0"], &["base of"]);
    drop(c);
    d.ok(&["ns", "remove", NQN, "3"]);
    d.ok(&["bdev", "delete", "pc"]);

    // save_config lists bases first and reproduces the stacked bdevs with their latencies.
    let saved = d.ok(&["save-config"]);
    assert!(saved.contains("avg_read_us = 300000"), "{saved}");
    assert!(
        saved.find("name = \"m0\"") < saved.find("name = \"EE_m0\""),
        "base first: {saved}"
    );
    d.stop();
    let dir2 = tempfile::tempdir().expect("tmp");
    let d2 = start_with_config(dir2.path(), &saved, port, &[]);
    assert_eq!(d2.ok(&["save-config"]), saved);
    d2.stop();
}
