//! The `ferrite.storage` Ansible collection (`ansible/`) against a real `ferrited`:
//! `tests/ansible/run_playbooks.py` runs `site.yml` and `teardown.yml` with `ansible-playbook`
//! on this machine (connection: local). The appliance role installs and starts the `ferrited`
//! built here, the volumes role provisions it over JSON-RPC; a second run and `--check --diff`
//! report `changed=0`, a changed inventory changes exactly what changed, wrong variables fail
//! naming the variable with nothing applied, and teardown leaves nothing behind.
//!
//! It needs the virtual environment `tests/ansible/venv.sh` makes (`tests/install-deps.sh` runs
//! it); without one the test is skipped, except in CI (`CI=true`) where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferrite_e2e::linux_host::in_ci;

fn venv_python() -> PathBuf {
    let cache = std::env::var_os("FERRITE_ANSIBLE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferrite")
        });
    cache.join("ansible-venv/bin/python")
}

/// `ferritectl` beside `ferrited` (the appliance role installs both); built when missing.
fn ensure_ferritectl(bin_dir: &Path) {
    if bin_dir.join("ferritectl").is_file() {
        return;
    }
    let profile = bin_dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let target_dir = bin_dir.parent().expect("the binary directory has a parent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "ferrite-daemon",
        "--bin",
        "ferritectl",
    ])
    .arg("--target-dir")
    .arg(target_dir)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building ferritectl failed: {status}");
}

#[test]
fn ansible_playbooks_converge_are_idempotent_and_tear_down() {
    let python = venv_python();
    if !python.is_file() {
        assert!(
            !in_ci(),
            "no Ansible venv at {} in CI: tests/install-deps.sh must run tests/ansible/venv.sh",
            python.display()
        );
        eprintln!(
            "\n!!! SKIPPED: no Ansible venv at {}\n!!! Run tests/install-deps.sh (or tests/ansible/venv.sh) to run the Ansible collection test.\n",
            python.display()
        );
        return;
    }
    let ferrited = ferrite_e2e::ferrited::binary().expect("ferrited is built");
    let bin_dir = ferrited
        .parent()
        .expect("ferrited lives in a directory")
        .to_path_buf();
    ensure_ferritectl(&bin_dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible/run_playbooks.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .output()
        .expect("the playbook driver runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        out.status.success() && last.ends_with(" 0 failed"),
        "run_playbooks.py failed ({}): {last}",
        out.status
    );
}
