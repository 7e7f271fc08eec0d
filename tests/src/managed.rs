//! `ferrited` with a JSON-RPC control socket and a state directory, for tests that change the
//! configuration at run time and restart the daemon on it (cleanly or with `kill -9`).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ferrited::{binary, Error};

/// A ferrited whose state lives in `dir/state` and whose control socket is `dir/ferrited.sock`.
/// Dropping it kills the process (and prints its log if the test panicked).
#[derive(Debug)]
pub struct ManagedFerrited {
    child: Child,
    dir: PathBuf,
    port: u16,
    cores: String,
}

impl ManagedFerrited {
    /// Starts ferrited on 127.0.0.1:`port` with `config` (first start; later starts restore
    /// the state directory) and waits for its control socket.
    pub fn start(dir: &Path, port: u16, config: Option<&Path>) -> Result<ManagedFerrited, Error> {
        ManagedFerrited::start_on_cores(dir, port, config, "0")
    }

    /// Like [`ManagedFerrited::start`] with reactors on `cores` ("0" or "0,1").
    pub fn start_on_cores(
        dir: &Path,
        port: u16,
        config: Option<&Path>,
        cores: &str,
    ) -> Result<ManagedFerrited, Error> {
        let child = spawn(dir, port, config, cores)?;
        let mut t = ManagedFerrited {
            child,
            dir: dir.to_path_buf(),
            port,
            cores: cores.to_string(),
        };
        t.wait_ready()?;
        Ok(t)
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if UnixStream::connect(self.socket()).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            let reason = match self.child.try_wait() {
                Ok(Some(status)) => Some(format!("exited with {status}")),
                Ok(None) if Instant::now() > deadline => Some("not ready after 60 s".into()),
                Ok(None) => None,
                Err(e) => Some(format!("cannot wait for it: {e}")),
            };
            if let Some(reason) = reason {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(Error::Start {
                    reason,
                    log: self.log_path().display().to_string(),
                    tail: self.log_tail(40),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("ferrited.sock")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("ferrited.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// One JSON-RPC call: the result, or the error object's message.
    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
        let mut s = UnixStream::connect(self.socket()).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        s.write_all(format!("{req}\n").as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while !out.ends_with(b"\n") {
            let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("ferrited closed the control connection".into());
            }
            out.extend_from_slice(&chunk[..n]);
        }
        let resp: Value = serde_json::from_slice(&out).map_err(|e| format!("not JSON: {e}"))?;
        match resp.get("error") {
            Some(err) if !err.is_null() => Err(err["message"]
                .as_str()
                .map_or_else(|| err.to_string(), str::to_string)),
            _ => Ok(resp["result"].clone()),
        }
    }

    /// [`ManagedFerrited::try_call`] that panics (with the log) on an error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params.clone())
            .unwrap_or_else(|e| panic!("{method} {params}: {e}\n{}", self.log_tail(30)))
    }

    /// SIGKILL, no shutdown of any kind (a crash), then waits for the process to be gone.
    pub fn kill9(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for the killed ferrited")
    }

    /// SIGTERM (clean shutdown), waiting up to 30 s.
    pub fn stop(&mut self) -> Result<ExitStatus, Error> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(Error::Start {
                    reason: "did not stop within 30 s of SIGTERM".into(),
                    log: self.log_path().display().to_string(),
                    tail: self.log_tail(40),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same directory, port and cores once the previous process is
    /// gone (after [`ManagedFerrited::kill9`] or [`ManagedFerrited::stop`]).
    pub fn restart(&mut self) -> Result<(), Error> {
        let marker = "\n===== ferrite-e2e: restart =====\n";
        fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())
            .and_then(|mut f| f.write_all(marker.as_bytes()))
            .map_err(|source| Error::Io {
                context: "mark the restart in ferrited.log".into(),
                source,
            })?;
        // The state directory now describes everything; the config file is not needed.
        self.child = spawn(&self.dir, self.port, None, &self.cores)?;
        self.wait_ready()
    }
}

/// Writes `dir/ferrite.toml` for one reactor, a file bdev `disk0` at `image` (`size`, created
/// sparse, 4 KiB blocks) and an empty subsystem `nqn` open to any host (volumes are added
/// over RPC); returns its path.
pub fn file_bdev_config(dir: &Path, image: &Path, size: &str, nqn: &str) -> PathBuf {
    let config = dir.join("ferrite.toml");
    fs::write(
        &config,
        format!(
            "cores = \"0\"\n[[bdev]]\nname = \"disk0\"\nkind = \"file\"\npath = {:?}\n\
             size = \"{size}\"\nblock_size = 4096\n[[subsystem]]\nnqn = \"{nqn}\"\n\
             allow_any_host = true\n",
            image.display().to_string()
        ),
    )
    .expect("write ferrite.toml");
    config
}

fn spawn(dir: &Path, port: u16, config: Option<&Path>, cores: &str) -> Result<Child, Error> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ferrited.log"))
        .map_err(|source| Error::Io {
            context: "open ferrited.log".into(),
            source,
        })?;
    let mut cmd = Command::new(binary()?);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let _ = fs::remove_file(dir.join("ferrited.sock"));
    cmd.args([
        "--no-pin",
        "--cores",
        cores,
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .arg("--rpc-socket")
    .arg(dir.join("ferrited.sock"))
    .arg("--state-dir")
    .arg(dir.join("state"))
    .env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .map_err(|source| Error::Io {
        context: "spawn ferrited".into(),
        source,
    })
}

impl Drop for ManagedFerrited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "\n===== ferrited log (last 60 lines; full: {}) =====\n{}\n",
                self.log_path().display(),
                self.log_tail(60)
            );
        }
    }
}
