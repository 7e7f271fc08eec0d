//! The Prometheus endpoint of a real `ferrited --metrics`: scraped with curl while a host is
//! connected and after I/O, checked with `promtool check metrics` (Debian's prometheus package,
//! installed by tests/install-deps.sh), wrong methods and paths answered with their status, and
//! no endpoint without the flag.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::{free_port, ram_config_for, start_with_config, NQN};
use ferrite_host::{ConnectOptions, Controller};

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs (tests/install-deps.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The value of the first sample whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix}:\n{text}"))
}

#[test]
fn curl_scrapes_and_promtool_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let mut config = ram_config_for(NQN, port, "64MiB", &[]);
    config.push_str(
        "[[qos]]\nbdev = \"ram0\"\nrw_ios_per_sec = 1000000\nrw_mbytes_per_sec = 100000\n",
    );
    let d = start_with_config(dir.path(), &config, port, &["--metrics", &maddr]);
    let url = format!("http://{maddr}/metrics");

    let mut opts = ConnectOptions::new(d.addr, NQN);
    opts.io_queues = 1;
    let mut c = Controller::connect(opts).expect("connect");
    let data = vec![0x5au8; 8 * 512];
    for lba in 0..50u64 {
        c.write(1, 1, lba * 8, &data, false).expect("write");
    }
    let mut back = vec![0u8; 8 * 512];
    for lba in 0..30u64 {
        c.read(1, 1, lba * 8, 8, &mut back).expect("read");
    }

    let (ok, text) = curl(&["-D", "-", &url]);
    assert!(ok, "curl failed");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let ns = format!("{{nqn=\"{NQN}\",nsid=\"1\",bdev=\"ram0\"}}");
    assert_eq!(
        value(body, &format!("ferrite_namespace_writes_total{ns}")),
        50.0
    );
    assert_eq!(
        value(body, &format!("ferrite_namespace_reads_total{ns}")),
        30.0
    );
    assert_eq!(
        value(body, &format!("ferrite_namespace_written_bytes_total{ns}")),
        50.0 * 4096.0
    );
    let count = value(body, "ferrite_namespace_latency_seconds_count{");
    assert_eq!(count, 80.0);
    let inf = value(body, "ferrite_namespace_latency_seconds_bucket{");
    assert!(inf <= count);
    assert!(value(body, "ferrite_reactor_busy_seconds_total{reactor=\"0\"") > 0.0);
    assert!(body.contains("ferrite_reactor_idle_seconds_total{reactor=\"1\""));
    assert_eq!(
        value(
            body,
            &format!("ferrite_listener_subsystems{{trtype=\"tcp\",address=\"127.0.0.1:{port}\"}}")
        ),
        1.0
    );
    assert_eq!(value(body, "ferrite_controller_writes_total{"), 50.0);
    assert_eq!(value(body, "ferrite_controller_io_queues{"), 1.0);
    assert_eq!(
        value(
            body,
            "ferrite_qos_limit_ios_per_second{scope=\"bdev\",name=\"ram0\",direction=\"rw\"}"
        ),
        1_000_000.0
    );

    // A pool shows its space.
    let dev = dir.path().join("member.img");
    std::fs::File::create(&dev)
        .and_then(|f| f.set_len(64 << 20))
        .expect("member file");
    d.ok(&["bdev", "file-create", "m0", &dev.to_string_lossy()]);
    d.ok(&["pool", "create", "tank", "m0"]);
    let (_, body) = curl(&[&url]);
    assert!(value(body.as_str(), "ferrite_pool_capacity_bytes{pool=\"tank\"}") > 0.0);
    assert!(body.contains("ferrite_pool_shared_bytes{pool=\"tank\"}"));

    // promtool is the format's judge.
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package, tests/install-deps.sh)");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = p.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every series the Grafana dashboard queries exists.
    let dash = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    ))
    .expect("docs/grafana-dashboard.json");
    let mut used: Vec<&str> = dash
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("ferrite_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() > 10, "{used:?}");
    for name in used {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which the endpoint does not serve"
        );
    }

    // Other methods and paths.
    let (_, code) = curl(&["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &url]);
    assert_eq!(code, "405");
    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{maddr}/nope"),
    ]);
    assert_eq!(code, "404");
    // A client that sends garbage and one that sends nothing do not stop the endpoint.
    let mut s = TcpStream::connect(&maddr).expect("connect");
    s.write_all(b"\x00\x01garbage\r\n\r\n").expect("send");
    drop(s);
    drop(TcpStream::connect(&maddr).expect("connect"));
    let (ok, _) = curl(&[&url]);
    assert!(ok, "the endpoint died after bad clients");
    c.disconnect();
    d.stop();
}

#[test]
fn no_endpoint_without_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = start_with_config(
        dir.path(),
        &ram_config_for(NQN, port, "8MiB", &[]),
        port,
        &[],
    );
    assert!(
        !d.log_text().contains("Prometheus metrics on"),
        "{}",
        d.log_text()
    );
    d.stop();
}
