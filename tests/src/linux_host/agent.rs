//! Host side of the guest command agent (protocol in `agent.sh`).
//!
//! A reader thread turns the agent port's lines into [`AgentEvent`]s on a channel, so the caller
//! can wait with a deadline and a timed-out request's late answer is recognised by its id and
//! dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Error, Result};

const READY: &str = "@@FERRITE-READY@@";
const BEGIN: &str = "@@FERRITE-BEGIN ";
const END: &str = "@@FERRITE-END ";
const MARK_TAIL: &str = "@@";

/// How a guest command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this status (128 + signal when killed by one).
    Exited(i32),
    /// The guest-side watchdog killed it at the deadline.
    TimedOut,
    /// The agent could not decode the request.
    BadRequest,
}

/// What the agent said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The agent started and is waiting for requests.
    Ready,
    /// A request finished.
    Done {
        /// The request id echoed back.
        id: String,
        /// Exit status or failure.
        outcome: Outcome,
        /// Its stdout and stderr, merged.
        output: Vec<u8>,
    },
}

/// Parses the agent's line stream; feed it one line at a time.
#[derive(Debug, Default)]
pub struct Parser {
    current: Option<(String, String)>, // (id, base64 collected so far)
}

impl Parser {
    /// Consumes one line (without its newline); returns an event when one completes.
    pub fn line(&mut self, line: &str) -> Option<AgentEvent> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line == READY {
            self.current = None;
            return Some(AgentEvent::Ready);
        }
        if let Some(id) = line
            .strip_prefix(BEGIN)
            .and_then(|r| r.strip_suffix(MARK_TAIL))
        {
            self.current = Some((id.to_owned(), String::new()));
            return None;
        }
        if let Some(rest) = line
            .strip_prefix(END)
            .and_then(|r| r.strip_suffix(MARK_TAIL))
        {
            let (id, status) = rest.split_once(' ')?;
            let (begun, b64) = self.current.take()?;
            if begun != id {
                return None;
            }
            let outcome = match status {
                "timeout" => Outcome::TimedOut,
                "bad-request" => Outcome::BadRequest,
                s => Outcome::Exited(s.parse().ok()?),
            };
            let output = base64_decode(&b64)?;
            return Some(AgentEvent::Done {
                id: id.to_owned(),
                outcome,
                output,
            });
        }
        if let Some((_, b64)) = self.current.as_mut() {
            b64.push_str(line);
        }
        None
    }
}

/// The request line for a script.
pub fn request_line(id: &str, timeout: Duration, script: &str) -> String {
    // Round up so the guest never gives up before the caller's deadline.
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    format!(
        "{id} {} {}\n",
        secs.max(1),
        base64_encode(script.as_bytes())
    )
}

/// The writing half plus the event channel; callers serialise access (one request at a time).
#[derive(Debug)]
pub struct AgentChannel {
    stream: UnixStream,
    events: Receiver<AgentEvent>,
    next_id: u64,
}

impl AgentChannel {
    /// Starts the reader thread on `stream`.
    pub fn start(stream: UnixStream) -> Result<(AgentChannel, JoinHandle<()>)> {
        let reader = stream
            .try_clone()
            .map_err(|e| Error::io("clone agent socket", e))?;
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("e2e-agent-reader".into())
            .spawn(move || read_loop(reader, tx))
            .map_err(|e| Error::io("spawn agent reader", e))?;
        Ok((
            AgentChannel {
                stream,
                events: rx,
                next_id: 0,
            },
            handle,
        ))
    }

    /// Waits for the agent's start-up line.
    pub fn wait_ready(&mut self, deadline: Instant) -> Result<()> {
        loop {
            match self.next_event(deadline)? {
                AgentEvent::Ready => return Ok(()),
                AgentEvent::Done { .. } => continue,
            }
        }
    }

