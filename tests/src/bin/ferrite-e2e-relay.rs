//! `ferrite-e2e-relay HOST PORT [LOGFILE]`: QEMU's guestfwd helper. QEMU (libslirp) spawns it once
//! per guest connection with stdin/stdout/stderr on one end of a loopback TCP pair; it relays
//! between that socket and HOST:PORT.
//!
//! Why not socat: libslirp's end of that pair has Nagle enabled, so when a guest message spans
//! two segments the second waits for an ACK that the relay's kernel delays by 40 ms. This
//! relay re-arms TCP_QUICKACK after every read (so ACKs go out at once) and sets TCP_NODELAY on
//! both of its sockets; NVMe/TCP request/response latency drops from ~45 ms to about 1 ms.
//!
//! Nothing may be written to stderr: it is the guest's connection. Errors go to LOGFILE.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::thread;

use rustix::net::sockopt;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let log_path = args.get(3).cloned();
    let log = |msg: &str| {
        if let Some(path) = &log_path {
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "relay {}: {msg}", std::process::id());
            }
        }
    };
    let (Some(host), Some(port)) = (args.get(1), args.get(2)) else {
        log("usage: ferrite-e2e-relay HOST PORT [LOGFILE]");
        return ExitCode::from(2);
    };
    let target = match TcpStream::connect(format!("{host}:{port}")) {
        Ok(s) => s,
        Err(e) => {
            log(&format!("connect {host}:{port}: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let _ = target.set_nodelay(true);
    let stdin = io::stdin();
    let guest = stdin.as_fd();
    // The guest side may be a pipe in manual runs; socket options are then best effort.
    let _ = sockopt::set_tcp_nodelay(guest, true);

    let Ok(mut to_guest_src) = target.try_clone() else {
        log("cannot clone the target socket");
        return ExitCode::FAILURE;
    };
    let guest_to_target = {
        let mut target = target;
        thread::spawn(move || {
            let stdin = io::stdin();
            let guest = stdin.as_fd();
            let r = pump_from_guest(guest, &mut target);
            let _ = target.shutdown(Shutdown::Write);
            r
        })
    };
    let r = pump_to_guest(&mut to_guest_src, guest);
    let _ = rustix::net::shutdown(guest, rustix::net::Shutdown::Write);
    if let Err(e) = r {
        log(&format!("target -> guest: {e}"));
    }
    match guest_to_target.join() {
        Ok(Err(e)) => log(&format!("guest -> target: {e}")),
        Err(_) => log("guest -> target thread panicked"),
        Ok(Ok(())) => {}
    }
    ExitCode::SUCCESS
}

fn pump_from_guest(guest: BorrowedFd<'_>, target: &mut TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match rustix::io::read(guest, &mut buf[..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        // Quick-ACK mode lapses; re-arm it so the sender's Nagle never waits on us.
        let _ = sockopt::set_tcp_quickack(guest, true);
        if n == 0 {
            return Ok(());
        }
        target.write_all(&buf[..n])?;
    }
}

fn pump_to_guest(target: &mut TcpStream, guest: BorrowedFd<'_>) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = target.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match rustix::io::write(guest, rest) {
                Ok(w) => rest = &rest[w..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
