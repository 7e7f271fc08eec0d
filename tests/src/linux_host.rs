//! A real Linux NVMe host for end-to-end tests: this machine's Debian kernel booted in QEMU.
//!
//! The guest's root is this machine's `/`, shared read-only over virtio-9p under a tmpfs overlay,
//! so the guest runs the installed `nvme`, `fio`, `mkfs.ext4` and loads modules (nvme-tcp) from
//! `/lib/modules`. Networking is QEMU user mode with `restrict=on`: the only way out of the guest
//! is `10.0.2.100:<port>`, forwarded (one `socat` per guest connection) to `127.0.0.1:<port>`
//! on this side, so the target under test only ever sees loopback traffic.
//!
//! Commands travel over a virtio-serial port to a small shell agent in the guest
//! (`linux_host/agent.sh`); the kernel log streams over a second port, and the serial console
//! goes to `console.log` in the VM's run directory. When a test panics while a [`LinuxHost`] is
//! alive, its drop prints the guest's kernel log tail and keeps the run directory.
//!
//! ```no_run
//! use std::time::Duration;
//! use ferrite_e2e::linux_host::{HostOptions, LinuxHost};
//!
//! let Some(host) = LinuxHost::boot_or_skip(HostOptions::default())? else {
//!     return Ok(()); // no QEMU here, and FERRITE_SKIP_VM=1 says that is fine
//! };
//! host.run_ok("modprobe nvme-tcp")?;
//! let out = host.run("nvme discover -t tcp -a 10.0.2.100 -s 4420", Duration::from_secs(30))?;
//! println!("status {}: {}", out.status, out.stdout);
//! # Ok::<(), ferrite_e2e::linux_host::Error>(())
//! ```

mod agent;
mod initramfs;
mod kernel;
mod kmsg;
mod slots;

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use agent::{base64_decode, base64_encode};
pub use kernel::Kernel;
pub use kmsg::Record as KernelLogRecord;

use agent::{AgentChannel, Outcome};
use slots::{SlotGuard, Slots};

/// The guest's view of the target: guest connections to this address (on a forwarded port)
/// reach 127.0.0.1 on this machine.
pub const TARGET_ADDR: &str = "10.0.2.100";
/// The guest's own address on its user-mode network.
pub const GUEST_ADDR: &str = "10.0.2.15";
/// NVMe/TCP's IANA port, ferrited's default listener.
pub const NVME_TCP_PORT: u16 = 4420;
/// Timeout used by [`LinuxHost::run_ok`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra time the host waits past a command's timeout for the guest's watchdog to answer.
const GRACE: Duration = Duration::from_secs(15);

/// Environment variables the harness reads.
pub mod env {
    /// Set (to anything but "false"/"0") in CI: the [`SKIP_VM`] opt-out is refused there.
    pub const CI: &str = "CI";
    /// The explicit opt-out: set to `1` on a machine that cannot run QEMU guests, the `vm_*`
    /// tests pass with a SKIPPED banner instead of failing. Without it (and always in CI) a
    /// missing QEMU or kernel fails the test.
    pub const SKIP_VM: &str = "FERRITE_SKIP_VM";
    /// QEMU binary to use instead of `qemu-system-x86_64` from `PATH`.
    pub const QEMU: &str = "FERRITE_E2E_QEMU";
    /// Kernel image to boot instead of the newest `/boot/vmlinuz-*`.
    pub const KERNEL: &str = super::kernel::KERNEL_ENV;
    /// QEMU accelerator (`tcg` by default; `kvm` where it works).
    pub const ACCEL: &str = "FERRITE_E2E_ACCEL";
    /// Where the cached vmlinux and initramfs live.
    pub const CACHE: &str = "FERRITE_E2E_CACHE";
    /// How many VMs run at once on this machine, across test processes (default: one per two
    /// cores, at least one).
    pub const MAX_VMS: &str = "FERRITE_E2E_MAX_VMS";
    /// The guestfwd relay binary (default: `ferrite-e2e-relay` beside the test binary).
    pub const RELAY: &str = "FERRITE_E2E_RELAY";
    /// Set to keep every VM's run directory, not only those of failed tests.
    pub const KEEP: &str = "FERRITE_E2E_KEEP";
}

