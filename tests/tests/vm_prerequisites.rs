//! A machine without QEMU fails the `vm_*` tests unless the operator opts out with
//! `FERRITE_SKIP_VM=1` (and never in CI). Its own test binary: it changes environment variables.

use ferrite_e2e::linux_host::{env, HostOptions, LinuxHost};

#[test]
fn missing_qemu_fails_unless_opted_out() {
    let opts = HostOptions {
        forward_ports: Vec::new(),
        ..HostOptions::default()
    };
    let no_forwards = || opts.clone();
    std::env::set_var(env::QEMU, "/nonexistent/qemu-system-x86_64");
    std::env::remove_var(env::SKIP_VM);
    std::env::remove_var(env::CI);
    let e = LinuxHost::boot_or_skip(no_forwards()).expect_err("no QEMU, no opt-out: an error");
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/qemu-system-x86_64")
            && msg.contains("tests/install-deps.sh")
            && msg.contains("FERRITE_SKIP_VM=1"),
        "{msg}"
    );

    std::env::set_var(env::SKIP_VM, "1");
    let skipped = LinuxHost::boot_or_skip(no_forwards()).expect("opted out: a skip");
    assert!(skipped.is_none());

    std::env::set_var(env::CI, "true");
    let e = LinuxHost::boot_or_skip(no_forwards()).expect_err("CI refuses the opt-out");
    assert!(e.to_string().contains("not honoured in CI"), "{e}");
}
