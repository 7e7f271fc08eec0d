//! ferrite-perf against a real target: every workload, verify catching a
//! corrupted block, JSON/SVG output, limit, compare, and bad input.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::*;

#[test]
fn every_workload_runs_clean_with_verify() {
    let t = Target::ram();
    let tid = t.tid();
    for (w, extra) in [
        ("randread", vec![]),
        ("randwrite", vec![]),
        ("read", vec!["-o", "128k", "-q", "4"]),
        ("write", vec!["-o", "64k", "-q", "8"]),
        ("randrw", vec!["--rwmixread", "70", "--qpairs", "2"]),
    ] {
        let mut args = vec![
            "-r",
            &tid,
            "-w",
            w,
            "-t",
            "1",
            "--warmup",
            "0.2",
            "--verify",
            "--timeout",
            "5",
        ];
        args.extend(extra);
        let (code, out, err) = perf(&args);
        assert_eq!(code, 0, "{w}: {out}\n{err}");
        assert!(out.contains("IOPS") && out.contains("p99.99"), "{out}");
        let ops: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("ops "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no ops line: {out}"));
        assert!(ops > 0, "{w}: {out}");
        if w != "randwrite" && w != "write" {
            assert!(
                !out.contains("verified blocks 0\n"),
                "{w}: reads were not checked: {out}"
            );
        }
    }
}

#[test]
fn json_svg_and_two_targets() {
    let a = Target::ram();
    let b = Target::ram();
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("r.json");
    let svg = dir.path().join("svg");
    let (code, out, err) = perf(&[
        "-r",
        &a.tid(),
        "-r",
        &b.tid(),
        "-w",
        "randrw",
        "-q",
        "8",
        "-t",
        "1.5",
        "--interval",
        "0.5",
        "--rate",
        "4000",
        "--cores",
        "0",
        "--json",
        json.to_str().expect("utf8"),
        "--svg",
        svg.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("total"), "two targets get a total row: {out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid json");
    assert_eq!(v["targets"].as_array().map(Vec::len), Some(2));
    let iops = v["total"]["iops"].as_f64().expect("iops");
    // The rate cap holds (with slack for timing), and the run did something.
    assert!(
        iops > 1000.0 && iops < 4000.0 * 1.2,
        "iops {iops} with --rate 4000"
    );
    assert!(v["total"]["latency_us"]["p99_99"].as_f64().expect("p99.99") > 0.0);
    assert!(
        v["total"]["iops_over_time"]
            .as_array()
            .expect("series")
            .len()
            >= 2
    );
    assert!(v["error"].is_null());
    for f in ["latency.svg", "iops.svg"] {
        let text = std::fs::read_to_string(svg.join(f)).expect("svg written");
        assert!(text.starts_with("<svg") && text.contains("</svg>"), "{f}");
    }
}

#[test]
fn several_controllers_with_random_sizes_verify_clean() {
    let t = Target::ram();
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("r.json");
    let tid = t.tid();
    let mut args = vec!["-r", &tid];
    args.extend(
        "--controllers 3 --qpairs 2 -q 8 -o 4k..32k -w randrw -t 1 --verify --timeout 5 --json"
            .split(' '),
    );
    args.push(json.to_str().expect("utf8"));
    let (code, out, err) = perf(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("4 KiB..32 KiB") && out.contains("x 3 controllers"),
        "{out}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let total = &doc["total"];
    let ops = total["ops"].as_u64().expect("ops");
    let reads = total["reads"].as_u64().expect("reads");
    let verified = total["verified_blocks"].as_u64().expect("verified");
    assert!(ops > reads && reads > 0, "{doc}");
    // Random sizes: more blocks were verified than one 4 KiB I/O per read would give.
    assert!(verified > reads * 8, "{doc}");
    assert_eq!(
        (doc["io_size_min"].as_u64(), doc["io_size"].as_u64()),
        (Some(4096), Some(32768))
    );
    assert_eq!(doc["controllers"].as_u64(), Some(3));
}

#[test]
fn verify_reports_a_corrupted_block_with_its_lba() {
    let dir = tempfile::tempdir().expect("tmp");
    let img = dir.path().join("disk.img");
    let text = config_text(free_port(), &file_bdev(&img, "1MiB"), &[]);
    let mut t = Target::start(text.clone());
    let tid = t.tid();
    // Sequential writes cover the whole 256-block namespace several times.
    let (code, out, err) = perf(&["-r", &tid, "-w", "write", "-q", "4", "-t", "1", "--verify"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // A clean read pass finds every block right.
    let (code, out, err) = perf(&["-r", &tid, "-w", "read", "-q", "4", "-t", "0.5", "--verify"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // Corrupt the body of block 177 with the target stopped (no cache in the way).
    t.stop();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .expect("open image");
    let mut stamp = [0u8; 16];
    f.read_exact_at(&mut stamp, 177 * 4096)
        .expect("read the stamp");
    assert_eq!(&stamp[..8], b"FERRLOAD", "block 177 carries a stamp");
    assert_eq!(
        u64::from_le_bytes(stamp[8..].try_into().expect("8 bytes")),
        177
    );
    f.write_all_at(b"garbage!", 177 * 4096 + 1000)
        .expect("corrupt");
    f.sync_all().expect("sync");
    drop(f);
    let _t = Target::start(text);
    let (code, out, err) = perf(&["-r", &tid, "-w", "read", "-q", "4", "-t", "2", "--verify"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("verify mismatch at LBA 177: corrupt block body"),
        "{err}"
    );
    assert!(
        out.contains("PARTIAL") && out.contains("ops "),
        "partial results printed: {out}"
    );
}

#[test]
fn limit_and_compare_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("limit.json");
    let (code, out, err) = perf(&[
        "limit",
        "-w",
        "randread",
        "-q",
        "4",
        "-t",
        "0.5",
        "--json",
        json.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("limit: 72 B requests / 4144 B responses"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid");
    assert!(v["summary"]["iops"].as_f64().expect("iops") > 0.0);

    let a = Target::ram();
    let b = Target::ram();
    let (code, out, err) = perf(&[
        "compare",
        "-r",
        &a.tid(),
        "-r",
        &b.tid(),
        "--rounds",
        "3",
        "-t",
        "0.3",
        "-q",
        "4",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.matches("round ").count(), 3, "{out}");
    assert!(out.contains("median A/B over 3 round(s)"), "{out}");
    let (code, _, err) = perf(&["compare", "-r", &a.tid(), "--rounds", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exactly two"), "{err}");
}

#[test]
fn unreachable_target_fails_clearly() {
    let port = free_port().to_string();
    let tid = format!("trtype:tcp traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN}");
    let (code, _, err) = perf(&["-r", &tid, "-t", "1", "--timeout", "2"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("connecting to") && err.contains(&port),
        "{err}"
    );
}

#[test]
fn wrong_nqn_and_refused_host_fail_clearly() {
    let t = Target::ram();
    let tid = format!(
        "trtype:tcp traddr:127.0.0.1 trsvcid:{} subnqn:nqn.2026-01.io.ferrite:nope",
        t.addr.port()
    );
    let (code, _, err) = perf(&["-r", &tid, "-t", "1", "--timeout", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Connect refused"), "{err}");

    let port = free_port();
    let only = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
    let t = Target::start(config_text(port, ram_bdev(), &[only]));
    let (code, _, err) = perf(&["-r", &t.tid(), "-t", "1", "--timeout", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Connect refused") && err.to_lowercase().contains("host"),
        "{err}"
    );
    // The allowed host gets in.
    let tid = format!("{} hostnqn:{only}", t.tid());
    let (code, out, err) = perf(&["-r", &tid, "-t", "0.3"]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn target_disappearing_mid_run_keeps_partial_results() {
    let mut t = Target::ram();
    let tid = t.tid();
    let child = std::process::Command::new(perf_bin())
        .args([
            "-r",
            &tid,
            "-q",
            "8",
            "-t",
            "20",
            "--timeout",
            "3",
            "--no-progress",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ferrite-perf");
    std::thread::sleep(Duration::from_millis(1500));
    t.stop();
    let out = child.wait_with_output().expect("ferrite-perf ends");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("ferrite-perf: error:"), "{stderr}");
    assert!(stdout.contains("PARTIAL"), "{stdout}");
    let ops: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ops "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("ops line");
    assert!(ops > 0, "{stdout}");
}

#[test]
fn bad_command_lines_exit_2() {
    for args in [
        vec!["-t", "1"],
        vec!["-r", "traddr:127.0.0.1", "-t", "1"],
        vec!["-r", "traddr:127.0.0.1 subnqn:n", "-w", "randomread"],
        vec![
            "-r",
            "traddr:127.0.0.1 subnqn:n",
            "-w",
            "randrw",
            "--rwmixread",
            "120",
        ],
        vec!["-r", "traddr:127.0.0.1 subnqn:n", "-o", "zero"],
        vec!["-r", "traddr:127.0.0.1 subnqn:n", "-o", "64k..4k"],
        vec!["-r", "traddr:127.0.0.1 subnqn:n", "--controllers", "0"],
    ] {
        let (code, _, err) = perf(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("ferrite-perf:"), "{err}");
    }
}

#[test]
fn sigint_ends_the_run_and_reports_it() {
    let t = Target::ram();
    let child = std::process::Command::new(perf_bin())
        .args(["-r", &t.tid(), "-q", "4", "-t", "30", "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ferrite-perf");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("ferrite-perf ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let measured: f64 = stdout
        .lines()
        .next()
        .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" s measured")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no measured time: {stdout}"));
    assert!(measured > 0.5 && measured < 10.0, "{stdout}");
}