/// Errors of the Linux-host harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// QEMU, a kernel or a helper tool is missing: tests fail unless `FERRITE_SKIP_VM=1`.
    #[error("Linux host unavailable: {0}")]
    Unavailable(String),
    /// Building the boot artifacts failed.
    #[error("Linux host setup failed: {0}")]
    Setup(String),
    /// An I/O error on this side.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The guest did not come up.
    #[error("guest did not boot: {reason}\n(console log: {console_log})\n{console_tail}")]
    Boot {
        /// What went wrong.
        reason: String,
        /// Path of the serial console log.
        console_log: String,
        /// Its last lines.
        console_tail: String,
    },
    /// The command ran past its timeout and was killed in the guest.
    #[error("guest command timed out after {timeout:?}: {cmd}\n--- output ---\n{output}")]
    Timeout {
        /// The command.
        cmd: String,
        /// Its timeout.
        timeout: Duration,
        /// What it printed before it was killed.
        output: String,
    },
    /// The agent gave no answer even after the guest-side watchdog should have fired.
    #[error("guest agent unresponsive (waited {waited:?}) running: {cmd}")]
    Unresponsive {
        /// The command.
        cmd: String,
        /// How long the host waited.
        waited: Duration,
    },
    /// `run_ok` saw a non-zero exit status.
    #[error("guest command failed with status {status}: {cmd}\n--- output ---\n{output}")]
    Failed {
        /// The command.
        cmd: String,
        /// Its exit status.
        status: i32,
        /// Its merged stdout and stderr.
        output: String,
    },
    /// The command channel broke.
    #[error("guest agent: {0}")]
    Agent(String),
    /// Internal: no agent event before the deadline.
    #[error("no answer from the guest agent in time")]
    AgentTimeout,
}

impl Error {
    fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this error means "this machine cannot run the Linux host" (a failure, or a skip
    /// with the `FERRITE_SKIP_VM=1` opt-out).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

/// Result of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to boot the guest.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Ports reachable from the guest at `10.0.2.100:<port>`, forwarded to `127.0.0.1:<port>`.
    pub forward_ports: Vec<u16>,
    /// Guest memory.
    pub memory_mib: u32,
    /// Guest vCPUs (also the number of NVMe I/O queues Linux asks for by default).
    pub cpus: u32,
    /// Kernel image (bzImage); default `$FERRITE_E2E_KERNEL` or the newest `/boot/vmlinuz-*`.
    pub kernel: Option<PathBuf>,
    /// How long to wait for the agent to come up.
    pub boot_timeout: Duration,
    /// The guest's `/etc/nvme/hostnqn`; default a fresh `nqn.2014-08.org.nvmexpress:uuid:…`.
    pub hostnqn: Option<String>,
    /// Extra QEMU arguments placed right after `-machine` (e.g. `-device intel-iommu`, which
    /// must precede the other PCI devices, and an emulated `-device nvme`).
    pub extra_qemu_args: Vec<String>,
    /// Extra words for the guest kernel command line (e.g. `intel_iommu=on`).
    pub extra_kernel_args: Vec<String>,
}

impl Default for HostOptions {
    fn default() -> HostOptions {
        HostOptions {
            forward_ports: vec![NVME_TCP_PORT],
            memory_mib: 1024,
            cpus: 2,
            kernel: None,
            boot_timeout: Duration::from_secs(120),
            hostnqn: None,
            extra_qemu_args: Vec::new(),
            extra_kernel_args: Vec::new(),
        }
    }
}

/// What a guest command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit status (128 + n when killed by signal n).
    pub status: i32,
    /// stdout and stderr, merged (lossy UTF-8).
    pub stdout: String,
}

impl CmdOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Everything `boot` resolved before starting QEMU.
#[derive(Debug)]
struct BootArtifacts {
    qemu: PathBuf,
    kernel: Kernel,
    boot_image: PathBuf,
    initrd: PathBuf,
    relay: Relay,
}

