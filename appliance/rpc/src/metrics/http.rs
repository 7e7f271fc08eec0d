//! A minimal HTTP/1.x server for `GET /metrics`, on its own thread: one connection at a time
//! (Prometheus scrapes every few seconds), a bounded request head, a read timeout, and
//! `Connection: close` after each answer. Nothing here runs on a reactor.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;

use crate::appliance::Appliance;

/// Longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why a request head was refused (answered 400, 405 or 414/431).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HttpError {
    #[error("request head incomplete or longer than {MAX_HEAD} bytes")]
    Incomplete,
    #[error("malformed request line")]
    BadRequestLine,
    #[error("unsupported HTTP version")]
    Version,
    #[error("method {0} not allowed (GET or HEAD)")]
    Method(String),
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// GET or HEAD.
    pub head_only: bool,
    /// The path without its query string.
    pub path: String,
}

/// Parses the request line of `head` (bytes up to and including the blank line, or what was
/// read so far). Headers are not needed and not interpreted.
pub fn parse_request(head: &[u8]) -> Result<RequestLine, HttpError> {
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(HttpError::Incomplete)?;
    let line = std::str::from_utf8(&head[..end]).map_err(|_| HttpError::BadRequestLine)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::BadRequestLine);
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(HttpError::BadRequestLine);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::Version);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        other => return Err(HttpError::Method(other.to_string())),
    };
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(RequestLine { head_only, path })
}

/// The status, content type and body for a request head.
pub fn respond(head: &[u8], scrape: impl FnOnce() -> String) -> (u16, &'static str, String) {
    match parse_request(head) {
        Ok(r) if r.path == "/metrics" => (200, CONTENT_TYPE, scrape()),
        Ok(r) if r.path == "/" => (
            200,
            "text/plain; charset=utf-8",
            "ferrited: metrics at /metrics\n".into(),
        ),
        Ok(r) => (404, "text/plain", format!("no such path {}\n", r.path)),
        Err(e @ HttpError::Method(_)) => (405, "text/plain", format!("{e}\n")),
        Err(e) => (400, "text/plain", format!("{e}\n")),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    }
}

#[derive(Debug, Error)]
pub enum MetricsServerError {
    #[error("metrics endpoint {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(
        addr: SocketAddr,
        app: Arc<dyn Appliance>,
    ) -> Result<MetricsServer, MetricsServerError> {
        let bind = |source| MetricsServerError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(s) => {
                            if let Err(e) = serve(s, &*app) {
                                log::debug!("metrics client: {e}");
                            }
                        }
                        Err(e) => {
                            log::warn!("metrics accept: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
            .map_err(bind)?;
        log::info!("Prometheus metrics on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request head (until the blank line, MAX_HEAD bytes, or the timeout) and answers.
fn serve(mut s: TcpStream, app: &dyn Appliance) -> std::io::Result<()> {
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    head.truncate(MAX_HEAD);
    let head_only = parse_request(&head).is_ok_and(|r| r.head_only);
    let (status, ctype, body) = respond(&head, || super::render(app));
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    s.write_all(&out)?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let ok =
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").expect("must succeed");
        assert_eq!(ok.path, "/metrics");
        assert!(!ok.head_only);
        assert!(
            parse_request(b"HEAD / HTTP/1.0\r\n\r\n")
                .expect("must succeed")
                .head_only
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1"),
            Err(HttpError::Incomplete)
        );
        assert_eq!(
            parse_request(b"GET  /metrics HTTP/1.1\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(
            parse_request(b"get /metrics HTTP/1.1\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(
            parse_request(b"GET metrics HTTP/1.1\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/2\r\n"),
            Err(HttpError::Version)
        );
        assert_eq!(
            parse_request(b"\xff\xfe /x HTTP/1.1\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n"),
            Err(HttpError::Method("POST".into()))
        );
    }

    #[test]
    fn statuses() {
        let scrape = || "m 1\n".to_string();
        assert_eq!(respond(b"GET /metrics HTTP/1.1\r\n\r\n", scrape).0, 200);
        assert_eq!(respond(b"GET /nope HTTP/1.1\r\n\r\n", scrape).0, 404);
        assert_eq!(respond(b"DELETE /metrics HTTP/1.1\r\n\r\n", scrape).0, 405);
        assert_eq!(respond(b"garbage", scrape).0, 400);
    }
}
