//! The guest kernel log, streamed from `/dev/kmsg` over its own virtio-serial port.
//!
//! Records look like `prio,seq,usec,flags;text` followed by optional ` KEY=value` lines. A
//! collector thread keeps them in memory (for [`super::LinuxHost::dmesg`]) and in `kmsg.log`,
//! so the log is available even when the agent is stuck.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::{Error, Result};

/// One kernel log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Syslog level, 0 (emerg) to 7 (debug).
    pub level: u8,
    /// Sequence number, unique per boot.
    pub seq: u64,
    /// Microseconds since boot.
    pub usec: u64,
    /// The message text (the kernel's `\xNN` escapes decoded).
    pub text: String,
}

impl Record {
    /// Parses a record header line; continuation lines (leading space) give `None`.
    pub fn parse(line: &str) -> Option<Record> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (header, text) = line.split_once(';')?;
        let mut fields = header.split(',');
        let prio: u32 = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let usec = fields.next()?.parse().ok()?;
        Some(Record {
            level: (prio & 7) as u8,
            seq,
            usec,
            text: unescape(text),
        })
    }

    /// `[   12.345678] text`, as dmesg prints it.
    pub fn format(&self) -> String {
        format!(
            "[{:5}.{:06}] {}",
            self.usec / 1_000_000,
            self.usec % 1_000_000,
            self.text
        )
    }
}

/// Decodes the `\xNN` escapes /dev/kmsg uses for non-printable bytes (and backslashes).
fn unescape(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            let hex = b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Records collected so far, deduplicated by sequence number.
#[derive(Debug, Default)]
pub struct KernelLog {
    records: Vec<Record>,
    last_seq: Option<u64>,
}

impl KernelLog {
    /// Adds a record unless it was already seen (the guest re-reads from the start after an
    /// overrun). Returns whether it was new.
    pub fn push(&mut self, r: Record) -> bool {
        if self.last_seq.is_some_and(|last| r.seq <= last) {
            return false;
        }
        self.last_seq = Some(r.seq);
        self.records.push(r);
        true
    }

    /// All records, formatted one per line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.records {
            out.push_str(&r.format());
            out.push('\n');
        }
        out
    }

    /// The records themselves.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

/// Starts the collector on `stream`, mirroring new records into `file`.
pub fn start(
    stream: UnixStream,
    mut file: File,
) -> Result<(Arc<Mutex<KernelLog>>, JoinHandle<()>)> {
    let log = Arc::new(Mutex::new(KernelLog::default()));
    let shared = Arc::clone(&log);
    let handle = thread::Builder::new()
        .name("e2e-kmsg-reader".into())
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let Some(rec) = Record::parse(&String::from_utf8_lossy(&buf)) else {
                    continue;
                };
                let line = rec.format();
                let new = match shared.lock() {
                    Ok(mut log) => log.push(rec),
                    Err(_) => return,
                };
                if new {
                    let _ = writeln!(file, "{line}");
                }
            }
        })
        .map_err(|e| Error::io("spawn kmsg reader", e))?;
    Ok((log, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_records() {
        let r = Record::parse("6,339,5140900,-;NET: Registered protocol family 10\n")
            .expect("a record");
        assert_eq!(r.level, 6);
        assert_eq!(r.seq, 339);
        assert_eq!(
            r.format(),
            "[    5.140900] NET: Registered protocol family 10"
        );
        // Facility bits above the level are masked off.
        assert_eq!(Record::parse("30,1,0,c;x").map(|r| r.level), Some(6));
        assert_eq!(Record::parse(" SUBSYSTEM=pci"), None);
        let r = Record::parse(r"3,2,0,-;ACPI: \x5c_SB_ a\x0ab \xZZ").expect("a record");
        assert_eq!(r.text, "ACPI: \\_SB_ a\nb \\xZZ");
        assert_eq!(Record::parse("garbage"), None);
    }

    #[test]
    fn drops_replayed_records() {
        let mut log = KernelLog::default();
        let rec = |seq| Record {
            level: 6,
            seq,
            usec: seq * 10,
            text: format!("m{seq}"),
        };
        assert!(log.push(rec(0)));
        assert!(log.push(rec(1)));
        assert!(!log.push(rec(0)), "replay after reopening /dev/kmsg");
        assert!(!log.push(rec(1)));
        assert!(log.push(rec(2)));
        assert_eq!(log.records().len(), 3);
        assert!(log.text().ends_with("m2\n"));
    }
}
