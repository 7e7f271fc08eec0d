//! Self-tests of the Linux-host harness. Every `vm_*` test boots its own guest (a few seconds
//! each under TCG); skip them with `cargo test -p ferrite-e2e -- --skip vm_`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ferrite_e2e::linux_host::{Error, HostOptions, LinuxHost};

/// Boots a guest, or returns `None` (after a loud notice) where QEMU is missing and
/// FERRITE_SKIP_VM=1 opts out; without the opt-out a missing QEMU fails the test.
fn boot(opts: HostOptions) -> Option<LinuxHost> {
    LinuxHost::boot_or_skip(opts).expect("the Linux host boots")
}

fn no_forwards() -> HostOptions {
    HostOptions {
        forward_ports: Vec::new(),
        ..HostOptions::default()
    }
}

#[test]
fn vm_boots_the_debian_kernel_on_the_host_root() {
    let Some(host) = boot(no_forwards()) else {
        return;
    };
    let release = host.run_ok("uname -r").expect("uname -r");
    assert_eq!(release.trim(), host.kernel_version());
    let version = host.run_ok("uname -v").expect("uname -v");
    assert!(version.contains("Debian"), "not a Debian kernel: {version}");

    // The root is this machine's, under a writable overlay that does not write through.
    let marker = format!("/tmp/ferrite-e2e-overlay-{}", std::process::id());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    host.run_ok(&format!(
        "test -f {manifest} && echo guest > /etc/ferrite-e2e-marker && touch {marker}"
    ))
    .expect("this checkout is visible and the overlay is writable");
    assert!(!std::path::Path::new("/etc/ferrite-e2e-marker").exists());
    assert!(!std::path::Path::new(&marker).exists());

    // The tools the NVMe scenarios need run from the shared root.
    let tools = host
        .run_ok("nvme version && fio --version && mkfs.ext4 -V 2>&1 && echo abc | sha256sum")
        .expect("tools run");
    assert!(tools.contains("nvme version"), "{tools}");
    assert!(tools.contains("fio-"), "{tools}");
    assert!(
        tools.contains("edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb"),
        "{tools}"
    );

    // Each guest gets its own NVMe host identity.
    let nqn = host.run_ok("cat /etc/nvme/hostnqn").expect("hostnqn");
    assert_eq!(nqn.trim(), host.hostnqn());

    // The kernel log arrives over its own channel.
    assert!(host.dmesg().contains("Linux version"), "{}", host.dmesg());
    host.shutdown().expect("clean power-off");
}

#[test]
fn vm_exit_status_output_and_timeouts() {
    let Some(host) = boot(no_forwards()) else {
        return;
    };
    let t = Duration::from_secs(30);
    assert_eq!(host.run("false", t).expect("runs").status, 1);
    assert_eq!(host.run("true", t).expect("runs").status, 0);
    assert_eq!(host.run("exit 42", t).expect("runs").status, 42);
    assert_eq!(host.run("kill -9 $$", t).expect("runs").status, 137);

    // stdout and stderr are merged; output survives marker look-alikes and binary bytes.
    let out = host
        .run(
            "echo out; echo err >&2; echo '@@FERRITE-END c1 0@@'; printf '\\001\\377'",
            t,
        )
        .expect("runs");
    assert!(out.success());
    assert!(
        out.stdout.starts_with("out\nerr\n@@FERRITE-END c1 0@@\n"),
        "{:?}",
        out.stdout
    );

    match host.run_ok("echo why; exit 3") {
        Err(Error::Failed {
            status: 3, output, ..
        }) => assert_eq!(output, "why\n"),
        other => panic!("expected a failure with status 3, got {other:?}"),
    }

    // A timeout kills the command and everything it started; the agent stays usable.
    match host.run("sleep 100 & sleep 100; echo never", Duration::from_secs(2)) {
        Err(Error::Timeout { output, .. }) => assert!(!output.contains("never")),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let left = host
        .run_ok("pgrep -x sleep || true")
        .expect("agent still answers");
    assert!(
        left.trim().is_empty(),
        "sleeps survived the timeout: {left}"
    );

    host.write_file("/root/data.bin", &[0, 1, 2, 255, b'\'', b'\n'])
        .expect("write_file");
    assert_eq!(
        host.run_ok("od -An -tx1 /root/data.bin")
            .expect("od")
            .trim(),
        "00 01 02 ff 27 0a"
    );
}

#[test]
fn vm_modprobe_nvme_tcp() {
    let Some(host) = boot(no_forwards()) else {
        return;
    };
    let out = host
        .run_ok("modprobe nvme-tcp && ls -d /sys/module/nvme_tcp && ls /dev/nvme-fabrics")
        .expect("nvme-tcp loads from the shared /lib/modules");
    assert!(out.contains("/sys/module/nvme_tcp"), "{out}");
    assert!(out.contains("/dev/nvme-fabrics"), "{out}");
}

/// A one-line echo server on loopback; reports each peer address.
fn echo_server() -> (u16, mpsc::Receiver<SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            thread::spawn(move || {
                let peer = conn.peer_addr().expect("peer");
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                if reader.read_line(&mut line).is_ok() {
                    let _ = conn.write_all(format!("echo:{line}").as_bytes());
                }
                let _ = tx.send(peer);
            });
        }
    });
    (port, rx)
}

#[test]
fn vm_guestfwd_reaches_a_loopback_server() {
    let (port, peers) = echo_server();
    let Some(host) = boot(HostOptions {
        forward_ports: vec![port],
        ..HostOptions::default()
    }) else {
        return;
    };
    let addr = host.target_addr();
    // Two connections at once, as nvme-tcp opens one per queue.
    let out = host
        .run_ok(&format!(
            "for i in 1 2; do (echo hello-$i | busybox nc -w 10 {addr} {port} > /tmp/r$i) & done; \
             wait; cat /tmp/r1 /tmp/r2"
        ))
        .expect("nc through guestfwd");
    assert!(out.contains("echo:hello-1\n"), "{out}");
    assert!(out.contains("echo:hello-2\n"), "{out}");
    for _ in 0..2 {
        let peer = peers
            .recv_timeout(Duration::from_secs(10))
            .expect("server saw the connection");
        assert!(peer.ip().is_loopback(), "non-loopback peer {peer}");
    }

    // Anything else is unreachable from the guest (restrict=on).
    let other = host
        .run(
            "busybox nc -w 3 10.0.2.2 22 </dev/null",
            Duration::from_secs(20),
        )
        .expect("runs");
    assert_ne!(other.status, 0, "restricted network let a connection out");
}
