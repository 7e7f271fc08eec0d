//! A non-blocking framed connection: bytes in, gateway frames out.

use std::io::{ErrorKind, Read, Write};

use ferrite_gateway_protocol::{frame_len, Message, ProtocolError};

/// Receive and send buffers over a non-blocking stream.
#[derive(Debug)]
pub(crate) struct Framed<S> {
    pub(crate) stream: S,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_off: usize,
}

/// What a read found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("connection closed by the peer")]
    Closed,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
}

impl<S: Read + Write> Framed<S> {
    pub(crate) fn new(stream: S) -> Framed<S> {
        Framed {
            stream,
            rx: Vec::with_capacity(1 << 16),
            tx: Vec::with_capacity(1 << 16),
            tx_off: 0,
        }
    }

    /// Queues a message.
    pub(crate) fn queue(&mut self, m: &Message<'_>) -> Result<(), ProtocolError> {
        m.encode_to_vec(&mut self.tx).map(|_| ())
    }

    /// Queues an already encoded frame.
    pub(crate) fn queue_bytes(&mut self, frame: &[u8]) {
        self.tx.extend_from_slice(frame);
    }

    /// Writes as much as the socket takes.
    pub(crate) fn flush(&mut self) -> Result<(), ConnError> {
        while self.tx_off < self.tx.len() {
            match self.stream.write(&self.tx[self.tx_off..]) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => self.tx_off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.tx_off == self.tx.len() {
            self.tx.clear();
            self.tx_off = 0;
        }
        Ok(())
    }

    /// Reads what the socket has (until it would block).
    pub(crate) fn fill(&mut self) -> Result<(), ConnError> {
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => self.rx.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next complete frame's bytes, removed from the receive buffer.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ConnError> {
        match frame_len(&self.rx)? {
            Some(n) if self.rx.len() >= n => Ok(Some(self.rx.drain(..n).collect())),
            _ => Ok(None),
        }
    }
}