/// A booted guest. Dropping it kills QEMU; [`LinuxHost::shutdown`] powers off cleanly.
pub struct LinuxHost {
    child: Child,
    agent: Mutex<AgentChannel>,
    kernel_log: Arc<Mutex<kmsg::KernelLog>>,
    readers: Vec<JoinHandle<()>>,
    run_dir: Option<tempfile::TempDir>,
    run_path: PathBuf,
    transcript: Mutex<Option<File>>,
    kernel_version: String,
    hostnqn: String,
    hostid: String,
    slot: SlotGuard,
}

impl fmt::Debug for LinuxHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinuxHost")
            .field("pid", &self.child.id())
            .field("run_dir", &self.run_path)
            .field("kernel_version", &self.kernel_version)
            .finish_non_exhaustive()
    }
}

impl LinuxHost {
    /// Boots a guest and waits until its agent answers.
    pub fn boot(opts: HostOptions) -> Result<LinuxHost> {
        let qemu = find_qemu()?;
        let kernel = Kernel::locate(opts.kernel.as_deref())?;
        let relay = if opts.forward_ports.is_empty() {
            Relay::Socat // unused
        } else {
            Relay::find()?
        };
        let (boot_image, initrd) = prepare_artifacts(&kernel)?;
        let slot = Slots::machine_default().acquire()?;
        let artifacts = BootArtifacts {
            qemu,
            kernel,
            boot_image,
            initrd,
            relay,
        };
        Self::start(&opts, &artifacts, slot)
    }

    /// Like [`LinuxHost::boot`], but where this machine cannot run a Linux host (no QEMU, no
    /// kernel) and the operator opted out with `FERRITE_SKIP_VM=1`, prints a loud notice and
    /// returns `Ok(None)` so the test can return early. Without the opt-out, or in CI, a
    /// missing prerequisite is an error that names `tests/install-deps.sh`.
    pub fn boot_or_skip(opts: HostOptions) -> Result<Option<LinuxHost>> {
        match LinuxHost::boot(opts) {
            Ok(host) => Ok(Some(host)),
            Err(e) if e.is_unavailable() => match skip_policy() {
                SkipPolicy::Skip => {
                    eprintln!(
                        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                         !!! SKIPPED ({}=1): {e}\n\
                         !!! Run `bash tests/install-deps.sh` to run the Linux-host tests.\n\
                         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
                        env::SKIP_VM
                    );
                    Ok(None)
                }
                SkipPolicy::Fail(why) => Err(Error::Unavailable(format!(
                    "{e}; run `bash tests/install-deps.sh` to install QEMU and the kernel ({why})"
                ))),
            },
            Err(e) => Err(e),
        }
    }

