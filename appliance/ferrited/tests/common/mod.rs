//! Starts a real `ferrited` process on a free loopback port for integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrite_host::{ConnectOptions, Controller};

pub const NQN: &str = "nqn.2026-01.io.ferrite:test";

pub struct Ferrited {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A config with a 64 MiB RAM namespace (nsid 1) under NQN, any host allowed unless `hosts`.
pub fn ram_config(port: u16, hosts: &[&str]) -> String {
    let allow_any = hosts.is_empty();
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!(
        r#"cores = "0,1"
listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "ram0"
kind = "malloc"
size = "64MiB"
block_size = 512
[[subsystem]]
nqn = "{NQN}"
allow_any_host = {allow_any}
hosts = [{}]
namespaces = [{{ nsid = 1, bdev = "ram0" }}]
"#,
        hosts.join(", ")
    )
}

impl Ferrited {
    pub fn start(config_text: &str) -> Ferrited {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("ferrite.toml");
        std::fs::write(&config, config_text).expect("write config");
        let mut f = Ferrited::start_with(&config, dir.path());
        f._dir = Some(dir);
        f
    }

    pub fn start_with(config: &Path, log_dir: &Path) -> Ferrited {
        let text = std::fs::read_to_string(config).expect("config readable");
        let addr: SocketAddr = text
            .lines()
            .find_map(|l| l.strip_prefix("listen = [\""))
            .and_then(|l| l.split('"').next())
            .expect("config has a listen line")
            .parse()
            .expect("listen address parses");
        let log = log_dir.join(format!("ferrited-{}.log", addr.port()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ferrited"))
            .arg("--config")
            .arg(config)
            .arg("--no-pin")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn ferrited");
        let f = Ferrited {
            child,
            addr,
            config: config.to_path_buf(),
            log,
            _dir: None,
        };
        f.wait_listening();
        f
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "ferrited did not listen on {}; log:\n{}",
            self.addr,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn connect(&self, io_queues: u16) -> Controller {
        let mut opts = ConnectOptions::new(self.addr, NQN);
        opts.io_queues = io_queues;
        Controller::connect(opts)
            .unwrap_or_else(|e| panic!("connect: {e}\nlog:\n{}", self.log_text()))
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(self.addr, NQN)
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "ferrited exited with {status}; log:\n{}",
                    self.log_text()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!(
            "ferrited did not stop on SIGTERM; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Ferrited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "ferrited log:\n{}", self.log_text());
        }
    }
}

/// A pattern unique to (lba, generation) so misplaced blocks are caught.
pub fn pattern(lba: u64, blocks: usize, block_size: usize, generation: u64) -> Vec<u8> {
    let mut out = vec![0u8; blocks * block_size];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let block = lba + (i * 8 / block_size) as u64;
        let v = block.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ generation ^ (i as u64).rotate_left(17);
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    out
}
