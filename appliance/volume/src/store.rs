//! The metadata area on member 0: two checkpoint slots (A/B) and the log.
//!
//! A transaction is one framed record in the log, written and flushed before anything that
//! depends on it is published. When the log passes half full (or a record does not fit), a
//! full-state checkpoint goes into the older slot, is flushed, and the log restarts at its
//! beginning. Open = the newest valid checkpoint, then records with seq = last+1, +2, ...
//! until the first bad or missing one (a torn tail).

use crate::disk::Disks;
use crate::format::frame::{self, FrameKind};
use crate::format::label::MemberLabel;
use crate::format::META_BLOCK;
use crate::state::{decode_ops, encode_ops, Op, State};
use crate::VolumeError;

#[derive(Debug)]
pub(crate) struct Store {
    pool: [u8; 16],
    pool_name: String,
    slot_offset: u64,
    slot_size: u64,
    log_offset: u64,
    log_size: u64,
    /// Last sequence number written (record or checkpoint).
    pub seq: u64,
    /// Bytes of the log in use since the last checkpoint.
    log_used: u64,
    /// Slot holding the newest checkpoint (0 = A, 1 = B).
    newest_slot: u64,
    pub checkpoints: u64,
    pub records: u64,
}

/// What `load` found.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub state: State,
    pub store: Store,
}

impl Store {
    fn new(label: &MemberLabel) -> Self {
        Self {
            pool: label.pool_uuid,
            pool_name: label.pool_name.clone(),
            slot_offset: label.slot_offset,
            slot_size: label.slot_size,
            log_offset: label.log_offset,
            log_size: label.log_size,
            seq: 0,
            log_used: 0,
            newest_slot: 1,
            checkpoints: 0,
            records: 0,
        }
    }

    fn meta_err(&self, reason: String) -> VolumeError {
        VolumeError::Metadata {
            pool: self.pool_name.clone(),
            reason,
        }
    }

    /// Writes the first checkpoint of a new pool and invalidates slot B and the log head.
    pub async fn format(
        disks: &mut Disks,
        label: &MemberLabel,
        state: &State,
    ) -> Result<Store, VolumeError> {
        let mut s = Store::new(label);
        let zero = vec![0u8; META_BLOCK];
        disks.write(0, s.slot_offset + s.slot_size, &zero).await?;
        disks.write(0, s.log_offset, &zero).await?;
        s.checkpoint(disks, state).await?;
        Ok(s)
    }

    pub async fn load(
        disks: &mut Disks,
        label: &MemberLabel,
        total_clusters: u64,
    ) -> Result<Loaded, VolumeError> {
        let mut store = Store::new(label);
        let mut best: Option<(u64, u64, State)> = None;
        let mut problems = Vec::new();
        for slot in 0..2u64 {
            let at = store.slot_offset + slot * store.slot_size;
            match store
                .read_frame(disks, FrameKind::Checkpoint, at, store.slot_size)
                .await
            {
                Ok(Some((seq, payload))) => match State::decode(&payload, total_clusters) {
                    Ok(state) if best.as_ref().is_none_or(|b| seq > b.0) => {
                        best = Some((seq, slot, state));
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(format!("slot {slot}: {e}")),
                },
                Ok(None) => problems.push(format!("slot {slot}: no valid checkpoint")),
                Err(e) => return Err(e),
            }
        }
        let Some((seq, slot, mut state)) = best else {
            return Err(store.meta_err(format!("no valid checkpoint ({})", problems.join("; "))));
        };
        store.seq = seq;
        store.newest_slot = slot;
        // Replay the log.
        let mut replayed = 0;
        let mut pos = 0;
        while pos + META_BLOCK as u64 <= store.log_size {
            let Some((rseq, payload)) = store
                .read_frame(
                    disks,
                    FrameKind::Record,
                    store.log_offset + pos,
                    store.log_size - pos,
                )
                .await?
            else {
                break;
            };
            if rseq != store.seq + 1 {
                break;
            }
            let ops = decode_ops(&payload)
                .map_err(|e| store.meta_err(format!("log record {rseq}: {e}")))?;
            for op in &ops {
                state
                    .apply(op)
                    .map_err(|e| store.meta_err(format!("log record {rseq}: {e}")))?;
            }
            pos += frame::HEADER_LEN as u64 + payload.len() as u64;
            pos = crate::format::round_up_block(pos);
            store.seq = rseq;
            replayed += 1;
        }
        store.log_used = pos;
        log::info!(
            "pool {}: checkpoint {seq} (slot {}), {replayed} log records replayed",
            store.pool_name,
            if slot == 0 { "A" } else { "B" }
        );
        Ok(Loaded { state, store })
    }

    /// Reads a frame at `at`; `Ok(None)` when there is no valid one there.
    async fn read_frame(
        &self,
        disks: &mut Disks,
        kind: FrameKind,
        at: u64,
        room: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, VolumeError> {
        let head = disks.read(0, at, META_BLOCK as u64).await?;
        let total = match frame::peek(kind, &self.pool, &head, room) {
            Ok((_, total)) => total as u64,
            Err(_) => return Ok(None),
        };
        let bytes = if total > META_BLOCK as u64 {
            disks.read(0, at, total).await?
        } else {
            head
        };
        Ok(frame::decode(kind, &self.pool, &bytes)
            .ok()
            .map(|(seq, p)| (seq, p.to_vec())))
    }

    /// Appends one transaction durably (or a checkpoint covering it when it does not fit).
    /// `state` already has the ops applied.
    pub async fn append(
        &mut self,
        disks: &mut Disks,
        ops: &[Op],
        state: &State,
    ) -> Result<(), VolumeError> {
        if ops.is_empty() {
            return Ok(());
        }
        let payload = encode_ops(ops);
        let rec = frame::encode(FrameKind::Record, &self.pool, self.seq + 1, &payload);
        if self.log_used + rec.len() as u64 > self.log_size {
            return self.checkpoint(disks, state).await;
        }
        disks
            .write(0, self.log_offset + self.log_used, &rec)
            .await?;
        disks.flush(0).await?;
        self.seq += 1;
        self.records += 1;
        self.log_used += rec.len() as u64;
        if self.log_used > self.log_size / 2 {
            self.checkpoint(disks, state).await?;
        }
        Ok(())
    }

    /// Writes the whole state into the older slot, flushes, and restarts the log.
    pub async fn checkpoint(
        &mut self,
        disks: &mut Disks,
        state: &State,
    ) -> Result<(), VolumeError> {
        let payload = state.encode();
        let seq = self.seq + 1;
        let f = frame::encode(FrameKind::Checkpoint, &self.pool, seq, &payload);
        if f.len() as u64 > self.slot_size {
            return Err(VolumeError::MetadataFull {
                pool: self.pool_name.clone(),
                refs: state.refs,
                max: state.refs,
            });
        }
        let slot = 1 - self.newest_slot;
        disks
            .write(0, self.slot_offset + slot * self.slot_size, &f)
            .await?;
        disks.flush(0).await?;
        self.newest_slot = slot;
        self.seq = seq;
        self.log_used = 0;
        self.checkpoints += 1;
        Ok(())
    }
}