    /// Sends a script and waits for its answer until `deadline`. Returns the outcome and output.
    pub fn call(
        &mut self,
        script: &str,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(Outcome, Vec<u8>)> {
        self.next_id += 1;
        let id = format!("c{}", self.next_id);
        self.stream
            .write_all(request_line(&id, timeout, script).as_bytes())
            .map_err(|e| Error::Agent(format!("cannot send a request: {e}")))?;
        loop {
            match self.next_event(deadline)? {
                AgentEvent::Done {
                    id: got,
                    outcome,
                    output,
                } if got == id => return Ok((outcome, output)),
                // A late answer to an earlier, timed-out request.
                AgentEvent::Done { .. } => continue,
                AgentEvent::Ready => {
                    return Err(Error::Agent("the agent restarted mid-request".into()));
                }
            }
        }
    }

    fn next_event(&mut self, deadline: Instant) -> Result<AgentEvent> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(ev) => Ok(ev),
            Err(RecvTimeoutError::Timeout) => Err(Error::AgentTimeout),
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::Agent("the agent port closed (guest gone?)".into()))
            }
        }
    }

    /// Closes both directions, which ends the reader thread.
    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn read_loop(stream: UnixStream, tx: Sender<AgentEvent>) {
    let mut reader = BufReader::new(stream);
    let mut parser = Parser::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(ev) = parser.line(&String::from_utf8_lossy(&buf)) {
            if tx.send(ev).is_err() {
                return;
            }
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, no line breaks.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64, ignoring whitespace; `None` on any other invalid input.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    let mut padding = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => continue,
            _ => return None,
        };
        if padding > 0 {
            return None; // data after padding
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_all_lengths() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..40 {
            let enc = base64_encode(&data[..len]);
            assert_eq!(enc.len() % 4, 0);
            assert_eq!(base64_decode(&enc).as_deref(), Some(&data[..len]));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        // busybox wraps at 76 columns.
        assert_eq!(
            base64_decode("Zm9v\nYmFy\n").as_deref(),
            Some(&b"foobar"[..])
        );
        assert_eq!(base64_decode("Zm9v!"), None);
        assert_eq!(base64_decode("Zg==Zg=="), None);
    }

    #[test]
    fn parses_a_response_and_ignores_noise() {
        let mut p = Parser::default();
        assert_eq!(p.line("garbage before ready"), None);
        assert_eq!(p.line("@@FERRITE-READY@@\n"), Some(AgentEvent::Ready));
        assert_eq!(p.line("@@FERRITE-BEGIN c1@@"), None);
        assert_eq!(p.line(&base64_encode(b"hello\n")), None);
        assert_eq!(
            p.line("@@FERRITE-END c1 3@@"),
            Some(AgentEvent::Done {
                id: "c1".into(),
                outcome: Outcome::Exited(3),
                output: b"hello\n".to_vec()
            })
        );
        assert_eq!(p.line("@@FERRITE-BEGIN c2@@"), None);
        assert_eq!(
            p.line("@@FERRITE-END c2 timeout@@"),
            Some(AgentEvent::Done {
                id: "c2".into(),
                outcome: Outcome::TimedOut,
                output: vec![]
            })
        );
        // An END without its BEGIN is dropped.
        assert_eq!(p.line("@@FERRITE-END c3 0@@"), None);
    }

    #[test]
    fn output_cannot_forge_markers() {
        // A command printing a marker comes back base64-encoded, so it is data, not protocol.
        let forged = base64_encode(b"@@FERRITE-END c1 0@@\n");
        let mut p = Parser::default();
        p.line("@@FERRITE-BEGIN c1@@");
        assert_eq!(p.line(&forged), None);
        match p.line("@@FERRITE-END c1 1@@") {
            Some(AgentEvent::Done {
                outcome, output, ..
            }) => {
                assert_eq!(outcome, Outcome::Exited(1));
                assert_eq!(output, b"@@FERRITE-END c1 0@@\n");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn request_rounds_timeout_up() {
        let line = request_line("c7", Duration::from_millis(1500), "echo hi");
        assert_eq!(line, format!("c7 2 {}\n", base64_encode(b"echo hi")));
        assert!(request_line("c8", Duration::ZERO, "x").starts_with("c8 1 "));
    }
}
