//! ANA multipath against the stock Linux initiator: one subsystem on two listeners is one
//! native-multipath device with two paths; `nvme list-subsys` and sysfs show both paths and
//! their ANA states; setting the paths inaccessible in turn during `fio --verify` moves the I/O
//! with no error reaching fio. An unknown ANA state is refused over JSON-RPC.

use std::time::{Duration, Instant};

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};
use ferrite_e2e::managed::ManagedFerrited;
use serde_json::json;

const NQN: &str = "nqn.2026-01.io.ferrite:ana-e2e";

fn listen_address(port: u16) -> serde_json::Value {
    json!({"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()})
}

/// The ANA state the guest has for the path through `port` ("optimized", "inaccessible"...).
fn guest_path_state(host: &LinuxHost, port: u16) -> String {
    let cmd = format!(
        "for c in /sys/class/nvme/nvme*; do \
           grep -q 'trsvcid={port}' $c/address 2>/dev/null || continue; \
           cat $c/nvme*c*n1/ana_state; done"
    );
    host.run_ok(&cmd)
        .expect("read ana_state")
        .trim()
        .to_string()
}

fn wait_path_state(host: &LinuxHost, port: u16, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = guest_path_state(host, port);
        if state == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "path {port} is {state:?}, expected {want:?}\n{}",
            host.dmesg()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vm_ana_multipath_failover_under_fio_verify() {
    let p1 = ferrited::free_port().expect("port");
    let mut p2 = ferrited::free_port().expect("port");
    while p2 == p1 {
        p2 = ferrited::free_port().expect("port");
    }
    let Some(host) = LinuxHost::boot_or_skip(HostOptions {
        forward_ports: vec![p1, p2],
        ..HostOptions::default()
    })
    .expect("the Linux host boots") else {
        return;
    };
    host.run_ok("modprobe nvme-tcp").expect("nvme-tcp loads");
    let multipath = host
        .run_ok("cat /sys/module/nvme_core/parameters/multipath")
        .expect("multipath parameter");
    assert_eq!(
        multipath.trim(),
        "Y",
        "the guest kernel has native multipath"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("ferrite.toml");
    std::fs::write(
        &config,
        format!(
            "cores = \"0\"\n[[bdev]]\nname = \"ram0\"\nkind = \"malloc\"\nsize = \"64MiB\"\n\
             block_size = 4096\n[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n\
             listen = [\"127.0.0.1:{p1}\", \"127.0.0.1:{p2}\"]\n\
             namespaces = [{{ nsid = 1, bdev = \"ram0\" }}]\n"
        ),
    )
    .expect("config");
    let target = ManagedFerrited::start(dir.path(), p1, Some(&config)).expect("ferrited starts");

    // Bad input: an unknown state is refused, naming the accepted ones.
    let err = target
        .try_call(
            "nvmf_subsystem_listener_set_ana_state",
            json!({"nqn": NQN, "listen_address": listen_address(p1), "ana_state": "standby"}),
        )
        .expect_err("unknown ANA state");
    assert!(
        err.contains("standby") && err.contains("inaccessible"),
        "{err}"
    );

    for port in [p1, p2] {
        host.run_ok_within(
            &format!(
                "nvme connect -t tcp -a {} -s {port} -n {NQN}",
                host.target_addr()
            ),
            Duration::from_secs(60),
        )
        .expect("nvme connect");
    }
    // One multipath head, two paths, both optimized.
    let dev = host
        .run_ok_within(
            "for i in $(seq 300); do d=$(ls /dev/nvme*n1 2>/dev/null | grep -v c | head -1); \
             [ -n \"$d\" ] && echo $d && exit 0; sleep 0.1; done; exit 1",
            Duration::from_secs(60),
        )
        .expect("multipath device")
        .trim()
        .to_string();
    wait_path_state(&host, p1, "optimized");
    wait_path_state(&host, p2, "optimized");
    // With a namespace argument nvme-cli prints each path's ANA state.
    let subsys = host
        .run_ok(&format!("nvme list-subsys {dev}"))
        .expect("list-subsys");
    println!("{subsys}");
    assert!(subsys.contains(NQN), "{subsys}");
    for port in [p1, p2] {
        assert!(
            subsys.contains(&format!("trsvcid={port}")),
            "list-subsys shows the path through {port}: {subsys}"
        );
    }
    assert_eq!(
        subsys.matches("optimized").count(),
        2,
        "both paths optimized: {subsys}"
    );

    // fio with verification in the background while the paths go inaccessible in turn.
    host.write_file(
        "/root/verify.fio",
        format!(
            "[verify]\nfilename={dev}\ndirect=1\nioengine=libaio\nrw=randwrite\nbs=4k\n\
             iodepth=8\nsize=24M\nverify=crc32c\nverify_fatal=1\ndo_verify=1\n"
        )
        .as_bytes(),
    )
    .expect("job file");
    host.run_ok(
        "rm -f /tmp/fio.rc; setsid nohup bash -c 'fio --output-format=normal /root/verify.fio \
         > /tmp/fio.log 2>&1; echo $? > /tmp/fio.rc' >/dev/null 2>&1 &",
    )
    .expect("start fio");
    std::thread::sleep(Duration::from_secs(3));
    let set = |port: u16, state: &str| {
        target.call(
            "nvmf_subsystem_listener_set_ana_state",
            json!({"nqn": NQN, "listen_address": listen_address(port), "ana_state": state}),
        );
    };
    set(p1, "inaccessible");
    wait_path_state(&host, p1, "inaccessible");
    let listeners = target.call("nvmf_subsystem_get_listeners", json!({"nqn": NQN}));
    let states: Vec<String> = listeners
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            l["ana_states"][0]["ana_state"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        states.contains(&"inaccessible".to_string()) && states.contains(&"optimized".to_string()),
        "{listeners}"
    );
    let subsys = host
        .run_ok(&format!("nvme list-subsys {dev}"))
        .expect("list-subsys");
    println!("{subsys}");
    assert!(subsys.contains("inaccessible"), "{subsys}");
    std::thread::sleep(Duration::from_secs(3));
    // Fail over the other way: the first path back, the second one gone.
    set(p1, "optimized");
    set(p2, "inaccessible");
    wait_path_state(&host, p1, "optimized");
    wait_path_state(&host, p2, "inaccessible");
    std::thread::sleep(Duration::from_secs(3));
    set(p2, "optimized");

    let rc = host
        .run_ok_within(
            "for i in $(seq 1800); do [ -s /tmp/fio.rc ] && break; sleep 0.2; done; \
             cat /tmp/fio.log; echo RC=$(cat /tmp/fio.rc)",
            Duration::from_secs(420),
        )
        .expect("fio finishes");
    println!("{rc}");
    assert!(
        rc.contains("RC=0"),
        "fio --verify saw no error through the failovers: {rc}"
    );
    assert!(rc.contains("err= 0"), "{rc}");
    let dmesg = host.dmesg();
    assert!(
        !dmesg.contains("I/O error"),
        "no I/O error reached the block layer:\n{dmesg}"
    );
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
    drop(target);
    host.shutdown().expect("host shuts down");
}