    fn start(opts: &HostOptions, art: &BootArtifacts, slot: SlotGuard) -> Result<LinuxHost> {
        let BootArtifacts {
            qemu,
            kernel,
            boot_image,
            initrd,
            relay,
        } = art;
        let run_dir = tempfile::Builder::new()
            .prefix("ferrite-e2e-vm-")
            .tempdir()
            .map_err(|e| Error::io("create VM run directory", e))?;
        let run_path = run_dir.path().to_path_buf();
        let console_log = run_path.join("console.log");
        let agent_sock = run_path.join("agent.sock");
        let kmsg_sock = run_path.join("kmsg.sock");
        let agent_listener =
            UnixListener::bind(&agent_sock).map_err(|e| Error::io("bind agent socket", e))?;
        let kmsg_listener =
            UnixListener::bind(&kmsg_sock).map_err(|e| Error::io("bind kmsg socket", e))?;

        let uuid = fresh_uuid()?;
        let hostnqn = opts
            .hostnqn
            .clone()
            .unwrap_or_else(|| format!("nqn.2014-08.org.nvmexpress:uuid:{uuid}"));
        if hostnqn.contains(char::is_whitespace) {
            return Err(Error::Setup(format!(
                "hostnqn {hostnqn:?} contains whitespace"
            )));
        }
        let append = [
            "console=ttyS0",
            "quiet",
            "loglevel=3",
            "panic=-1",
            "rdinit=/init",
            "mitigations=off",
            "random.trust_cpu=on",
            // Under TCG on a loaded host the IO-APIC timer check can miss its ticks and the
            // guest panics ("IO-APIC + timer doesn't work"); virtual machines skip it.
            "no_timer_check",
            &format!("ferrite.hostnqn={hostnqn}"),
            &format!("ferrite.hostid={uuid}"),
        ]
        .into_iter()
        .chain(opts.extra_kernel_args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");

        let mut cmd = Command::new(qemu);
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        let accel = std::env::var(env::ACCEL).unwrap_or_else(|_| "tcg".into());
        cmd.args(["-machine", "q35", "-accel", &accel, "-cpu", "max"]);
        cmd.args(&opts.extra_qemu_args);
        cmd.args(["-smp", &opts.cpus.max(1).to_string()]);
        cmd.args(["-m", &opts.memory_mib.max(256).to_string()]);
        // qboot skips most of SeaBIOS' work; QEMU falls back to SeaBIOS without it.
        let qboot = Path::new("/usr/share/qemu/qboot.rom");
        if qboot.is_file() {
            cmd.arg("-bios").arg(qboot);
        }
        cmd.arg("-kernel").arg(boot_image);
        cmd.arg("-initrd").arg(initrd);
        cmd.args(["-append", &append]);
        cmd.arg("-serial")
            .arg(format!("file:{}", qemu_escape(&console_log)));
        cmd.arg("-fsdev")
            .arg("local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap");
        cmd.args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"]);
        cmd.args(["-device", "virtio-serial-pci,id=vser"]);
        for (id, sock) in [("agent", &agent_sock), ("kmsg", &kmsg_sock)] {
            cmd.arg("-chardev")
                .arg(format!("socket,id={id},path={}", qemu_escape(sock)));
            cmd.arg("-device")
                .arg(format!("virtserialport,chardev={id},name=ferrite.{id}"));
        }
        cmd.arg("-netdev")
            .arg(netdev_arg(&opts.forward_ports, &run_path, relay)?);
        cmd.args(["-device", "virtio-net-pci,netdev=net0"]);

        let qemu_log =
            File::create(run_path.join("qemu.log")).map_err(|e| Error::io("create qemu.log", e))?;
        let qemu_err = qemu_log
            .try_clone()
            .map_err(|e| Error::io("clone qemu.log", e))?;
        fs::write(run_path.join("qemu.cmdline"), format!("{cmd:?}\n"))
            .map_err(|e| Error::io("write qemu.cmdline", e))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(qemu_log)
            .stderr(qemu_err)
            .spawn()
            .map_err(|e| Error::Unavailable(format!("cannot start {}: {e}", qemu.display())))?;
        log::info!(
            "booting {} in QEMU (pid {}), run dir {}",
            kernel.version,
            child.id(),
            run_path.display()
        );

        let connected = accept_both(&agent_listener, &kmsg_listener, &mut child);
        let (agent_stream, kmsg_stream) = match connected {
            Ok(pair) => pair,
            Err(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                let qemu_out = fs::read_to_string(run_path.join("qemu.log")).unwrap_or_default();
                let kept = run_dir.keep();
                return Err(Error::Boot {
                    reason: format!("{reason}; qemu said: {}", qemu_out.trim()),
                    console_log: kept.join("console.log").display().to_string(),
                    console_tail: String::new(),
                });
            }
        };
        let kmsg_file =
            File::create(run_path.join("kmsg.log")).map_err(|e| Error::io("create kmsg.log", e))?;
        let (kernel_log, kmsg_thread) = kmsg::start(kmsg_stream, kmsg_file)?;
        let (agent, agent_thread) = AgentChannel::start(agent_stream)?;
        let transcript = File::create(run_path.join("commands.log")).ok();

        let mut host = LinuxHost {
            child,
            agent: Mutex::new(agent),
            kernel_log,
            readers: vec![kmsg_thread, agent_thread],
            run_dir: Some(run_dir),
            run_path,
            transcript: Mutex::new(transcript),
            kernel_version: kernel.version.clone(),
            hostnqn,
            hostid: uuid,
            slot,
        };
        let started = Instant::now();
        let ready = lock(&host.agent).wait_ready(started + opts.boot_timeout);
        if let Err(e) = ready {
            let reason = match e {
                Error::AgentTimeout => format!("no agent after {:?}", opts.boot_timeout),
                other => other.to_string(),
            };
            host.kill();
            let run_path = host.keep_run_dir();
            let console_log = run_path.join("console.log");
            return Err(Error::Boot {
                reason,
                console_tail: tail(&fs::read_to_string(&console_log).unwrap_or_default(), 40),
                console_log: console_log.display().to_string(),
            });
        }
        log::info!("guest up in {:?}", started.elapsed());
        host.note(&format!(
            "# guest up {:?} after QEMU started (VM slot {})\n",
            started.elapsed(),
            host.slot.index()
        ));
        Ok(host)
    }

    /// Runs `cmd` with bash in the guest (stdin is /dev/null) and returns its exit status and
    /// merged output. Past `timeout` the guest kills the command's whole process group and this
    /// returns [`Error::Timeout`]. A non-zero status is not an error here (see `run_ok`).
    pub fn run(&self, cmd: &str, timeout: Duration) -> Result<CmdOutput> {
        let mut agent = lock(&self.agent);
        let waited = timeout + GRACE;
        let started = Instant::now();
        let result = agent.call(cmd, timeout, started + waited);
        drop(agent);
        let elapsed = started.elapsed();
        let (outcome, output) = match result {
            Ok(r) => r,
            Err(Error::AgentTimeout) => {
                self.note(&format!("$ {cmd}\n[no answer after {elapsed:?}]\n"));
                return Err(Error::Unresponsive {
                    cmd: cmd.to_owned(),
                    waited,
                });
            }
            Err(e) => return Err(e),
        };
        let stdout = String::from_utf8_lossy(&output).into_owned();
        self.note(&format!(
            "$ {cmd}\n{stdout}[{outcome:?} after {elapsed:?}]\n"
        ));
        match outcome {
            Outcome::Exited(status) => Ok(CmdOutput { status, stdout }),
            Outcome::TimedOut => Err(Error::Timeout {
                cmd: cmd.to_owned(),
                timeout,
                output: stdout,
            }),
            Outcome::BadRequest => Err(Error::Agent(format!("agent rejected the request: {cmd}"))),
        }
    }

    /// Runs `cmd` (timeout [`DEFAULT_TIMEOUT`]) and returns its output; a non-zero status is
    /// [`Error::Failed`] carrying the output.
    pub fn run_ok(&self, cmd: &str) -> Result<String> {
        self.run_ok_within(cmd, DEFAULT_TIMEOUT)
    }

    /// [`LinuxHost::run_ok`] with an explicit timeout.
    pub fn run_ok_within(&self, cmd: &str, timeout: Duration) -> Result<String> {
        let out = self.run(cmd, timeout)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(Error::Failed {
                cmd: cmd.to_owned(),
                status: out.status,
                output: out.stdout,
            })
        }
    }

