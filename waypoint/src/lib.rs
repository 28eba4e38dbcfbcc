//! weft-waypoint: Weft's own L7 proxy. It terminates HBONE (HTTP/2 CONNECT over mTLS on
//! 15008), dispatches each CONNECT by the service address the client dialled, routes the
//! HTTP requests inside by the Envoy v3 resources weftd serves it over ADS (CONTRACT.md:
//! Istio's waypoint shape), and carries each request over HBONE to the chosen pod. The
//! same binary is the ingress and egress gateway (`--proxy-type router`): plain HTTP in on
//! the `gateway_<port>` listeners, the same routes and upstreams.
//!
//! | module | holds |
//! |---|---|
//! | `config` | the command line |
//! | `app` | wiring: certificate, ADS client, listeners, shutdown |
//! | `identity` | the waypoint's certificate: CSR to the CA, renewed at half life |
//! | `xds` | the ADS client; listeners, clusters, routes and endpoints compiled, refused by name |
//! | `snapshot` | the compiled configuration in force, swapped atomically |
//! | `inbound` | HBONE termination, CONNECT dispatch, HTTP and TCP chains |
//! | `gateway` | a gateway's way in: a plain-HTTP socket per `gateway_<port>` listener, bound and closed as LDS says |
//! | `proxy` | **the request path, phase by phase** |
//! | `mirror` | request mirroring: fire-and-forget copies with the "-shadow" host |
//! | `rbac` | authorization: the chain's RBAC filters and a route's override |
//! | `route` | the route engine: RouteConfiguration compiled, a route chosen per request |
//! | `retry` | retry conditions and timeouts of a request |
//! | `upstream` | clusters, endpoints, load balancers, HTTP connections over HBONE |
//! | `body` | request and response bodies (streamed; a copy only for retries) |
//! | `error` | why a request failed: origin, retry condition, status, response flag |
//! | `admin`, `metrics` | `/ready`, `/config_dump`, `/stats/prometheus` (Istio's request metrics) |
//! | `access_log` | one JSON line per request on stdout (`--access-log`) |
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod inbound;
pub mod metrics;
pub mod mirror;
pub mod proxy;
pub mod rbac;
pub mod retry;
pub mod route;
pub mod snapshot;
pub mod state;
pub mod upstream;
pub mod xds;
