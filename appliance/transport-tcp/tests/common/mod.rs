//! An in-process NVMe/TCP target for the transport's own tests: a reactor runtime, one malloc
//! bdev exported as namespace 1 of [`NQN`] to any host, and the TCP transport on 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrite_bdev::MallocBdev;
use ferrite_host::controller::uuid_hostnqn;
use ferrite_host::{ConnectOptions, Controller, RawConnection, RawEvent};
use ferrite_nvme::io::ReadWrite;
use ferrite_nvme::tcp::Digests;
use ferrite_nvme::{Command, Completion};
use ferrite_nvmf::{
    Listener, NamespaceParams, SubsystemParams, Target, TargetOptions, Transport, Trtype,
};
use ferrite_reactor::{Runtime, RuntimeConfig};
use ferrite_transport_tcp::{TcpOptions, TcpTransport};

pub const NQN: &str = "nqn.2026-01.io.ferrite:transport";
pub const BLOCK: usize = 512;
/// How long a test waits for any one answer.
pub const T: Duration = Duration::from_secs(10);

pub struct InProcess {
    pub runtime: Option<Runtime>,
    pub target: Arc<Target>,
    pub transport: TcpTransport,
    pub addr: SocketAddr,
}

impl InProcess {
    /// A target on `reactors` reactors of the testing configuration with a `blocks`-block disk.
    pub fn start(cfg: RuntimeConfig, blocks: u64) -> InProcess {
        let runtime = Runtime::start(cfg).expect("runtime");
        let target = Target::new(TargetOptions::default());
        let bdev = MallocBdev::new("ram0", blocks, BLOCK as u32).expect("malloc bdev");
        target.add_bdev("ram0", Arc::new(bdev)).expect("add bdev");
        target
            .create_subsystem(SubsystemParams {
                nqn: NQN.into(),
                serial: None,
                model: None,
                allow_any_host: true,
                max_namespaces: None,
            })
            .expect("subsystem");
        target
            .add_namespace(
                NQN,
                NamespaceParams {
                    bdev_name: "ram0".into(),
                    ..Default::default()
                },
            )
            .expect("namespace");
        let transport = TcpTransport::start(Arc::clone(&target), &runtime, TcpOptions::default())
            .expect("tcp transport");
        let addr = transport
            .listen("127.0.0.1:0".parse().expect("address"))
            .expect("listen");
        target
            .add_subsystem_listener(
                NQN,
                Listener {
                    trtype: Trtype::Tcp,
                    addr,
                },
            )
            .expect("subsystem listener");
        InProcess {
            runtime: Some(runtime),
            target,
            transport,
            addr,
        }
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(self.addr, NQN)
    }

    /// An enabled controller (admin queue only) for host `uuid`.
    pub fn controller(&self, uuid: [u8; 16]) -> Controller {
        let mut opts = self.options().with_host_uuid(uuid);
        opts.io_queues = 0;
        Controller::connect(opts).expect("admin queue connects")
    }

    /// A raw connection carrying I/O queue `qid` of `ctrl` (host `uuid`) with `digests`.
    pub fn raw_io_queue(
        &self,
        ctrl: &Controller,
        uuid: [u8; 16],
        qid: u16,
        digests: Digests,
    ) -> RawConnection {
        let mut r = RawConnection::connect(self.addr, T).expect("TCP connect");
        r.handshake(digests, T).expect("ICResp");
        let ev = r
            .send_connect(qid, 31, ctrl.cntlid(), NQN, &uuid_hostnqn(&uuid), uuid, T)
            .expect("send Connect");
        let cqe = completion(ev, 0);
        assert!(cqe.status().is_success(), "I/O Connect: {}", cqe.status());
        r
    }

    pub fn stop(mut self) {
        self.transport.shutdown();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown().expect("runtime shutdown");
        }
    }
}

/// A Read or Write of `blocks` at `slba` on namespace 1.
pub fn rw(op: u8, cid: u16, slba: u64, blocks: usize) -> Command {
    ReadWrite::blocks(1, slba, blocks as u32).to_command(op, cid)
}

/// The CQE in `ev`, checking its cid.
pub fn completion(ev: RawEvent, cid: u16) -> Completion {
    ev.completion_of(cid).unwrap_or_else(|e| panic!("{e}"))
}

/// A pattern unique to (`seed`, position).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9) ^ seed.wrapping_mul(0x85EB_CA6B)) as u8)
        .collect()
}
