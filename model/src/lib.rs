//! Weft's workload model: the namespaces, pods and services a node agent needs, in the
//! shape the agent reads from `--local-config` today and the control plane will serve
//! later.
//!
//! [`Mesh::from_yaml`] parses and validates a document; [`MeshIndex`] answers the
//! questions the data path asks per connection (who owns this IP, which endpoints back
//! this VIP) without scanning.

mod index;
mod mesh;

pub use index::{Endpoint, MeshIndex, ServiceRef};
pub use mesh::{
    AMBIENT_LABEL, DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_NONE, Mesh, ModelError, Namespace, Pod, Service,
    ServicePort, is_pod_uid,
};
