//! `bdev_nvme_attach_controller` / `bdev_nvme_detach_controller`: NVMe controllers as bdevs,
//! dispatched on `trtype` (SPDK's parameter names). This file handles "pcie" (a local
//! controller over VFIO); other transports add their branch here.

use serde::Deserialize;
use serde_json::{json, Value};

use super::params;
use crate::appliance::Appliance;
use crate::protocol::RpcError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PcieAttach {
    name: String,
    #[allow(dead_code)] // dispatched on before decoding
    trtype: String,
    traddr: String,
}

pub(super) fn attach_controller(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let trtype = p
        .get("trtype")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("trtype is required (\"pcie\")"))?
        .to_ascii_lowercase();
    match trtype.as_str() {
        "pcie" => {
            let p: PcieAttach = params(p)?;
            Ok(json!(app.attach_nvme_pcie(&p.name, &p.traddr)?))
        }
        other => Err(RpcError::invalid_params(format!(
            "trtype {other:?} is not supported by bdev_nvme_attach_controller (\"pcie\")"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Detach {
    name: String,
}

pub(super) fn detach_controller(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Detach = params(p)?;
    app.detach_nvme_controller(&p.name)?;
    Ok(json!(true))
}
