//! What a transport hands to the NVMe layer and gets back, and the data-transfer decision for a
//! command (made here, at the controller edge, so transports never pick a status).

use ferrite_nvme::command::{PSDT_SGL_MPTR_CONTIGUOUS, PSDT_SGL_MPTR_SGL};
use ferrite_nvme::{Command, Completion, DataDirection, SglDescriptor, Status};
use ferrite_reactor::IoBuf;

use crate::{IN_CAPSULE_DATA_BYTES, MAX_TRANSFER_BYTES};

/// Limits of the queue a command arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// In-capsule data the queue accepts.
    pub in_capsule: u32,
    /// Largest data transfer of one command.
    pub max_transfer: u32,
    /// The transport moves data named by Keyed SGL Data Blocks (NVMe/RDMA) rather than by
    /// Transport SGL Data Blocks (NVMe/TCP).
    pub keyed_sgl: bool,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            in_capsule: IN_CAPSULE_DATA_BYTES,
            max_transfer: MAX_TRANSFER_BYTES,
            keyed_sgl: false,
        }
    }
}

/// How a command's data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlan {
    /// No data.
    None,
    /// `len` bytes arrived inside the command capsule.
    InCapsule { len: u32 },
    /// `len` bytes must be fetched from the host (R2T / H2CData) before execution.
    FromHost { len: u32 },
    /// Execution produces up to `len` bytes for the host (C2HData).
    ToHost { len: u32 },
}

