//! weft-waypoint: Weft's L7 proxy. It terminates HBONE, routes each request by the Envoy v3
//! RouteConfiguration weftd serves it, and carries it over HBONE to the chosen endpoint.
//!
//! `route` is the pure part: the compiled route table and the per-request decisions it
//! makes (virtual host, route, cluster, rewrites, redirects, header mutations).

#![forbid(unsafe_code)]

pub mod route;
