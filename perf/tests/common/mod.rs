//! An in-process `ferrited` (the daemon library) on a free loopback port,
//! and a runner for the `ferrite-perf` binary.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferrite_daemon::{Config, Daemon};

pub const NQN: &str = "nqn.2026-01.io.ferrite:perf";
/// The host NQN the host library uses by default.
pub const DEFAULT_HOSTNQN: &str =
    "nqn.2014-08.org.nvmexpress:uuid:fe2217e0-5a4c-4d1b-9a61-3c0d7e4b0001";

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Config text: one namespace under NQN, backed by `bdev` (a TOML bdev table body).
pub fn config_text(port: u16, bdev: &str, hosts: &[&str]) -> String {
    let allow_any = hosts.is_empty();
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!(
        r#"cores = "0"
listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "d0"
{bdev}
[[subsystem]]
nqn = "{NQN}"
allow_any_host = {allow_any}
hosts = [{}]
namespaces = [{{ nsid = 1, bdev = "d0" }}]
"#,
        hosts.join(", ")
    )
}

pub fn ram_bdev() -> &'static str {
    "kind = \"malloc\"\nsize = \"32MiB\"\nblock_size = 512"
}

pub fn file_bdev(path: &Path, size: &str) -> String {
    format!(
        "kind = \"file\"\npath = {:?}\nsize = {size:?}\nblock_size = 4096",
        path
    )
}

pub struct Target {
    pub daemon: Option<Daemon>,
    pub addr: SocketAddr,
    pub text: String,
}

impl Target {
    pub fn start(text: String) -> Target {
        let cfg = Config::parse(&text, Path::new("perf-test.toml")).expect("config parses");
        let addr = cfg.listen[0];
        let daemon = Daemon::start(&cfg, false).expect("daemon starts");
        Target {
            daemon: Some(daemon),
            addr,
            text,
        }
    }

    pub fn ram() -> Target {
        Target::start(config_text(free_port(), ram_bdev(), &[]))
    }

    /// The transport ID for `ferrite-perf -r`.
    pub fn tid(&self) -> String {
        format!(
            "trtype:tcp traddr:{} trsvcid:{} subnqn:{NQN}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    pub fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().expect("clean shutdown");
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.shutdown();
        }
    }
}

pub fn perf_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferrite-perf"))
}

/// Runs ferrite-perf with `args`; returns (exit code, stdout, stderr).
pub fn perf(args: &[&str]) -> (i32, String, String) {
    let sub = matches!(args.first(), Some(&"limit"));
    let out: Output = Command::new(perf_bin())
        .args(args)
        .args(if sub { &[][..] } else { &["--no-progress"][..] })
        .output()
        .expect("run ferrite-perf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