impl DataPlan {
    pub fn len(&self) -> u32 {
        match *self {
            DataPlan::None => 0,
            DataPlan::InCapsule { len } | DataPlan::FromHost { len } | DataPlan::ToHost { len } => {
                len
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides the data transfer of `cmd` given `in_capsule_len` bytes of data that came with its
/// capsule. Errors are the status the command completes with, without being executed.
pub fn plan_data(
    cmd: &Command,
    in_capsule_len: u32,
    limits: &TransportLimits,
) -> Result<DataPlan, Status> {
    // Fabrics transports carry SGLs only (PSDT 01b or 10b; 00b is PRPs, 11b reserved).
    if !matches!(cmd.psdt(), PSDT_SGL_MPTR_CONTIGUOUS | PSDT_SGL_MPTR_SGL) {
        return Err(Status::INVALID_FIELD);
    }
    let sgl: &SglDescriptor = &cmd.dptr;
    let len = sgl.len();
    let direction = cmd.data_direction();
    match sgl.id {
        SglDescriptor::SGL_DATA_BLOCK_OFFSET => {
            if direction != DataDirection::HostToController {
                return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID);
            }
            if sgl.address.get() != 0 {
                return Err(Status::INVALID_SGL_OFFSET);
            }
            if len > limits.in_capsule || len != in_capsule_len {
                return Err(Status::DATA_SGL_LENGTH_INVALID);
            }
            Ok(if len == 0 {
                DataPlan::None
            } else {
                DataPlan::InCapsule { len }
            })
        }
        SglDescriptor::SGL_TRANSPORT_DATA_BLOCK if !limits.keyed_sgl => {
            transport_plan(direction, len, in_capsule_len, limits)
        }
        _ if limits.keyed_sgl => match ferrite_nvme::rdma::KeyedSgl::parse(sgl) {
            Some(keyed) => transport_plan(direction, keyed.len, in_capsule_len, limits),
            None => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
        },
        _ => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
    }
}

/// The plan of data the transport moves itself (R2T/C2H on TCP, RDMA READ/WRITE on RDMA).
fn transport_plan(
    direction: DataDirection,
    len: u32,
    in_capsule_len: u32,
    limits: &TransportLimits,
) -> Result<DataPlan, Status> {
    if in_capsule_len != 0 || len > limits.max_transfer {
        return Err(Status::DATA_SGL_LENGTH_INVALID);
    }
    Ok(match direction {
        _ if len == 0 => DataPlan::None,
        DataDirection::HostToController => DataPlan::FromHost { len },
        DataDirection::ControllerToHost => DataPlan::ToHost { len },
        DataDirection::None => DataPlan::None,
        DataDirection::Bidirectional => return Err(Status::INVALID_FIELD),
    })
}

/// One command handed to the NVMe layer, with its data buffer when the plan has one (filled
/// for `InCapsule`/`FromHost`, empty with room for `len` bytes for `ToHost`).
#[derive(Debug)]
pub struct Request {
    /// The transport's slot for this command, echoed in the response.
    pub slot: u16,
    pub cmd: Command,
    pub plan: DataPlan,
    pub buf: Option<IoBuf>,
}

/// A command's outcome. `buf` carries data for the host (`data_len` bytes) when the command read
/// something; otherwise the buffer has already been returned to the pool.
#[derive(Debug)]
pub struct Response {
    pub slot: u16,
    pub cqe: Completion,
    pub buf: Option<IoBuf>,
    pub data_len: u32,
    /// The transport may fold the completion into the last data PDU (NVMe/TCP C2H SUCCESS
    /// flag): the command succeeded and the queue has SQ flow control disabled.
    pub may_elide_completion: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_nvme::command::opcode::io;

    fn cmd(opcode: u8, sgl: SglDescriptor) -> Command {
        let mut c = Command::new(opcode, 7);
        c.set_psdt(ferrite_nvme::command::PSDT_SGL_MPTR_CONTIGUOUS);
        c.dptr = sgl;
        c
    }

    #[test]
    fn in_capsule_writes_and_transport_reads() {
        let limits = TransportLimits::default();
        let w = cmd(io::WRITE, SglDescriptor::in_capsule(0, 4096));
        assert_eq!(
            plan_data(&w, 4096, &limits),
            Ok(DataPlan::InCapsule { len: 4096 })
        );
        let w = cmd(io::WRITE, SglDescriptor::transport(65536));
        assert_eq!(
            plan_data(&w, 0, &limits),
            Ok(DataPlan::FromHost { len: 65536 })
        );
        let r = cmd(io::READ, SglDescriptor::transport(131072));
        assert_eq!(
            plan_data(&r, 0, &limits),
            Ok(DataPlan::ToHost { len: 131072 })
        );
        let f = cmd(io::FLUSH, SglDescriptor::transport(0));
        assert_eq!(plan_data(&f, 0, &limits), Ok(DataPlan::None));
    }

    #[test]
    fn bad_sgls_get_their_statuses() {
        let limits = TransportLimits::default();
        let offset = cmd(io::WRITE, SglDescriptor::in_capsule(16, 512));
        assert_eq!(
            plan_data(&offset, 512, &limits),
            Err(Status::INVALID_SGL_OFFSET)
        );
        let short = cmd(io::WRITE, SglDescriptor::in_capsule(0, 1024));
        assert_eq!(
            plan_data(&short, 512, &limits),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        let too_big = cmd(io::WRITE, SglDescriptor::in_capsule(0, 16384));
        assert_eq!(
            plan_data(&too_big, 16384, &limits),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        let over_mdts = cmd(
            io::READ,
            SglDescriptor::transport(MAX_TRANSFER_BYTES + 4096),
        );
        assert_eq!(
            plan_data(&over_mdts, 0, &limits),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        let mut keyed = SglDescriptor::transport(4096);
        keyed.id = 0x40;
        assert_eq!(
            plan_data(&cmd(io::READ, keyed), 0, &limits),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
        let read_in_capsule = cmd(io::READ, SglDescriptor::in_capsule(0, 512));
        assert_eq!(
            plan_data(&read_in_capsule, 512, &limits),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
        let mut prp = cmd(io::READ, SglDescriptor::transport(4096));
        prp.flags = 0;
        assert_eq!(plan_data(&prp, 0, &limits), Err(Status::INVALID_FIELD));
        let mut reserved = cmd(io::READ, SglDescriptor::transport(4096));
        reserved.set_psdt(0b11);
        assert_eq!(plan_data(&reserved, 0, &limits), Err(Status::INVALID_FIELD));
        let rdma = TransportLimits {
            keyed_sgl: true,
            ..limits
        };
        let keyed = |len, invalidate| {
            ferrite_nvme::rdma::KeyedSgl {
                addr: 0x1000,
                len,
                key: 7,
                invalidate,
            }
            .descriptor()
        };
        assert_eq!(
            plan_data(&cmd(io::READ, keyed(8192, true)), 0, &rdma),
            Ok(DataPlan::ToHost { len: 8192 })
        );
        assert_eq!(
            plan_data(&cmd(io::WRITE, keyed(4096, false)), 0, &rdma),
            Ok(DataPlan::FromHost { len: 4096 })
        );
        assert_eq!(
            plan_data(
                &cmd(io::WRITE, keyed(MAX_TRANSFER_BYTES * 2, false)),
                0,
                &rdma
            ),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        assert_eq!(
            plan_data(&cmd(io::READ, SglDescriptor::transport(4096)), 0, &rdma),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
        assert_eq!(
            plan_data(
                &cmd(io::WRITE, SglDescriptor::in_capsule(0, 4096)),
                4096,
                &rdma
            ),
            Ok(DataPlan::InCapsule { len: 4096 })
        );
        let mut segment = cmd(io::READ, SglDescriptor::transport(4096));
        segment.set_psdt(PSDT_SGL_MPTR_SGL);
        assert_eq!(
            plan_data(&segment, 0, &limits),
            Ok(DataPlan::ToHost { len: 4096 })
        );
    }
}
