//! Running the `ferrite.storage` Ansible collection's test drivers (`tests/ansible/*.py`): the
//! virtual environment they need and the binaries the roles install.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::linux_host::in_ci;

/// The Python of the venv `tests/ansible/venv.sh` makes.
pub fn venv_python() -> PathBuf {
    let cache = std::env::var_os("FERRITE_ANSIBLE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferrite")
        });
    cache.join("ansible-venv/bin/python")
}

/// Builds `bin` of `package` into the target directory holding `bin_dir` when it is missing
/// there (a test binary may run before `cargo build --workspace --bins`).
pub fn ensure_binary(bin_dir: &Path, package: &str, bin: &str) {
    if bin_dir.join(bin).is_file() {
        return;
    }
    let profile = bin_dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let target_dir = bin_dir.parent().expect("the binary directory has a parent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
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
    assert!(status.success(), "building {bin} failed: {status}");
}

/// Runs `tests/ansible/<script> --bin-dir <ferrited's directory>` with the venv's Python after
/// building `binaries` ((package, bin) pairs) where missing, and asserts it passed: exit status
/// 0 and a last line ending " 0 failed". Without a venv the test is skipped, except in CI.
pub fn run_driver(script: &str, binaries: &[(&str, &str)]) {
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
    let ferrited = crate::ferrited::binary().expect("ferrited is built");
    let bin_dir = ferrited
        .parent()
        .expect("ferrited lives in a directory")
        .to_path_buf();
    for (package, bin) in binaries {
        ensure_binary(&bin_dir, package, bin);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("ansible")
        .join(script);
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
        "{} failed ({}): {last}",
        script.display(),
        out.status
    );
}
