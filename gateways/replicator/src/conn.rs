//! A non-blocking framed connection: bytes in, gateway frames out.

use std::io::{ErrorKind, Read, Write};

use ferrite_gateway_protocol::{decode, frame_len, Message, ProtocolError};
use ferrite_link_crypto::{fresh_nonce, LinkError, Psk, Session, Side};

/// The pre-shared-key state of a connection (`ferrite_link_crypto`): our `Hello` nonce, then
/// the session once the peer's `Hello` arrived.
#[derive(Debug)]
struct Secure {
    psk: Psk,
    side: Side,
    nonce: [u8; 32],
    session: Option<Session>,
    /// Frames queued before the session existed, sealed when it does.
    pending: Vec<u8>,
}

/// Receive and send buffers over a non-blocking stream, sealed when a key is configured.
#[derive(Debug)]
pub(crate) struct Framed<S> {
    pub(crate) stream: S,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_off: usize,
    secure: Option<Secure>,
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
    #[error("peer authentication: {0}")]
    Auth(#[from] LinkError),
}

impl<S: Read + Write> Framed<S> {
    /// A connection, sealed with `psk` (as `side`) when one is configured.
    pub(crate) fn new(stream: S, psk: Option<(&Psk, Side)>) -> Framed<S> {
        Framed {
            stream,
            rx: Vec::with_capacity(1 << 16),
            tx: Vec::with_capacity(1 << 16),
            tx_off: 0,
            secure: psk.map(|(psk, side)| Secure {
                psk: psk.clone(),
                side,
                nonce: fresh_nonce(),
                session: None,
                pending: Vec::new(),
            }),
        }
    }

    /// The nonce our `Hello` must carry (zero on an unsealed connection).
    pub(crate) fn hello_nonce(&self) -> [u8; 32] {
        self.secure.as_ref().map_or([0; 32], |s| s.nonce)
    }

    /// Whether frames can flow (always on an unsealed connection; after the peer's `Hello` on
    /// a sealed one).
    pub(crate) fn established(&self) -> bool {
        self.secure.as_ref().is_none_or(|s| s.session.is_some())
    }

    /// Queues our `Hello`, in the clear.
    pub(crate) fn queue_hello(&mut self, m: &Message<'_>) -> Result<(), ProtocolError> {
        m.encode_to_vec(&mut self.tx).map(|_| ())
    }

    /// Queues a message.
    pub(crate) fn queue(&mut self, m: &Message<'_>) -> Result<(), ProtocolError> {
        let mut frame = Vec::new();
        m.encode_to_vec(&mut frame)?;
        self.queue_bytes(&frame);
        Ok(())
    }

    /// Queues an already encoded frame (sealed on a sealed connection; held until the session
    /// exists).
    pub(crate) fn queue_bytes(&mut self, frame: &[u8]) {
        match &mut self.secure {
            None => self.tx.extend_from_slice(frame),
            Some(Secure {
                session: Some(s), ..
            }) => {
                // Frames are far below the sealed limit and a connection never sends 2^64.
                if let Err(e) = s.seal(frame, &mut self.tx) {
                    log::error!("sealing a frame: {e}");
                }
            }
            Some(sec) => sec.pending.extend_from_slice(frame),
        }
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

    /// The next complete frame's bytes, removed from the receive buffer. On a sealed
    /// connection the first frame must be the peer's `Hello` (in the clear): its nonce and ours
    /// make the session, and every later frame must open under it.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ConnError> {
        if let Some(Secure {
            session: Some(s), ..
        }) = &mut self.secure
        {
            return match s.open(&self.rx)? {
                Some((plain, n)) => {
                    self.rx.drain(..n);
                    Ok(Some(plain))
                }
                None => Ok(None),
            };
        }
        let frame: Vec<u8> = match frame_len(&self.rx)? {
            Some(n) if self.rx.len() >= n => self.rx.drain(..n).collect(),
            _ => return Ok(None),
        };
        if let Some(sec) = &mut self.secure {
            let peer = match decode(&frame)? {
                Some((Message::Hello(h), _)) => h.nonce,
                _ => {
                    return Err(ConnError::Auth(LinkError::BadKey(
                        "the peer did not open with a Hello".into(),
                    )))
                }
            };
            let (np, ns) = match sec.side {
                Side::Primary => (sec.nonce, peer),
                Side::Secondary => (peer, sec.nonce),
            };
            let mut s = Session::new(&sec.psk, sec.side, &np, &ns);
            let pending = std::mem::take(&mut sec.pending);
            if !pending.is_empty() {
                let mut off = 0;
                while let Ok(Some(n)) = frame_len(&pending[off..]) {
                    s.seal(&pending[off..off + n], &mut self.tx)?;
                    off += n;
                }
            }
            sec.session = Some(s);
        }
        Ok(Some(frame))
    }
}
