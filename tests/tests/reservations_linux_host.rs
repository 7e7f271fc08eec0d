//! Persistent reservations against the stock Linux initiator: one guest connects to one
//! namespace as two hosts (two host NQNs and identifiers, multipath off so each has its own
//! block device) and drives `nvme resv-register/acquire/report/release`. An unregistered host is
//! refused, the other host's writes conflict while it reads, the state survives a ferrited
//! restart, a preempted host finds the notification in its Reservation Notification log.

use std::time::Duration;

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{CmdOutput, HostOptions, LinuxHost};
use ferrite_e2e::managed::ManagedFerrited;
use serde_json::json;

const NQN: &str = "nqn.2026-01.io.ferrite:resv-e2e";
const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-00000000000a";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-00000000000b";
const ID_A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const ID_B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";

/// Connects as (`hostnqn`, `hostid`) and returns the namespace's block device.
fn connect(host: &LinuxHost, port: u16, hostnqn: &str, hostid: &str) -> String {
    host.run_ok_within(
        &format!(
            "nvme connect -t tcp -a {} -s {port} -n {NQN} --hostnqn={hostnqn} --hostid={hostid} \
             --reconnect-delay=1 --ctrl-loss-tmo=120",
            host.target_addr()
        ),
        Duration::from_secs(60),
    )
    .expect("nvme connect");
    let find = format!(
        "for i in $(seq 300); do for c in /sys/class/nvme/nvme*; do \
           [ \"$(cat $c/hostnqn)\" = {hostnqn} ] || continue; \
           for n in $c/nvme*n1; do [ -b /dev/$(basename $n) ] && basename $n && exit 0; done; \
         done; sleep 0.1; done; exit 1"
    );
    let name = host
        .run_ok_within(&find, Duration::from_secs(60))
        .expect("the host's namespace device");
    format!("/dev/{}", name.trim())
}

fn run(host: &LinuxHost, cmd: &str) -> CmdOutput {
    let out = host
        .run(cmd, Duration::from_secs(60))
        .expect("command runs");
    println!("$ {cmd}\n{}(status {})", out.stdout, out.status);
    out
}

fn ok(host: &LinuxHost, cmd: &str) -> String {
    let out = run(host, cmd);
    assert!(out.success(), "{cmd} failed: {}", out.stdout);
    out.stdout
}

fn conflict(host: &LinuxHost, cmd: &str) {
    let out = run(host, cmd);
    assert!(!out.success(), "{cmd} should have failed: {}", out.stdout);
    assert!(
        out.stdout
            .to_ascii_uppercase()
            .contains("RESERVATION_CONFLICT")
            || out.stdout.contains("Reservation Conflict"),
        "{cmd}: {}",
        out.stdout
    );
}

fn write_block(dev: &str) -> String {
    format!("dd if=/dev/urandom of={dev} bs=4096 count=1 oflag=direct")
}

fn read_block(dev: &str) -> String {
    format!("dd if={dev} of=/dev/null bs=4096 count=1 iflag=direct")
}