    /// Writes `contents` to `path` in the guest (the guest's root is an overlay: nothing
    /// reaches this machine's files).
    pub fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        let script = format!(
            "echo '{}' | base64 -d > '{}'",
            base64_encode(contents),
            path.replace('\'', r"'\''")
        );
        self.run_ok(&script).map(drop)
    }

    /// The address the guest uses to reach the target: "10.0.2.100".
    pub fn target_addr(&self) -> &'static str {
        TARGET_ADDR
    }

    /// The guest kernel's release (`uname -r`).
    pub fn kernel_version(&self) -> &str {
        &self.kernel_version
    }

    /// The guest's host NQN (`/etc/nvme/hostnqn`), what a target's allowed-hosts list names.
    pub fn hostnqn(&self) -> &str {
        &self.hostnqn
    }

    /// The guest's host identifier (`/etc/nvme/hostid`).
    pub fn hostid(&self) -> &str {
        &self.hostid
    }

    /// The guest kernel log so far, formatted like `dmesg`. Collected over its own channel, so
    /// it works even when the agent is stuck.
    pub fn dmesg(&self) -> String {
        lock(&self.kernel_log).text()
    }

    /// The guest kernel log records so far.
    pub fn kernel_log(&self) -> Vec<KernelLogRecord> {
        lock(&self.kernel_log).records().to_vec()
    }

    /// This VM's directory: console.log, kmsg.log, commands.log, qemu.log, fwd-<port>.log.
    pub fn run_dir(&self) -> &Path {
        &self.run_path
    }

    /// The serial console log (boot messages, init's errors).
    pub fn console_log(&self) -> PathBuf {
        self.run_path.join("console.log")
    }

    /// Powers the guest off and waits for QEMU to exit (kills it after a few seconds).
    pub fn shutdown(mut self) -> Result<()> {
        // Answer first, then power off, so the request completes normally.
        let asked = self.run(
            "(sleep 0.2; sync; /run/ferrite/busybox poweroff -f) >/dev/null 2>&1 &",
            Duration::from_secs(10),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let exited = loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => break false,
            }
        };
        self.kill();
        asked?;
        if exited {
            Ok(())
        } else {
            Err(Error::Agent("guest did not power off; QEMU killed".into()))
        }
    }

    fn note(&self, text: &str) {
        if let Some(f) = lock(&self.transcript).as_mut() {
            let _ = f.write_all(text.as_bytes());
        }
    }

    /// Kills QEMU and stops the reader threads. Idempotent.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        lock(&self.agent).close();
        for t in self.readers.drain(..) {
            let _ = t.join();
        }
    }

    fn keep_run_dir(&mut self) -> PathBuf {
        if let Some(dir) = self.run_dir.take() {
            return dir.keep();
        }
        self.run_path.clone()
    }

    /// Prints the guest kernel log tail and the paths of the VM's logs to stderr, and keeps its
    /// run directory. Drop does this by itself when the test panics; call it from tests that
    /// fail by returning an error.
    pub fn report_failure(&mut self) {
        let path = self.keep_run_dir();
        let dmesg = self.dmesg();
        eprintln!(
            "\n===== Linux host: test failed; guest kernel log (last 80 lines) =====\n{}\
             ===== VM run directory (kept): {}\n      console: {}\n      kernel log: {}\n      \
             commands: {}\n",
            tail(&dmesg, 80),
            path.display(),
            path.join("console.log").display(),
            path.join("kmsg.log").display(),
            path.join("commands.log").display(),
        );
    }
}

