//! `ferrited` as a real process for end-to-end tests.
//!
//! The binary is `$FERRITED` when set, else `target/<profile>/ferrited` beside the running test,
//! built on first use with the cargo that builds the tests. The daemon runs unpinned on a free
//! loopback port with its log in a file that is printed when a test panics.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The subsystem NQN of ferrited's embedded default configuration.
pub const DEFAULT_NQN: &str = "nqn.2026-01.io.ferrite:default";
/// Environment variable naming a prebuilt ferrited.
pub const FERRITED_ENV: &str = "FERRITED";

const CONFIG_FILE: &str = "ferrited.toml";
const LOG_FILE: &str = "ferrited.log";

/// Errors starting or stopping the target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary could not be found or built.
    #[error("ferrited binary: {0}")]
    Binary(String),
    /// An I/O error on this side.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon exited or never listened.
    #[error("ferrited did not start: {reason}\n--- log ({log}) ---\n{tail}")]
    Start {
        /// What went wrong.
        reason: String,
        /// Path of its log.
        log: String,
        /// The log's last lines.
        tail: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A running ferrited. Drop kills it (and prints its log tail if the test panicked).
#[derive(Debug)]
pub struct Ferrited {
    child: Child,
    listen: SocketAddr,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    rust_log: String,
}

/// What to serve.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Reactor cores ("0" or "0,1").
    pub cores: String,
    /// The rest of the TOML (bdevs, subsystems); `listen` and `cores` are added.
    pub body: String,
    /// ferrited's `RUST_LOG`; `None` passes on the test's own, else "info".
    pub rust_log: Option<String>,
}

impl TargetConfig {
    /// One subsystem ([`DEFAULT_NQN`]) with NSID 1 = `size` of RAM (e.g. "64MiB"), open to
    /// every host (`allowed_hosts` empty) or only to the listed host NQNs.
    pub fn ram(size: &str, allowed_hosts: &[&str]) -> TargetConfig {
        TargetConfig::one_namespace(
            &format!(
                "[[bdev]]\nname = \"ram0\"\nkind = \"malloc\"\nsize = \"{size}\"\nblock_size = 4096\n"
            ),
            "ram0",
            allowed_hosts,
        )
    }

    /// Like [`TargetConfig::ram`] with NSID 1 = the file at `path` (io_uring, O_DIRECT),
    /// created sparse with `size` when missing and reused as it is when present, so a target
    /// restarted on the same config serves the same data. `path` must be on a file system
    /// that supports O_DIRECT (not tmpfs): see [`data_dir`].
    pub fn file(path: &Path, size: &str, allowed_hosts: &[&str]) -> TargetConfig {
        TargetConfig::one_namespace(
            &format!(
                "[[bdev]]\nname = \"file0\"\nkind = \"file\"\npath = {:?}\nsize = \"{size}\"\nblock_size = 4096\n",
                path.display().to_string()
            ),
            "file0",
            allowed_hosts,
        )
    }

    fn one_namespace(bdev: &str, name: &str, allowed_hosts: &[&str]) -> TargetConfig {
        let hosts: Vec<String> = allowed_hosts.iter().map(|h| format!("{h:?}")).collect();
        TargetConfig {
            cores: "0".into(),
            body: format!(
                "{bdev}\n[[subsystem]]\nnqn = \"{DEFAULT_NQN}\"\nallow_any_host = {}\nhosts = [{}]\n\
                 namespaces = [{{ nsid = 1, bdev = \"{name}\" }}]\n",
                allowed_hosts.is_empty(),
                hosts.join(", ")
            ),
            rust_log: None,
        }
    }

    /// The same with ferrited's log filter set to `filter` (env_logger syntax), e.g. to see
    /// a module's debug lines.
    pub fn with_rust_log(mut self, filter: &str) -> TargetConfig {
        self.rust_log = Some(filter.to_owned());
        self
    }
}

/// Where file-backed namespaces live: `$FERRITE_E2E_DATA_DIR`, else /var/tmp (on disk, unlike
/// a tmpfs /tmp, so O_DIRECT works).
pub const DATA_DIR_ENV: &str = "FERRITE_E2E_DATA_DIR";

