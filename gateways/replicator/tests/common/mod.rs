//! Helpers of the multi-process tests: processes with logs, ferrited daemons, replicators.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrite_host::{ConnectOptions, Controller};
use ferrite_rpc::Client;
use serde_json::Value;

pub struct Proc {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn term(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ---\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

pub fn spawn(name: &str, exe: &Path, args: &[&str], dir: &Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    Proc {
        child,
        log,
        name: name.to_string(),
    }
}

pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn ferrited(dir: &Path, name: &str, port: u16, body: &str) -> (Proc, PathBuf) {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!("cores = \"0\"\nlisten = [\"127.0.0.1:{port}\"]\n{body}"),
    )
    .expect("config");
    let sock = dir.join(format!("{name}.sock"));
    let exe = ferrite_e2e::ferrited::binary().expect("ferrited binary");
    let p = spawn(
        name,
        &exe,
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--rpc-socket",
            sock.to_str().expect("utf-8"),
            "--no-pin",
        ],
        dir,
    );
    wait_for(
        &format!("{name} to start"),
        || {
            Client::connect(&sock, Duration::from_secs(5)).is_ok()
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
        },
        30,
    );
    (p, sock)
}

pub fn rpc(sock: &Path, method: &str, params: Value) -> Value {
    let mut c = Client::connect(sock, Duration::from_secs(30)).expect("rpc connect");
    c.call(method, params)
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

pub fn port() -> u16 {
    ferrite_e2e::ferrited::free_port().expect("free port")
}

pub fn controller(port: u16, nqn: &str) -> Controller {
    let mut o = ConnectOptions::new(([127, 0, 0, 1], port).into(), nqn);
    o.io_queues = 1;
    o.kato_ms = 0;
    Controller::connect(o).expect("nvme connect")
}

pub fn replicator(dir: &Path, name: &str, text: &str) -> Proc {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, text).expect("replicator config");
    spawn(
        name,
        Path::new(env!("CARGO_BIN_EXE_ferrite-replicator")),
        &["run", "--config", cfg.to_str().expect("utf-8")],
        dir,
    )
}

pub fn status(sock: &Path) -> Option<Value> {
    ferrite_replicator::status::read(sock).ok()
}