impl Drop for LinuxHost {
    fn drop(&mut self) {
        if thread::panicking() {
            self.report_failure();
        } else if std::env::var_os(env::KEEP).is_some() {
            let path = self.keep_run_dir();
            eprintln!("Linux host run directory kept: {}", path.display());
        }
        self.kill();
    }
}

/// Whether `CI` says we are in CI.
pub fn in_ci() -> bool {
    truthy(env::CI)
}

fn truthy(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// What a missing QEMU or kernel means for a `vm_*` test.
#[derive(Debug, PartialEq, Eq)]
enum SkipPolicy {
    /// The operator opted out: skip with a banner.
    Skip,
    /// Fail, for this reason.
    Fail(String),
}

fn skip_policy() -> SkipPolicy {
    decide_skip(truthy(env::SKIP_VM), in_ci())
}

fn decide_skip(opted_out: bool, ci: bool) -> SkipPolicy {
    match (opted_out, ci) {
        (true, false) => SkipPolicy::Skip,
        (true, true) => SkipPolicy::Fail(format!("{} is not honoured in CI", env::SKIP_VM)),
        (false, _) => SkipPolicy::Fail(format!(
            "or set {}=1 to skip the Linux-host tests on this machine",
            env::SKIP_VM
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves data that is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}

/// QEMU option values escape ',' by doubling it.
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// What QEMU spawns per forwarded guest connection to reach 127.0.0.1:<port>.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Relay {
    /// `ferrite-e2e-relay` (low latency: quick ACKs towards libslirp, no Nagle).
    Binary(PathBuf),
    /// socat, when the relay binary is not built (every multi-segment message waits ~40 ms).
    Socat,
}

impl Relay {
    /// `$FERRITE_E2E_RELAY`, else `ferrite-e2e-relay` in the running test's target directory,
    /// else socat.
    fn find() -> Result<Relay> {
        if let Some(path) = std::env::var_os(env::RELAY) {
            return Ok(Relay::Binary(PathBuf::from(path)));
        }
        let beside = std::env::current_exe().ok().and_then(|exe| {
            let dir = exe.parent()?;
            let dir = if dir.file_name()? == "deps" {
                dir.parent()?
            } else {
                dir
            };
            Some(dir.join("ferrite-e2e-relay"))
        });
        if let Some(path) = beside.filter(|p| p.is_file()) {
            return Ok(Relay::Binary(path));
        }
        if find_in_path("socat").is_some() {
            log::warn!("ferrite-e2e-relay not built: forwarding with socat (slow for NVMe/TCP)");
            return Ok(Relay::Socat);
        }
        Err(Error::Unavailable(
            "no ferrite-e2e-relay and no socat for port forwarding (tests/install-deps.sh)".into(),
        ))
    }
}

/// `-netdev user` with one guestfwd per port; each guest connection spawns a relay to the port
/// on loopback.
fn netdev_arg(ports: &[u16], run_dir: &Path, relay: &Relay) -> Result<String> {
    let dir = run_dir.display().to_string();
    let awkward = |s: &str| s.contains(['\'', '"', ' ', ',', '\\']);
    if awkward(&dir) {
        return Err(Error::Setup(format!(
            "run directory {dir:?} has awkward characters"
        )));
    }
    let mut arg = String::from("user,id=net0,restrict=on,net=10.0.2.0/24");
    let mut seen = Vec::new();
    for &port in ports {
        if seen.contains(&port) {
            continue;
        }
        seen.push(port);
        let cmd = match relay {
            Relay::Binary(path) => {
                let path = path.display().to_string();
                if awkward(&path) {
                    return Err(Error::Setup(format!(
                        "relay path {path:?} has awkward characters"
                    )));
                }
                format!("{path} 127.0.0.1 {port} {dir}/fwd-{port}.log")
            }
            // QEMU option values double commas.
            Relay::Socat => {
                format!("socat -lf {dir}/fwd-{port}.log STDIO TCP:127.0.0.1:{port},,nodelay")
            }
        };
        arg.push_str(&format!(",guestfwd=tcp:{TARGET_ADDR}:{port}-cmd:{cmd}"));
    }
    Ok(arg)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn find_qemu() -> Result<PathBuf> {
    if let Some(q) = std::env::var_os(env::QEMU) {
        let q = PathBuf::from(q);
        return if q.is_file() {
            Ok(q)
        } else {
            Err(Error::Unavailable(format!(
                "{} = {} does not exist",
                env::QEMU,
                q.display()
            )))
        };
    }
    find_in_path("qemu-system-x86_64").ok_or_else(|| {
        Error::Unavailable(
            "qemu-system-x86_64 not found (tests/install-deps.sh installs qemu-system-x86)".into(),
        )
    })
}

fn fresh_uuid() -> Result<String> {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io("read /proc/sys/kernel/random/uuid", e))
}

/// Accepts QEMU's connections to both chardev sockets, giving up if QEMU exits.
fn accept_both(
    agent: &UnixListener,
    kmsg: &UnixListener,
    child: &mut Child,
) -> std::result::Result<(UnixStream, UnixStream), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: [Option<UnixStream>; 2] = [None, None];
    for l in [agent, kmsg] {
        l.set_nonblocking(true)
            .map_err(|e| format!("cannot poll the chardev sockets: {e}"))?;
    }
    loop {
        for (slot, listener) in got.iter_mut().zip([agent, kmsg]) {
            if slot.is_none() {
                match listener.accept() {
                    Ok((s, _)) => *slot = Some(s),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("accept on a chardev socket: {e}")),
                }
            }
        }
        if got.iter().all(Option::is_some) {
            let [a, k] = got.map(|s| s.expect("both accepted, checked just above"));
            for s in [&a, &k] {
                s.set_nonblocking(false)
                    .map_err(|e| format!("chardev socket mode: {e}"))?;
            }
            return Ok((a, k));
        }
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("QEMU exited early ({status})")),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for QEMU: {e}")),
        }
        if Instant::now() > deadline {
            return Err("QEMU did not connect its chardev sockets within 30 s".into());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The cache directory: `$FERRITE_E2E_CACHE`, else `target/<profile>/ferrite-e2e-cache` next
/// to the running test binary, else the system temp dir.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(env::CACHE) {
        return PathBuf::from(dir);
    }
    let beside_target = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then(|| deps.parent().map(|p| p.join("ferrite-e2e-cache")))?
    });
    beside_target.unwrap_or_else(|| std::env::temp_dir().join("ferrite-e2e-cache"))
}