/// A fresh directory for backing files, removed on drop.
pub fn data_dir() -> Result<tempfile::TempDir, Error> {
    let base = std::env::var_os(DATA_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    tempfile::Builder::new()
        .prefix("ferrite-e2e-data-")
        .tempdir_in(&base)
        .map_err(io(format!("create a data directory in {}", base.display())))
}

impl Ferrited {
    /// Starts ferrited with `config` on a free 127.0.0.1 port and waits until it accepts
    /// connections.
    pub fn start(config: &TargetConfig) -> Result<Ferrited, Error> {
        Ferrited::start_on(config, free_port()?)
    }

    /// Like [`Ferrited::start`] on a given port (e.g. one a guest already forwards).
    pub fn start_on(config: &TargetConfig, port: u16) -> Result<Ferrited, Error> {
        let dir = tempfile::Builder::new()
            .prefix("ferrite-e2e-target-")
            .tempdir()
            .map_err(io("create target directory"))?;
        let dir_path = dir.path().to_path_buf();
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let toml = format!(
            "cores = {:?}\nlisten = [\"{listen}\"]\n\n{}",
            config.cores, config.body
        );
        fs::write(dir_path.join(CONFIG_FILE), toml).map_err(io("write ferrited.toml"))?;
        let rust_log = config
            .rust_log
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".into());
        Ferrited::spawn(Some(dir), dir_path, listen, rust_log)
    }

    /// Stops it with SIGTERM like [`Ferrited::stop`], then starts it again with the same
    /// config file on the same port (its log continues in the same file). Returns the first
    /// run's exit status and the new process.
    pub fn restart(mut self) -> Result<(ExitStatus, Ferrited), Error> {
        let status = self.terminate()?;
        let dir = self.dir.take();
        let dir_path = self.dir_path.clone();
        let listen = self.listen;
        let rust_log = self.rust_log.clone();
        let marker = format!("\n===== ferrite-e2e: restart after {status} =====\n");
        fs::OpenOptions::new()
            .append(true)
            .open(dir_path.join(LOG_FILE))
            .and_then(|mut f| std::io::Write::write_all(&mut f, marker.as_bytes()))
            .map_err(io("mark the restart in ferrited.log"))?;
        Ok((status, Ferrited::spawn(dir, dir_path, listen, rust_log)?))
    }

    fn spawn(
        dir: Option<tempfile::TempDir>,
        dir_path: PathBuf,
        listen: SocketAddr,
        rust_log: String,
    ) -> Result<Ferrited, Error> {
        let binary = binary()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir_path.join(LOG_FILE))
            .map_err(io("open ferrited.log"))?;
        let log_err = log.try_clone().map_err(io("clone ferrited.log"))?;
        let child = Command::new(&binary)
            .arg("--config")
            .arg(dir_path.join(CONFIG_FILE))
            .arg("--no-pin")
            .env("RUST_LOG", &rust_log)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io(format!("spawn {}", binary.display())))?;
        let mut target = Ferrited {
            child,
            listen,
            dir,
            dir_path,
            rust_log,
        };
        target.wait_listening(Duration::from_secs(30))?;
        Ok(target)
    }

    fn wait_listening(&mut self, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let reason = match self.child.try_wait() {
                Ok(Some(status)) => Some(format!("exited with {status}")),
                Ok(None) if Instant::now() > deadline => {
                    Some(format!("not listening on {} after {limit:?}", self.listen))
                }
                Ok(None) => None,
                Err(e) => Some(format!("cannot wait for it: {e}")),
            };
            if let Some(reason) = reason {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(Error::Start {
                    reason,
                    log: self.keep_dir().join(LOG_FILE).display().to_string(),
                    tail: self.log_tail(40),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port it listens on (forward it to the guest).
    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir_path.join(LOG_FILE)).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it with SIGTERM (a clean shutdown) and returns its exit status; kills it after
    /// 10 s.
    pub fn stop(mut self) -> Result<ExitStatus, Error> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<ExitStatus, Error> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().map_err(io("wait for ferrited"))? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().map_err(io("wait for ferrited"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn keep_dir(&mut self) -> PathBuf {
        match self.dir.take() {
            Some(d) => d.keep(),
            None => self.dir_path.clone(),
        }
    }
}

impl Drop for Ferrited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let dir = self.keep_dir();
            eprintln!(
                "\n===== ferrited log (last 60 lines; full: {}) =====\n{}\n",
                dir.join(LOG_FILE).display(),
                self.log_tail(60)
            );
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, Error> {
    // The port is free when we ask; ferrited binds it a moment later.
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("find a free port"))?;
    Ok(l.local_addr().map_err(io("find a free port"))?.port())
}

/// The ferrited binary: `$FERRITED`, else built once per test process with cargo.
pub fn binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(FERRITED_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Binary(format!(
                "{FERRITED_ENV}={} does not exist",
                path.display()
            )))
        };
    }
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    built_once(&BUILT, build)
}

