//! Starts a real `ferrited` process on a free loopback port for integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_host::{ConnectOptions, Controller};
use serde_json::Value;

pub mod raw;

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
    ram_config_for(NQN, port, "64MiB", hosts)
}

/// A config with one RAM namespace of `size` (nsid 1, 512-byte blocks) under `nqn` on
/// 127.0.0.1:`port`, any host allowed unless `hosts`.
pub fn ram_config_for(nqn: &str, port: u16, size: &str, hosts: &[&str]) -> String {
    let allow_any = hosts.is_empty();
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!(
        r#"cores = "0,1"
listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "ram0"
kind = "malloc"
size = "{size}"
block_size = 512
[[subsystem]]
nqn = "{nqn}"
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

/// A second subsystem that only [`GOOD_HOST`] may use: the well-behaved host of the bad-input
/// and vanishing-host tests keeps its data there, out of reach of the misbehaving clients.
pub const GOOD_NQN: &str = "nqn.2026-01.io.ferrite:good";
/// Host UUID of the well-behaved host.
pub const GOOD_HOST: [u8; 16] = [0x60; 16];

/// [`ram_config`] (any host, nsid 1 of 64 MiB under [`NQN`]) plus a 16 MiB namespace under
/// [`GOOD_NQN`] that only [`GOOD_HOST`] may reach.
pub fn shared_config(port: u16) -> String {
    let good = ferrite_host::controller::uuid_hostnqn(&GOOD_HOST);
    format!(
        r#"{}
[[bdev]]
name = "ram1"
kind = "malloc"
size = "16MiB"
block_size = 512
[[subsystem]]
nqn = "{GOOD_NQN}"
allow_any_host = false
hosts = ["{good}"]
namespaces = [{{ nsid = 1, bdev = "ram1" }}]
"#,
        ram_config(port, &[])
    )
}

impl Ferrited {
    /// Panics when the process has exited or a reactor thread panicked.
    pub fn assert_alive(&mut self, context: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "ferrited exited ({status}) after {context}; log:\n{}",
                self.log_text()
            );
        }
        let log = self.log_text();
        assert!(
            !log.contains("panicked"),
            "ferrited panicked after {context}; log:\n{log}"
        );
    }

    /// VmRSS of the process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status of a live process");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    /// Lines of the log containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `count_log(needle) >= n`; false on timeout.
    pub fn wait_log(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count_log(needle) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connect options of the well-behaved host on [`GOOD_NQN`].
    pub fn good_options(&self) -> ConnectOptions {
        ConnectOptions::new(self.addr, GOOD_NQN).with_host_uuid(GOOD_HOST)
    }
}

/// What the good host's thread shares with the test.
#[derive(Default)]
struct GoodShared {
    stop: AtomicBool,
    /// Verified write+read round trips.
    ops: AtomicU64,
    error: Mutex<Option<String>>,
}

/// A well-behaved host on [`GOOD_NQN`] doing verified I/O in a thread for as long as it lives:
/// writes a pattern unique to (LBA, generation) in-capsule or through R2T, reads it back, and
/// now and then re-reads an older slot to catch stray writes.
pub struct GoodHost {
    shared: Arc<GoodShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Slots of 64 blocks the good host cycles through (8 MiB of its 16 MiB namespace).
const GOOD_SLOTS: u64 = 256;
const GOOD_SLOT_BLOCKS: u64 = 64;

impl GoodHost {
    pub fn start(t: &Ferrited) -> GoodHost {
        let mut opts = t.good_options();
        opts.io_queues = 2;
        let mut c = Controller::connect(opts)
            .unwrap_or_else(|e| panic!("good host connect: {e}\nlog:\n{}", t.log_text()));
        let shared = Arc::new(GoodShared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            if let Err(e) = good_loop(&mut c, &s) {
                *s.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
            c.disconnect();
        });
        let g = GoodHost {
            shared,
            thread: Some(thread),
        };
        g.wait_progress(2, "start");
        g
    }

    fn error(&self) -> Option<String> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn wait_progress(&self, n: u64, context: &str) {
        let start = self.shared.ops.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.ops.load(Ordering::Relaxed) < start + n {
            if let Some(e) = self.error() {
                panic!("good host failed after {context}: {e}");
            }
            assert!(
                Instant::now() < deadline,
                "good host made no progress for 10 s after {context}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Asserts the target is alive and the good host completed fresh verified I/O after `context`.
    pub fn check(&self, t: &mut Ferrited, context: &str) {
        t.assert_alive(context);
        self.wait_progress(2, context);
    }

    /// Stops the thread; panics if it saw an error. Returns the verified round trips.
    pub fn stop(mut self) -> u64 {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(th) = self.thread.take() {
            th.join().expect("good host thread");
        }
        if let Some(e) = self.error() {
            panic!("good host failed: {e}");
        }
        self.shared.ops.load(Ordering::Relaxed)
    }
}

impl Drop for GoodHost {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(th) = self.thread.take() {
            let _ = th.join();
        }
    }
}

fn good_loop(c: &mut Controller, s: &GoodShared) -> Result<(), String> {
    // (blocks, generation) last written per slot.
    let mut written: Vec<Option<(usize, u64)>> = vec![None; GOOD_SLOTS as usize];
    let mut i = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        let slot = (i * 37) % GOOD_SLOTS;
        let lba = slot * GOOD_SLOT_BLOCKS;
        // 4 KiB goes in-capsule, 32 KiB through R2T/H2CData.
        let blocks = if i % 2 == 0 { 8 } else { 64 };
        let qid = 1 + (i % 2) as u16;
        let data = pattern(lba, blocks, 512, i);
        c.write(qid, 1, lba, &data, false)
            .map_err(|e| format!("write lba {lba}: {e}"))?;
        let mut back = vec![0u8; data.len()];
        c.read(qid, 1, lba, blocks as u32, &mut back)
            .map_err(|e| format!("read lba {lba}: {e}"))?;
        if back != data {
            return Err(format!(
                "lba {lba}: read back differs from what was written"
            ));
        }
        written[slot as usize] = Some((blocks, i));
        // Re-read an older slot: nobody else may have changed it.
        let old = (i * 101 + 7) % GOOD_SLOTS;
        if let Some((blocks, generation)) = written[old as usize] {
            let lba = old * GOOD_SLOT_BLOCKS;
            let mut back = vec![0u8; blocks * 512];
            c.read(qid, 1, lba, blocks as u32, &mut back)
                .map_err(|e| format!("re-read lba {lba}: {e}"))?;
            if back != pattern(lba, blocks, 512, generation) {
                return Err(format!(
                    "lba {lba}: older data changed behind the host's back"
                ));
            }
        }
        i += 1;
        s.ops.fetch_add(1, Ordering::Relaxed);
        // Leave CPU to the target and the test on this small machine.
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// A `ferrited` with a control socket, driven through the real `ferritectl`.
pub struct CtlDaemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub addr: SocketAddr,
}

impl CtlDaemon {
    /// Starts ferrited with `args` plus a control socket in `dir`; waits for the socket.
    pub fn start(dir: &Path, port: u16, args: &[&str]) -> CtlDaemon {
        let socket = dir.join("ferrited.sock");
        let log = dir.join(format!("ferrited-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ferrited"))
            .args(args)
            .arg("--no-pin")
            .arg("--rpc-socket")
            .arg(&socket)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn ferrited");
        let mut d = CtlDaemon {
            child,
            socket,
            log,
            addr: ([127, 0, 0, 1], port).into(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&d.socket).is_err() || TcpStream::connect(d.addr).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("ferrited exited with {status}:\n{}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "ferrited did not start:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ferritectl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run ferritectl")
    }

    /// Runs ferritectl and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ferritectl {args:?} failed: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs ferritectl --json and parses the result.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ok(&full)).expect("ferritectl --json prints JSON")
    }

    /// Runs ferritectl and expects failure whose message contains every `needle`.
    pub fn fails(&self, args: &[&str], needles: &[&str]) {
        let out = self.ctl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ferritectl {args:?} should fail");
        for n in needles {
            assert!(err.contains(n), "ferritectl {args:?}: {err:?} lacks {n:?}");
        }
    }

    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "ferrited exited {status}:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(Instant::now() < deadline, "ferrited did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl CtlDaemon {
    /// SIGKILL, as a crash: nothing is flushed or checkpointed.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One JSON-RPC call over the socket; Err is the error object.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, ferrite_rpc::RpcError> {
        let mut c = ferrite_rpc::Client::connect(&self.socket, Duration::from_secs(30))
            .expect("connect to the control socket");
        c.call(method, params).map_err(|e| match e {
            ferrite_rpc::ClientError::Rpc(err) => err,
            other => panic!("{method}: {other}"),
        })
    }
}

impl Drop for CtlDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("ferrited log:\n{}", self.log_text());
        }
    }
}

/// Writes `text` as a config file in `dir` and starts ferrited on it with a control socket.
pub fn start_with_config(dir: &Path, text: &str, port: u16, extra: &[&str]) -> CtlDaemon {
    let cfg = dir.join(format!("ferrite-{port}.toml"));
    std::fs::write(&cfg, text).expect("write config");
    let mut args = vec!["--config", cfg.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    CtlDaemon::start(dir, port, &args)
}

/// Two reactors and namespace 1 of [`NQN`] = a 32 MiB file bdev at `path` (created sparse).
#[allow(dead_code)] // not every test file uses it
pub fn file_config(port: u16, path: &std::path::Path) -> String {
    format!(
        r#"cores = "0,1"
listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "disk0"
kind = "file"
path = "{}"
size = "32MiB"
block_size = 4096
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
namespaces = [{{ nsid = 1, bdev = "disk0" }}]
"#,
        path.display()
    )
}
