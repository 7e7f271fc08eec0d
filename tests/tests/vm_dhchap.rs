//! DH-HMAC-CHAP with the stock Linux initiator: secrets made by the guest's
//! `nvme gen-dhchap-key`, loaded into ferrited's keyring from 0600 files, `nvme connect
//! --dhchap-secret ... --dhchap-ctrl-secret ...` authenticates every queue and takes I/O, a wrong
//! host secret and a wrong controller secret are both refused, and writing a new secret to sysfs
//! re-authenticates a live controller.
//!
//! Debian's 6.1 kernel has no CONFIG_NVME_AUTH, so this test boots the 6.12 kernel that
//! `tests/install-deps.sh` stages in /usr/local/lib/ferrite-e2e (or `$FERRITE_E2E_AUTH_KERNEL`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};
use ferrite_e2e::managed::ManagedFerrited;
use serde_json::json;

const NQN: &str = "nqn.2026-01.io.ferrite:dhchap-e2e";
const MINUTE: Duration = Duration::from_secs(60);

/// The staged kernel with CONFIG_NVME_AUTH (a path that does not exist when none is staged:
/// the harness then fails, or skips under the explicit opt-out).
fn auth_kernel() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRITE_E2E_AUTH_KERNEL") {
        return PathBuf::from(p);
    }
    let dir = Path::new("/usr/local/lib/ferrite-e2e");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-6.12"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| dir.join("vmlinuz-6.12-missing-run-tests-install-deps.sh"))
}

fn key_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

fn connect_cmd(host: &LinuxHost, port: u16, secret: &str, ctrl: Option<&str>) -> String {
    let ctrl = ctrl.map_or(String::new(), |c| format!(" --dhchap-ctrl-secret={c}"));
    format!(
        "nvme connect -t tcp -a {} -s {port} -n {NQN} --dhchap-secret={secret}{ctrl} -k 60",
        host.target_addr()
    )
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn vm_dhchap_connect_with_secrets_and_refuse_wrong_ones() {
    let port = ferrited::free_port().expect("a free port");
    let Some(host) = LinuxHost::boot_or_skip(HostOptions {
        forward_ports: vec![port],
        kernel: Some(auth_kernel()),
        ..HostOptions::default()
    })
    .expect("the Linux host boots") else {
        return;
    };
    host.run_ok("modprobe nvme-tcp").expect("nvme-tcp loads");
    let hostnqn = host.hostnqn().to_string();
    // Secrets as the Linux tools make them: a SHA-256-transformed host key bound to the host
    // NQN, a SHA-384 controller key, and a spare one the target does not know.
    let gen = |args: &str| {
        host.run_ok(&format!("nvme gen-dhchap-key {args}"))
            .expect("nvme gen-dhchap-key")
            .trim()
            .to_string()
    };
    let host_key = gen(&format!("--hmac=1 --nqn={hostnqn}"));
    let ctrl_key = gen("--hmac=2 --key-length=48");
    let other_key = gen("--hmac=1 --key-length=32");
    assert!(host_key.starts_with("DHHC-1:01:"), "{host_key}");

    let dir = tempfile::tempdir().expect("tmp");
    let hk = key_file(dir.path(), "host.key", &host_key);
    let ck = key_file(dir.path(), "ctrl.key", &ctrl_key);
    let config = dir.path().join("ferrite.toml");
    std::fs::write(
        &config,
        format!(
            "cores = \"0\"\n\
             [[key]]\nname = \"host\"\npath = \"{}\"\n\
             [[key]]\nname = \"ctrl\"\npath = \"{}\"\n\
             [[bdev]]\nname = \"ram0\"\nkind = \"malloc\"\nsize = \"32MiB\"\nblock_size = 512\n\
             [[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = false\nhosts = [\"{hostnqn}\"]\n\
             host_keys = [{{ host = \"{hostnqn}\", dhchap_key = \"host\", dhchap_ctrlr_key = \"ctrl\" }}]\n\
             namespaces = [{{ nsid = 1, bdev = \"ram0\" }}]\n",
            hk.display(),
            ck.display()
        ),
    )
    .expect("config");
    let mut target =
        ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");

    // Bidirectional: both secrets right.
    host.run_ok_within(
        &connect_cmd(&host, port, &host_key, Some(&ctrl_key)),
        MINUTE,
    )
    .unwrap_or_else(|e| {
        panic!(
            "authenticated connect: {e}\n{}\n{}",
            host.dmesg(),
            target.log()
        )
    });
    host.run_ok_within(
        "for i in $(seq 300); do ls /dev/nvme*n1 >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1",
        MINUTE,
    )
    .expect("namespace appears");
    host.run_ok(
        "dd if=/dev/urandom of=/tmp/blk bs=4096 count=16 2>/dev/null && \
         dd if=/tmp/blk of=$(ls /dev/nvme*n1) bs=4096 oflag=direct 2>/dev/null && \
         cmp -n 65536 /tmp/blk $(ls /dev/nvme*n1)",
    )
    .expect("I/O on the authenticated controller");
    let log = target.log();
    let authenticated = count(&log, "authenticated (DH-HMAC-CHAP");
    assert!(
        authenticated >= 2,
        "admin and I/O queues authenticate:\n{log}"
    );

    // Re-authentication of the live controller: Linux re-runs the exchange when the host
    // secret is written to sysfs (the same secret here, so it must succeed).
    host.run_ok(&format!(
        "c=$(basename $(ls -d /sys/class/nvme/nvme* | head -1)); \
         echo '{host_key}' > /sys/class/nvme/$c/dhchap_secret; sleep 3; cat /sys/class/nvme/$c/state"
    ))
    .expect("re-authentication");
    let log = target.log();
    assert!(
        count(&log, "authenticated (DH-HMAC-CHAP") > authenticated,
        "re-authentication reached the target:\n{log}"
    );
    host.run_ok("dd if=$(ls /dev/nvme*n1) of=/dev/null bs=4096 count=16 iflag=direct 2>/dev/null")
        .expect("I/O after re-authentication");
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");

    // A wrong host secret is refused; so is a controller that cannot prove the expected key.
    let wrong = host
        .run(&connect_cmd(&host, port, &other_key, None), MINUTE)
        .expect("run nvme connect");
    assert!(
        !wrong.success(),
        "wrong host secret accepted: {}",
        wrong.stdout
    );
    assert!(
        target
            .log()
            .contains("host response does not match its key"),
        "{}",
        target.log()
    );
    let wrong_ctrl = host
        .run(
            &connect_cmd(&host, port, &host_key, Some(&other_key)),
            MINUTE,
        )
        .expect("run nvme connect");
    assert!(
        !wrong_ctrl.success(),
        "wrong controller secret accepted: {}",
        wrong_ctrl.stdout
    );
    let devices = host.run("ls /dev/nvme*n1", MINUTE).expect("ls");
    assert!(
        !devices.success(),
        "no namespace after refused connects: {}",
        devices.stdout
    );

    // One-way (no controller secret) is accepted too, after a key change over RPC.
    let ok = host
        .run(&connect_cmd(&host, port, &host_key, None), MINUTE)
        .expect("run nvme connect");
    assert!(
        ok.success(),
        "one-way connect: {}\n{}",
        ok.stdout,
        host.dmesg()
    );
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
    target.call(
        "nvmf_subsystem_set_keys",
        json!({"nqn": NQN, "host": hostnqn}),
    );
    target.stop().expect("ferrited stops");
    host.shutdown().expect("guest shuts down");
}
