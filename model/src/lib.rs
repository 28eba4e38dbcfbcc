//! Weft's workload model: what a node agent knows about the mesh.
//!
//! - [`workload`]: workloads and services typed from Istio's workload API
//!   (`istio.workload.Address`), every field that changes where a connection goes either
//!   carried or refused by name.
//! - [`state`]: [`WorkloadState`], the per-connection lookups (who owns this IP, which
//!   endpoint takes this VIP, where is this waypoint) without scanning or locking.
//! - [`table`]: [`AddressTable`], the resources held by name, each source's way in.
//! - [`mesh`]: the `--local-config` YAML (namespaces, pods, services), validated and
//!   translated into the same Addresses weftd sends, so both sources give one model.

pub mod mesh;
pub mod state;
pub mod table;
pub mod workload;

pub use mesh::{AMBIENT_LABEL, DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_NONE, Mesh, ModelError, is_pod_uid};
pub use state::{Upstream, WorkloadState};
pub use table::AddressTable;
pub use workload::{
    ConvertError, GatewayAddress, Membership, PortMapping, Resource, Service, TunnelProtocol, Vip, Workload,
};
