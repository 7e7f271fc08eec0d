//! NVMe/RDMA end to end on soft-RoCE: this machine has no RDMA NIC (and its kernel may lack
//! `rdma_rxe`), so the QEMU guest (Debian's kernel, which has `rdma_rxe` and `nvme-rdma`) puts
//! an rxe device on its network interface and runs both sides: `ferrited` from the shared root
//! with an RDMA listener, and the Linux `nvme-rdma` initiator against it.
//!
//! What this shows is function (the wire protocol Linux speaks, data integrity, connect and
//! disconnect handling), not RDMA speed: rxe is the kernel's software emulation of RoCE v2.

use std::time::Duration;

use ferrite_e2e::linux_host::{HostOptions, LinuxHost};

const NQN: &str = "nqn.2026-01.io.ferrite:rdma";
const PORT: u16 = 4420;
const GUEST_ADDR: &str = "10.0.2.15";

fn boot() -> Option<LinuxHost> {
    LinuxHost::boot_or_skip(HostOptions {
        forward_ports: Vec::new(),
        memory_mib: 1536,
        ..HostOptions::default()
    })
    .expect("the Linux host boots")
}

/// Loads soft-RoCE on the guest's eth0 and starts ferrited there with an RDMA listener (and a
/// TCP one beside it, for the same-guest comparison).
fn start_target(host: &LinuxHost) {
    let ferrited = ferrite_e2e::ferrited::binary().expect("ferrited is built");
    let setup = host
        .run_ok_within(
            "modprobe rdma_rxe && modprobe rdma_ucm && modprobe nvme-rdma && \
             rdma link add rxe0 type rxe netdev eth0 && ibv_devices && rdma link show",
            Duration::from_secs(60),
        )
        .expect("soft-RoCE comes up in the guest");
    assert!(setup.contains("rxe0"), "{setup}");
    let config = format!(
        r#"
listen = ["{GUEST_ADDR}:4421"]

[[listener]]
trtype = "rdma"
address = "{GUEST_ADDR}:{PORT}"

[[bdev]]
name = "ram0"
kind = "malloc"
size = "256MiB"
block_size = 4096

[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
namespaces = [{{ nsid = 1, bdev = "ram0" }}]
"#
    );
    host.write_file("/tmp/ferrite.toml", config.as_bytes())
        .expect("config written");
    host.run_ok_within(
        &format!(
            "RUST_LOG={} nohup {} --config /tmp/ferrite.toml --no-rpc --no-pin --cores 0 \
             > /tmp/ferrited.log 2>&1 &
             for i in $(seq 1 100); do grep -q 'NVMe/RDMA listening' /tmp/ferrited.log && exit 0; \
             sleep 0.2; done; cat /tmp/ferrited.log; exit 1",
            std::env::var("FERRITE_RDMA_LOG").unwrap_or_else(|_| "info".into()),
            ferrited.display()
        ),
        Duration::from_secs(60),
    )
    .expect("ferrited listens on RDMA in the guest");
}

fn log_of(host: &LinuxHost) -> String {
    host.run_ok("cat /tmp/ferrited.log").unwrap_or_default()
}

#[test]
fn vm_linux_nvme_rdma_host_against_ferrited_on_soft_roce() {
    let Some(host) = boot() else {
        return;
    };
    start_target(&host);

    // Discovery over RDMA lists the subsystem with its RDMA port.
    let disc = host
        .run_ok_within(
            &format!("nvme discover -t rdma -a {GUEST_ADDR} -s {PORT}"),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("discover: {e}\n{}", log_of(&host)));
    assert!(disc.contains(NQN), "{disc}");
    assert!(disc.contains("trtype:  rdma"), "{disc}");

    // Connect with two I/O queues, identify, a file system, fio with verification.
    let connect = format!("nvme connect -t rdma -a {GUEST_ADDR} -s {PORT} -n {NQN} -i 2 -k 15");
    host.run_ok_within(&connect, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("connect: {e}\n{}\n{}", log_of(&host), host.dmesg()));
    let dev = host
        .run_ok_within(
            "for i in $(seq 1 50); do d=$(nvme list | awk '/Ferrite/ {print $1; exit}'); \
             [ -n \"$d\" ] && echo $d && exit 0; sleep 0.2; done; exit 1",
            Duration::from_secs(30),
        )
        .expect("the namespace appears");
    let dev = dev.trim().to_string();
    let ctrl = host
        .run_ok(&format!(
            "nvme id-ctrl {dev} | grep -E '^(subnqn|sgls|mn) '"
        ))
        .expect("identify");
    assert!(ctrl.contains(NQN), "{ctrl}");
    let transport = host
        .run_ok("cat /sys/class/nvme/nvme*/transport")
        .expect("transport");
    assert!(transport.contains("rdma"), "{transport}");

    let fio = |bs: &str, size: &str| {
        format!(
            "fio --name=v{bs} --filename={dev} --ioengine=libaio --direct=1 --rw=randwrite \
             --bs={bs} --size={size} --iodepth=8 --numjobs=2 --offset_increment={size} \
             --verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting"
        )
    };
    for (bs, size) in [("4k", "8M"), ("1M", "32M")] {
        let out = host
            .run(&fio(bs, size), Duration::from_secs(600))
            .expect("fio runs");
        assert!(
            out.success() && !out.stdout.contains("verify:"),
            "fio {bs}: {}\n{}",
            out.stdout,
            log_of(&host)
        );
    }
    host.run_ok_within(
        &format!(
            "mkfs.ext4 -q -F {dev} && mkdir -p /mnt/r && mount {dev} /mnt/r && \
             head -c 8M /dev/urandom > /mnt/r/data && sha256sum /mnt/r/data > /tmp/sum && \
             umount /mnt/r"
        ),
        Duration::from_secs(180),
    )
    .expect("ext4 on NVMe/RDMA");

    // Keep-alive holds the idle association (KATO 15 s, generous for a guest under TCG on a
    // busy machine; idle for longer than that).
    std::thread::sleep(Duration::from_secs(20));
    let still = host.run_ok("nvme list").expect("nvme list");
    assert!(still.contains("Ferrite"), "{still}");

    // Disconnect and reconnect: the data is still there.
    host.run_ok_within(
        &format!("nvme disconnect -n {NQN}"),
        Duration::from_secs(60),
    )
    .expect("disconnect");
    host.run_ok_within(&connect, Duration::from_secs(60))
        .expect("reconnect");
    host.run_ok_within(
        "for i in $(seq 1 50); do d=$(nvme list | awk '/Ferrite/ {print $1; exit}'); \
         [ -n \"$d\" ] && mount $d /mnt/r && sha256sum -c /tmp/sum && umount /mnt/r && exit 0; \
         sleep 0.2; done; exit 1",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("data after reconnect: {e}\n{}", log_of(&host)));
    host.run_ok_within(
        &format!("nvme disconnect -n {NQN}"),
        Duration::from_secs(60),
    )
    .expect("disconnect");

    // An unknown subsystem is refused at Connect; a connect request without NVMe private data
    // (rping's) is rejected by the connection manager; the target serves on.
    let unknown = host
        .run(
            &format!(
                "nvme connect -t rdma -a {GUEST_ADDR} -s {PORT} -n nqn.2026-01.io.ferrite:nope"
            ),
            Duration::from_secs(60),
        )
        .expect("runs");
    assert!(!unknown.success(), "{}", unknown.stdout);
    let _ = host.run(
        &format!("rping -c -a {GUEST_ADDR} -p {PORT} -C 1 -v"),
        Duration::from_secs(20),
    );
    let log = log_of(&host);
    assert!(
        log.contains("NVMe/RDMA connect from") && log.contains("refused"),
        "{log}"
    );
    let again = host
        .run_ok_within(
            &format!("nvme discover -t rdma -a {GUEST_ADDR} -s {PORT}"),
            Duration::from_secs(60),
        )
        .expect("the target still serves");
    assert!(again.contains(NQN), "{again}");

    ferrite_initiator_over_rdma(&host);
    if let Ok(out) = std::env::var(BENCH_ENV) {
        bench(&host, std::path::Path::new(&out));
    }
    host.shutdown().expect("guest stops");
}

/// When set (to a file path on this machine), the test also runs the RDMA-vs-TCP benchmark of
/// `docs/bench/rdma.sh` in the guest and writes its report there. Off in the default run.
const BENCH_ENV: &str = "FERRITE_RDMA_BENCH";

/// Same guest, same target, same ferrite-perf load over NVMe/RDMA (port 4420) and NVMe/TCP
/// (port 4421): throughput, and the target process's CPU time (`perf stat -p`, counted for the
/// whole ferrite-perf run) per I/O.
fn bench(host: &LinuxHost, out: &std::path::Path) {
    let perf = ferrite_e2e::ferrited::perf_binary().expect("ferrite-perf is built");
    let secs = std::env::var("FERRITE_RDMA_BENCH_SECS").unwrap_or_else(|_| "10".into());
    // The TCP listener serves the subsystem too (listen = [...] adds it to every subsystem).
    let mut report = format!(
        "guest: {}\nkernel: {}\n",
        host.run_ok("nproc; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
            .unwrap_or_default()
            .replace('\n', " "),
        host.run_ok("uname -r").unwrap_or_default().trim()
    );
    for (name, port) in [("rdma", PORT), ("tcp", 4421)] {
        for (w, o) in [
            ("randread", "4k"),
            ("randwrite", "4k"),
            ("randread", "128k"),
        ] {
            let cmd = format!(
                "pid=$(pidof ferrited); perf stat -x, -e task-clock,cycles,instructions -p $pid \
                 -o /tmp/stat -- {} -r 'trtype:{name} traddr:{GUEST_ADDR} trsvcid:{port} \
                 subnqn:{NQN}' -w {w} -o {o} -q 16 --qpairs 1 -t {secs} --span 64m \
                 --no-progress --timeout 30 && cat /tmp/stat",
                perf.display()
            );
            let res = host
                .run(&cmd, Duration::from_secs(300))
                .expect("benchmark runs");
            assert!(res.success(), "bench {name} {w} {o}: {}", res.stdout);
            report.push_str(&format!("== {name} {w} {o} qd16\n{}\n", res.stdout.trim()));
        }
    }
    std::fs::write(out, report).expect("benchmark report written");
}

/// Ferrite's own initiator (`ferrite-host` through `ferrite-perf`) over NVMe/RDMA against the
/// same target: verified mixed I/O on two queues (4 KiB and 128 KiB, so both in-capsule writes
/// and keyed SGLs the target reads with RDMA READ), and an unknown subsystem refused by name.
fn ferrite_initiator_over_rdma(host: &LinuxHost) {
    let perf = ferrite_e2e::ferrited::perf_binary().expect("ferrite-perf is built");
    let rdma = format!("trtype:rdma traddr:{GUEST_ADDR} trsvcid:{PORT} subnqn:{NQN}");
    for size in ["4k", "128k"] {
        let out = host
            .run(
                &format!(
                    "{} -r '{rdma}' -w randrw -M 50 -o {size} -q 8 --qpairs 2 -t 2 \
                     --verify --span 64m --no-progress --timeout 30",
                    perf.display()
                ),
                Duration::from_secs(120),
            )
            .expect("ferrite-perf runs");
        assert!(
            out.success() && out.stdout.contains("verified blocks"),
            "ferrite-perf over RDMA ({size}): {}\n{}",
            out.stdout,
            log_of(host)
        );
    }
    let out = host
        .run(
            &format!(
                "{} -r 'trtype:rdma traddr:{GUEST_ADDR} trsvcid:{PORT} \
                 subnqn:nqn.2026-01.io.ferrite:nope' -t 1 --no-progress",
                perf.display()
            ),
            Duration::from_secs(60),
        )
        .expect("ferrite-perf runs");
    assert!(
        !out.success() && out.stdout.contains("Connect refused"),
        "unknown NQN over RDMA: {}",
        out.stdout
    );
}