#[test]
fn vm_reservations_two_hosts_conflict_and_survive_restart() {
    // Each host connects through its own listener: nvme-cli refuses a second controller to
    // the same address and subsystem whatever the host NQN.
    let port = ferrited::free_port().expect("a free port");
    let mut port_b = ferrited::free_port().expect("a free port");
    while port_b == port {
        port_b = ferrited::free_port().expect("a free port");
    }
    let Some(host) = LinuxHost::boot_or_skip(HostOptions {
        forward_ports: vec![port, port_b],
        ..HostOptions::default()
    })
    .expect("the Linux host boots") else {
        return;
    };
    // Multipath off: each host's controller gets its own block device.
    host.run_ok("modprobe nvme_core multipath=N && modprobe nvme-tcp")
        .expect("nvme-tcp loads");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("ferrite.toml");
    std::fs::write(
        &config,
        format!(
            "cores = \"0\"\n[[bdev]]\nname = \"ram0\"\nkind = \"malloc\"\nsize = \"32MiB\"\n\
             block_size = 4096\n[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n\
             listen = [\"127.0.0.1:{port}\", \"127.0.0.1:{port_b}\"]\n\
             namespaces = [{{ nsid = 1, bdev = \"ram0\" }}]\n"
        ),
    )
    .expect("config");
    let mut target =
        ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
    let a = connect(&host, port, HOST_A, ID_A);
    let b = connect(&host, port_b, HOST_B, ID_B);
    assert_ne!(a, b);
    let idns = ok(&host, &format!("nvme id-ns {a} -o json"));
    assert!(idns.contains("\"rescap\":255"), "{idns}");

    // Bad input: a host that is not registered can neither acquire nor unregister.
    conflict(
        &host,
        &format!("nvme resv-acquire {b} --crkey=0xB --rtype=1 --racqa=0"),
    );
    conflict(
        &host,
        &format!("nvme resv-register {b} --crkey=0xB --rrega=1"),
    );

    ok(
        &host,
        &format!("nvme resv-register {a} --nrkey=0xA --rrega=0"),
    );
    ok(
        &host,
        &format!("nvme resv-register {b} --nrkey=0xB --rrega=0"),
    );
    // A wrong current key is a conflict too.
    conflict(
        &host,
        &format!("nvme resv-acquire {b} --crkey=0xC --rtype=1 --racqa=0"),
    );
    ok(
        &host,
        &format!("nvme resv-acquire {a} --crkey=0xA --rtype=1 --racqa=0"),
    );
    conflict(
        &host,
        &format!("nvme resv-acquire {b} --crkey=0xB --rtype=1 --racqa=0"),
    );
    let report = ok(&host, &format!("nvme resv-report {b} --eds -o json"));
    assert!(report.contains("\"rtype\":1"), "{report}");
    assert!(report.contains("\"regctl\":2"), "{report}");
    // The 64-bit host identifier form cannot describe fabrics hosts.
    let plain = run(&host, &format!("nvme resv-report {b}"));
    assert!(!plain.success(), "{}", plain.stdout);

    // Write Exclusive: B reads, B's writes conflict, A writes.
    ok(&host, &read_block(&b));
    let denied = run(&host, &write_block(&b));
    assert!(!denied.success(), "B's write must fail: {}", denied.stdout);
    ok(&host, &write_block(&a));
    let rpc = target.call("nvmf_ns_get_reservation", json!({"nqn": NQN, "nsid": 1}));
    assert_eq!(rpc["rtype"], 1, "{rpc}");
    assert_eq!(rpc["registrants"].as_array().expect("registrants").len(), 2);
    assert_eq!(rpc["holder"], ID_A, "{rpc}");

    // Restart: the reservation is still there when the hosts reconnect.
    target.stop().expect("clean stop");
    target
        .restart()
        .expect("ferrited restarts from its state directory");
    let rpc = target.call("nvmf_ns_get_reservation", json!({"nqn": NQN, "nsid": 1}));
    assert_eq!(rpc["holder"], ID_A, "after restart: {rpc}");
    host.run_ok_within(
        "for i in $(seq 600); do n=$(grep -l live /sys/class/nvme/nvme*/state | wc -l); \
         [ $n = 2 ] && exit 0; sleep 0.1; done; exit 1",
        Duration::from_secs(90),
    )
    .expect("both controllers reconnect");
    let report = ok(&host, &format!("nvme resv-report {a} --eds -o json"));
    assert!(report.contains("\"rtype\":1"), "after restart: {report}");
    let denied = run(&host, &write_block(&b));
    assert!(!denied.success(), "B still conflicts after the restart");

    // Release by the holder: B may write.
    ok(
        &host,
        &format!("nvme resv-release {a} --crkey=0xA --rtype=1 --rrela=0"),
    );
    ok(&host, &write_block(&b));

    // B takes Exclusive Access by preempting A's registration; A is told through its log.
    ok(
        &host,
        &format!("nvme resv-acquire {a} --crkey=0xA --rtype=1 --racqa=0"),
    );
    ok(
        &host,
        &format!("nvme resv-acquire {b} --crkey=0xB --prkey=0xA --rtype=2 --racqa=1"),
    );
    let ctrl_a = a.trim_end_matches("n1");
    let log = ok(
        &host,
        &format!("nvme get-log {ctrl_a} --log-id=0x80 --log-len=64 --raw-binary | od -An -tx1 -v"),
    );
    let bytes: Vec<&str> = log.split_whitespace().collect();
    assert_eq!(bytes.get(8), Some(&"01"), "Registration Preempted: {log}");
    assert_eq!(bytes.get(12), Some(&"01"), "NSID 1: {log}");
    let denied = run(&host, &read_block(&a));
    assert!(!denied.success(), "Exclusive Access: A cannot even read");
    ok(
        &host,
        &format!("nvme resv-release {b} --crkey=0xB --rrela=1"),
    );
    ok(&host, &read_block(&a));
    let rpc = target.call("nvmf_ns_get_reservation", json!({"nqn": NQN, "nsid": 1}));
    assert_eq!(rpc["rtype"], 0, "cleared: {rpc}");

    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
    target.stop().expect("clean stop");
    host.shutdown().expect("host shuts down");
}