/// Builds (or finds in the cache) the kernel image to boot and the initramfs.
fn prepare_artifacts(kernel: &Kernel) -> Result<(PathBuf, PathBuf)> {
    // One builder per process; across processes the atomic renames keep the cache sound.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = lock(&BUILD);
    let dir = cache_dir();
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let boot_image = kernel.boot_image(&dir);
    let initrd = initramfs::build(&kernel.modules_dir, Path::new(initramfs::BUSYBOX), &dir)?;
    Ok((boot_image, initrd))
}

/// Writes a file via a unique temporary name and a rename, so readers never see a partial one.
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io(format!("temp file in {}", dir.display()), e))?;
    tmp.write_all(data)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("rename into {}", path.display()), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_prerequisites_skip_only_with_the_opt_out_outside_ci() {
        assert_eq!(decide_skip(true, false), SkipPolicy::Skip);
        for (opted_out, ci) in [(false, false), (false, true), (true, true)] {
            match decide_skip(opted_out, ci) {
                SkipPolicy::Fail(why) => assert!(why.contains("FERRITE_SKIP_VM"), "{why}"),
                SkipPolicy::Skip => panic!("skipped with opt-out {opted_out}, CI {ci}"),
            }
        }
    }

    #[test]
    fn netdev_forwards_each_port_once_over_loopback() {
        let relay = Relay::Binary(PathBuf::from("/t/ferrite-e2e-relay"));
        let dir = Path::new("/tmp/vm1");
        let arg = netdev_arg(&[4420, 8009, 4420], dir, &relay).expect("plain path");
        assert!(arg.starts_with("user,id=net0,restrict=on,"));
        assert_eq!(arg.matches("guestfwd=").count(), 2);
        assert!(arg.contains(
            "guestfwd=tcp:10.0.2.100:4420-cmd:/t/ferrite-e2e-relay 127.0.0.1 4420 \
             /tmp/vm1/fwd-4420.log,"
        ));
        let socat = netdev_arg(&[4420], dir, &Relay::Socat).expect("plain path");
        assert!(socat.ends_with(
            "guestfwd=tcp:10.0.2.100:4420-cmd:socat -lf /tmp/vm1/fwd-4420.log STDIO \
             TCP:127.0.0.1:4420,,nodelay"
        ));
        assert!(netdev_arg(&[1], Path::new("/tmp/a,b"), &relay).is_err());
        let spaced = Relay::Binary(PathBuf::from("/my dir/relay"));
        assert!(netdev_arg(&[1], dir, &spaced).is_err());
    }

    #[test]
    fn escapes_commas_for_qemu() {
        assert_eq!(qemu_escape(Path::new("/tmp/a,b/c")), "/tmp/a,,b/c");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a", 5), "a\n");
    }
}
