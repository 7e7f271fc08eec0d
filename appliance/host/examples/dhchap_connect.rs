//! Connect-time cost of DH-HMAC-CHAP: connects (admin queue + I/O queues, enable, identify)
//! `count` times to a running target and prints the median and p90 in milliseconds.
//!
//! `cargo run -p ferrite-host --example dhchap_connect -- ADDR NQN HOST_UUID_BYTE COUNT IO_QUEUES
//! [HOST_KEY_FILE [CTRL_KEY_FILE]]` (docs/bench/dhchap-connect.sh drives it).

use std::time::{Duration, Instant};

use ferrite_auth::DhchapKey;
use ferrite_host::{ConnectOptions, Controller, DhchapSecrets};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        return Err(
            "usage: ADDR NQN HOST_UUID_BYTE COUNT IO_QUEUES [HOST_KEY_FILE [CTRL_KEY_FILE]]".into(),
        );
    }
    let addr = args[0].parse()?;
    let mut uuid = [0x42u8; 16];
    uuid[15] = args[2].parse()?;
    let count: usize = args[3].parse()?;
    let key = |i: usize| -> Result<Option<DhchapKey>, Box<dyn std::error::Error>> {
        args.get(i)
            .map(|p| Ok(DhchapKey::parse(&std::fs::read_to_string(p)?)?))
            .transpose()
    };
    let secrets = key(5)?.map(|host| DhchapSecrets { host, ctrl: None });
    let secrets = match (secrets, key(6)?) {
        (Some(mut s), ctrl) => {
            s.ctrl = ctrl;
            Some(s)
        }
        (None, _) => None,
    };
    let mut times: Vec<Duration> = Vec::with_capacity(count);
    for _ in 0..count {
        let mut o = ConnectOptions::new(addr, args[1].clone()).with_host_uuid(uuid);
        o.io_queues = args[4].parse()?;
        o.dhchap = secrets.clone();
        let t = Instant::now();
        let c = Controller::connect(o)?;
        times.push(t.elapsed());
        c.disconnect();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "median {:.2} ms  p90 {:.2} ms  (n={count})",
        ms(times[count / 2]),
        ms(times[count * 9 / 10])
    );
    Ok(())
}