/// Builds a binary once per test process and remembers where it is.
fn built_once(
    cell: &OnceLock<Mutex<Option<PathBuf>>>,
    build: impl FnOnce() -> Result<PathBuf, Error>,
) -> Result<PathBuf, Error> {
    let mut built = cell
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.as_ref() {
        return Ok(path.clone());
    }
    let path = build()?;
    *built = Some(path.clone());
    Ok(path)
}

/// `cargo build -p ferrite-daemon --bin ferrited` into the running test's target directory.
fn build() -> Result<PathBuf, Error> {
    build_bin("ferrite-daemon", "ferrited")
}

/// The ferrite-tape gateway binary, next to the running test (built with cargo when missing).
pub fn tape_binary() -> Result<PathBuf, Error> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    built_once(&BUILT, || build_bin("ferrite-tape", "ferrite-tape"))
}

/// The ferrite-perf binary, next to the running test (built with cargo when missing).
pub fn perf_binary() -> Result<PathBuf, Error> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    built_once(&BUILT, || build_bin("ferrite-perf", "ferrite-perf"))
}

/// `cargo build -p PACKAGE --bin BIN` into the running test's target directory.
fn build_bin(package: &str, bin: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(io("locate the test binary"))?;
    // <target>/<profile>/deps/<test> -> <target>/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::Binary(format!("unexpected test path {}", exe.display())))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| Error::Binary(format!("unexpected test path {}", exe.display())))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Binary(format!("unexpected test path {}", exe.display())))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile == "release" {
        cmd.arg("--release");
    } else if profile != "debug" {
        cmd.args(["--profile", profile]);
    }
    let out = cmd
        .output()
        .map_err(io(format!("run cargo build for {bin}")))?;
    if !out.status.success() {
        return Err(Error::Binary(format!(
            "cargo build -p {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let path = profile_dir.join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Binary(format!(
            "built, but {} is missing",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_config_lists_hosts() {
        let open = TargetConfig::ram("64MiB", &[]);
        assert!(open.body.contains("allow_any_host = true\nhosts = []"));
        let closed = TargetConfig::ram("64MiB", &["nqn.a", "nqn.b"]);
        assert!(closed
            .body
            .contains("allow_any_host = false\nhosts = [\"nqn.a\", \"nqn.b\"]"));
        assert!(closed.body.contains("size = \"64MiB\""));
    }

    #[test]
    fn file_config_names_the_path() {
        let cfg = TargetConfig::file(Path::new("/var/tmp/x/ns1.img"), "256MiB", &[]);
        assert!(cfg
            .body
            .contains("kind = \"file\"\npath = \"/var/tmp/x/ns1.img\""));
        assert!(cfg.body.contains("size = \"256MiB\""));
        assert!(cfg.body.contains("bdev = \"file0\""));
    }

    #[test]
    fn data_dir_is_not_tmpfs_by_default() {
        if std::env::var_os(DATA_DIR_ENV).is_some() {
            return;
        }
        let dir = data_dir().expect("a data directory");
        assert!(
            dir.path().starts_with("/var/tmp"),
            "{}",
            dir.path().display()
        );
    }
}
