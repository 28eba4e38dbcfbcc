//! `weftctl config-dump PROXY_ID`: the config weftd has given one proxy, type by type —
//! what it sent, less what the proxy rejected (a NACKed push is rolled back in weftd's
//! books, so a rejected type shows its sent version and the resources from before).
//!
//! ```text
//! proxy ztunnel-n1 (connection 4, delta)
//!
//! ADDRESS  type.googleapis.com/istio.workload.Address  sent 7  acked 7  2 resources
//! NAME                                          VERSION            SUMMARY
//! Kubernetes//Pod/bookinfo/reviews-v1           5c1e0f3b0a5d3e21   workload 10.1.1.2 on n1, HBONE, services [bookinfo/reviews.bookinfo.svc.cluster.local]
//! bookinfo/reviews.bookinfo.svc.cluster.local   0d4f9a7c61b2e803   service reviews.bookinfo.svc.cluster.local 198.19.0.10 ports 9080→9080
//! ```
//!
//! Each resource is decoded from its protobuf body for a one-line summary when its type is
//! one Weft serves (Envoy Cluster, Listener, RouteConfiguration, ClusterLoadAssignment;
//! Istio Address, Authorization); `--decode` prints the whole message (Rust `Debug` text)
//! under its name instead. `--output json` prints weftd's `/debug/config_dump` answer,
//! whose `value_base64` fields carry the bodies. Exits 0, or 2 when weftd cannot be asked
//! or does not know the proxy.

use crate::exit;
use crate::proxy_status::{short_name, table};
use crate::weftd::{self, Output, WeftdArgs};
use base64::Engine as _;
use clap::ValueEnum;
use envoy_types::pb::envoy::config::{
    cluster::v3::{Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType},
    core::v3::{Address as EnvoyAddress, address, envoy_internal_address, socket_address::PortSpecifier},
    endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier},
    listener::v3::{Listener, listener::ListenerSpecifier},
    route::v3::RouteConfiguration,
};
use prost::Message;
use serde::Deserialize;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use weft_xds::istio::{
    security::{Action, Authorization, Scope},
    workload::{Address, TunnelProtocol, address::Type as AddressType},
};
use weft_xds::type_url;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The proxy's id (its xDS `node.id`), as `weftctl proxy-status` lists it.
    pub proxy_id: String,
    #[command(flatten)]
    pub weftd: WeftdArgs,
    /// Only this resource type.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub kind: Option<Kind>,
    /// Print every resource decoded in full under its name, instead of a summary line.
    #[arg(long)]
    pub decode: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The resource types `--type` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Envoy clusters.
    Cds,
    /// Envoy listeners.
    Lds,
    /// Envoy route configurations.
    Rds,
    /// Envoy cluster load assignments.
    Eds,
    /// Istio workload API addresses (workloads and services).
    Address,
    /// Istio L4 authorization policies.
    Authz,
}

impl Kind {
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cds => type_url::CLUSTER,
            Kind::Lds => type_url::LISTENER,
            Kind::Rds => type_url::ROUTE,
            Kind::Eds => type_url::ENDPOINT,
            Kind::Address => type_url::ADDRESS,
            Kind::Authz => type_url::AUTHORIZATION,
        }
    }
}

/// weftd's `/debug/config_dump` answer (weft-xds' `ConfigDump`), as far as weftctl reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigDump {
    pub connection_id: u64,
    pub proxy_id: String,
    pub protocol: String,
    pub types: Vec<TypeDump>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TypeDump {
    pub type_url: String,
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub resources: Vec<DumpedResource>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DumpedResource {
    pub name: String,
    pub version: String,
    /// `None` when the proxy reported holding it on connect and weftd never sent it.
    pub value_base64: Option<String>,
}

pub fn run(mut args: Args) -> ExitCode {
    match args.weftd.resolve("config-dump") {
        Ok(url) => args.weftd.url = url,
        Err(code) => return code,
    }
    let path = format!("/debug/config_dump?proxy={}", weftd::encode_query_value(&args.proxy_id));
    let response = match weftd::get(&args.weftd.url, &path) {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            // 404 carries weftd's own hint: the ids that are connected.
            eprintln!("weftctl config-dump: {}", r.body.trim_end());
            return ExitCode::from(exit::USAGE);
        }
        Err(e) => {
            eprintln!("weftctl config-dump: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let only = args.kind.map(Kind::type_url);
    let text = match args.output {
        Output::Json if only.is_none() => response.body,
        Output::Json => match filter_json(&response.body, only) {
            Ok(text) => text,
            Err(e) => return unexpected(&e),
        },
        Output::Table => match serde_json::from_str::<ConfigDump>(&response.body) {
            Ok(dump) => render(&dump, only, args.decode),
            Err(e) => return unexpected(&e),
        },
    };
    weftd::print_answer(&text, "config-dump")
}

fn unexpected(e: &serde_json::Error) -> ExitCode {
    eprintln!(
        "weftctl config-dump: weftd's /debug/config_dump is not what this weftctl expects ({e}); \
         is weftctl as new as weftd? `--output json` without --type shows the raw answer"
    );
    ExitCode::from(exit::USAGE)
}

/// weftd's JSON with only the type `only` left in `types`.
fn filter_json(body: &str, only: Option<&str>) -> Result<String, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_str(body)?;
    if let (Some(only), Some(types)) = (only, value.get_mut("types").and_then(|t| t.as_array_mut())) {
        types.retain(|t| t.get("type_url").and_then(|u| u.as_str()) == Some(only));
    }
    serde_json::to_string_pretty(&value)
}

/// The text view: a heading per type, then a table of its resources (or, with `decode`,
/// each resource in full).
pub fn render(dump: &ConfigDump, only: Option<&str>, decode: bool) -> String {
    let mut out = format!("proxy {} (connection {}, {})\n", dump.proxy_id, dump.connection_id, dump.protocol);
    let types: Vec<&TypeDump> = dump.types.iter().filter(|t| only.is_none_or(|u| t.type_url == u)).collect();
    if types.is_empty() {
        match only {
            Some(u) => writeln!(out, "\nnothing of type {} was sent to this proxy", short_name(u)),
            None => writeln!(out, "\nthe proxy subscribed to nothing"),
        }
        .expect("writing to a String");
    }
    for t in types {
        let count = t.resources.len();
        let _ = writeln!(
            out,
            "\n{}  {}  sent {}  acked {}  {count} resource{}",
            short_name(&t.type_url),
            t.type_url,
            t.sent_version.as_deref().unwrap_or("-"),
            t.acked_version.as_deref().unwrap_or("-"),
            if count == 1 { "" } else { "s" },
        );
        if decode {
            for r in &t.resources {
                let _ = writeln!(out, "--- {} (version {})", r.name, r.version);
                let _ = writeln!(out, "{}", describe(&t.type_url, r, true));
            }
        } else if count > 0 {
            let mut rows = vec![vec!["NAME".to_owned(), "VERSION".to_owned(), "SUMMARY".to_owned()]];
            for r in &t.resources {
                rows.push(vec![r.name.clone(), r.version.clone(), describe(&t.type_url, r, false)]);
            }
            out.push_str(&table(&rows));
        }
    }
    out
}

/// A resource's summary line, or its whole decoded text (`full`).
fn describe(type_url: &str, r: &DumpedResource, full: bool) -> String {
    let Some(b64) = &r.value_base64 else {
        return "(held by the proxy since before it reconnected; weftd has not sent it)".into();
    };
    let bytes = match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(bytes) => bytes,
        Err(e) => return format!("(body is not base64: {e})"),
    };
    match Decoded::decode(type_url, &bytes) {
        Some(Ok(d)) if full => d.debug_text(),
        Some(Ok(d)) => d.summary(),
        Some(Err(e)) => format!("(cannot decode: {e})"),
        None if full => format!("({} bytes of a type weftctl does not decode)", bytes.len()),
        None => format!("{} bytes", bytes.len()),
    }
}

/// A resource of a type Weft serves, decoded.
#[derive(Debug)]
enum Decoded {
    Cluster(Box<Cluster>),
    Listener(Box<Listener>),
    Route(RouteConfiguration),
    Endpoints(ClusterLoadAssignment),
    Address(Address),
    Authorization(Authorization),
}

impl Decoded {
    /// `None` for a type weftctl does not know.
    fn decode(type_url: &str, bytes: &[u8]) -> Option<Result<Decoded, prost::DecodeError>> {
        Some(match type_url {
            type_url::CLUSTER => Cluster::decode(bytes).map(|m| Decoded::Cluster(Box::new(m))),
            type_url::LISTENER => Listener::decode(bytes).map(|m| Decoded::Listener(Box::new(m))),
            type_url::ROUTE => RouteConfiguration::decode(bytes).map(Decoded::Route),
            type_url::ENDPOINT => ClusterLoadAssignment::decode(bytes).map(Decoded::Endpoints),
            type_url::ADDRESS => Address::decode(bytes).map(Decoded::Address),
            type_url::AUTHORIZATION => Authorization::decode(bytes).map(Decoded::Authorization),
            _ => return None,
        })
    }

    fn debug_text(&self) -> String {
        match self {
            Decoded::Cluster(m) => format!("{m:#?}"),
            Decoded::Listener(m) => format!("{m:#?}"),
            Decoded::Route(m) => format!("{m:#?}"),
            Decoded::Endpoints(m) => format!("{m:#?}"),
            Decoded::Address(m) => format!("{m:#?}"),
            Decoded::Authorization(m) => format!("{m:#?}"),
        }
    }

    fn summary(&self) -> String {
        match self {
            Decoded::Cluster(c) => {
                let discovery = match &c.cluster_discovery_type {
                    Some(ClusterDiscoveryType::Type(t)) => {
                        DiscoveryType::try_from(*t).map_or("?", |t| t.as_str_name()).to_owned()
                    }
                    Some(ClusterDiscoveryType::ClusterType(custom)) => custom.name.clone(),
                    None => "STATIC".to_owned(),
                };
                format!("{discovery}, {}", c.lb_policy().as_str_name())
            }
            Decoded::Listener(l) => {
                let chains = l.filter_chains.len();
                // An internal listener (a waypoint's main_internal) has no address.
                let address = match (&l.address, &l.listener_specifier) {
                    (None, Some(ListenerSpecifier::InternalListener(_))) => "internal".to_owned(),
                    (a, _) => envoy_address(a.as_ref()),
                };
                format!("{address}, {chains} filter chain{}", plural(chains))
            }
            Decoded::Route(rc) => {
                let hosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
                let routes: usize = rc.virtual_hosts.iter().map(|v| v.routes.len()).sum();
                format!(
                    "{} virtual host{} ({}), {routes} route{}",
                    hosts.len(),
                    plural(hosts.len()),
                    hosts.join(", "),
                    plural(routes)
                )
            }
            Decoded::Endpoints(cla) => {
                let endpoints: Vec<String> = cla
                    .endpoints
                    .iter()
                    .flat_map(|l| &l.lb_endpoints)
                    .map(|e| match &e.host_identifier {
                        Some(HostIdentifier::Endpoint(ep)) => envoy_address(ep.address.as_ref()),
                        Some(HostIdentifier::EndpointName(name)) => name.clone(),
                        None => "?".to_owned(),
                    })
                    .collect();
                format!("{} endpoint{}: {}", endpoints.len(), plural(endpoints.len()), endpoints.join(", "))
            }
            Decoded::Address(a) => match &a.r#type {
                Some(AddressType::Workload(w)) => {
                    let ips: Vec<String> = w.addresses.iter().map(|b| ip(b)).collect();
                    let tunnel = TunnelProtocol::try_from(w.tunnel_protocol).map_or("?", |t| t.as_str_name());
                    let mut services: Vec<&str> = w.services.keys().map(String::as_str).collect();
                    services.sort_unstable();
                    let node = if w.node.is_empty() { "-" } else { &w.node };
                    format!(
                        "workload {} on {node}, {tunnel}, services [{}]",
                        ips.join(","),
                        services.join(", ")
                    )
                }
                Some(AddressType::Service(s)) => {
                    let vips: Vec<String> = s.addresses.iter().map(|a| ip(&a.address)).collect();
                    let ports: Vec<String> =
                        s.ports.iter().map(|p| format!("{}→{}", p.service_port, p.target_port)).collect();
                    format!("service {} {} ports {}", s.hostname, vips.join(","), ports.join(","))
                }
                None => "empty address".to_owned(),
            },
            Decoded::Authorization(p) => {
                let action = Action::try_from(p.action).map_or("?", |a| a.as_str_name());
                let scope = Scope::try_from(p.scope).map_or("?", |s| s.as_str_name());
                format!(
                    "{action}, {scope} in {}, {} rule{}",
                    p.namespace,
                    p.rules.len(),
                    plural(p.rules.len())
                )
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `ip:port` of an Envoy socket address.
fn envoy_address(a: Option<&EnvoyAddress>) -> String {
    match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(PortSpecifier::PortValue(port)) => format!("{}:{port}", s.address),
            Some(PortSpecifier::NamedPort(ref name)) => format!("{}:{name}", s.address),
            None => s.address.clone(),
        },
        Some(address::Address::Pipe(p)) => format!("unix:{}", p.path),
        // A waypoint's endpoint reached over HBONE: the pod's ip:port, via the internal
        // listener that tunnels to it.
        Some(address::Address::EnvoyInternalAddress(i)) => {
            let listener = match &i.address_name_specifier {
                Some(envoy_internal_address::AddressNameSpecifier::ServerListenerName(name)) => name.as_str(),
                None => "?",
            };
            if i.endpoint_id.is_empty() {
                format!("internal {listener}")
            } else {
                format!("{} via {listener}", i.endpoint_id)
            }
        }
        None => "no address".to_owned(),
    }
}

/// An address as the workload API carries it: 4 or 16 bytes.
fn ip(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => IpAddr::from(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).expect("4 bytes"))).to_string(),
        16 => IpAddr::from(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes"))).to_string(),
        n => format!("<{n} bytes>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
    use std::collections::HashMap;
    use weft_xds::istio::workload::{NetworkAddress, Port, PortList, Service, Workload};

    fn resource<M: Message>(name: &str, message: &M) -> DumpedResource {
        DumpedResource {
            name: name.into(),
            version: "abc".into(),
            value_base64: Some(base64::engine::general_purpose::STANDARD.encode(message.encode_to_vec())),
        }
    }

    fn dump(types: Vec<TypeDump>) -> ConfigDump {
        ConfigDump { connection_id: 4, proxy_id: "p".into(), protocol: "delta".into(), types }
    }

    fn addresses() -> TypeDump {
        let workload = Address {
            r#type: Some(AddressType::Workload(Workload {
                addresses: vec![vec![10, 1, 1, 2]],
                node: "n1".into(),
                tunnel_protocol: TunnelProtocol::Hbone as i32,
                services: HashMap::from([(
                    "bookinfo/reviews.bookinfo.svc.cluster.local".into(),
                    PortList { ports: vec![Port { service_port: 9080, target_port: 9080 }] },
                )]),
                ..Default::default()
            })),
        };
        let service = Address {
            r#type: Some(AddressType::Service(Service {
                hostname: "reviews.bookinfo.svc.cluster.local".into(),
                addresses: vec![NetworkAddress {
                    network: String::new(),
                    address: vec![198, 19, 0, 10],
                    length: None,
                }],
                ports: vec![Port { service_port: 9080, target_port: 9080 }],
                ..Default::default()
            })),
        };
        TypeDump {
            type_url: type_url::ADDRESS.into(),
            sent_version: Some("7".into()),
            acked_version: Some("6".into()),
            resources: vec![
                resource("Kubernetes//Pod/bookinfo/reviews-v1", &workload),
                resource("bookinfo/reviews.bookinfo.svc.cluster.local", &service),
            ],
        }
    }

    #[test]
    fn a_table_per_type_with_summaries() {
        let cluster = Cluster {
            name: "outbound|9080||reviews".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            lb_policy: LbPolicy::LeastRequest as i32,
            ..Default::default()
        };
        let clusters = TypeDump {
            type_url: type_url::CLUSTER.into(),
            sent_version: Some("7".into()),
            acked_version: Some("7".into()),
            resources: vec![
                resource("outbound|9080||reviews", &cluster),
                DumpedResource { name: "old".into(), version: "1".into(), value_base64: None },
            ],
        };
        let text = render(&dump(vec![addresses(), clusters]), None, false);
        let expected = "\
proxy p (connection 4, delta)

ADDRESS  type.googleapis.com/istio.workload.Address  sent 7  acked 6  2 resources
NAME                                          VERSION   SUMMARY
Kubernetes//Pod/bookinfo/reviews-v1           abc       workload 10.1.1.2 on n1, HBONE, services [bookinfo/reviews.bookinfo.svc.cluster.local]
bookinfo/reviews.bookinfo.svc.cluster.local   abc       service reviews.bookinfo.svc.cluster.local 198.19.0.10 ports 9080→9080

CDS  type.googleapis.com/envoy.config.cluster.v3.Cluster  sent 7  acked 7  2 resources
NAME                     VERSION   SUMMARY
outbound|9080||reviews   abc       EDS, LEAST_REQUEST
old                      1         (held by the proxy since before it reconnected; weftd has not sent it)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn type_filter_and_full_decoding() {
        let text = render(&dump(vec![addresses()]), Some(type_url::ADDRESS), true);
        assert!(text.contains("--- Kubernetes//Pod/bookinfo/reviews-v1 (version abc)\nAddress {"), "{text}");
        assert!(text.contains("node: \"n1\""), "{text}");
        let none = render(&dump(vec![addresses()]), Some(type_url::CLUSTER), false);
        assert!(none.ends_with("\nnothing of type CDS was sent to this proxy\n"), "{none}");
    }

    #[test]
    fn envoy_summaries() {
        use envoy_types::pb::envoy::config::core::v3::SocketAddress;
        use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
        use envoy_types::pb::envoy::config::listener::v3::FilterChain;
        use envoy_types::pb::envoy::config::route::v3::{Route, VirtualHost};
        let socket = |ip: &str, port| EnvoyAddress {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        };
        let summary = |type_url: &str, bytes: Vec<u8>| {
            let r = DumpedResource {
                name: "r".into(),
                version: "1".into(),
                value_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            };
            describe(type_url, &r, false)
        };
        let listener = Listener {
            address: Some(socket("0.0.0.0", 15080)),
            filter_chains: vec![FilterChain::default()],
            ..Default::default()
        };
        assert_eq!(summary(type_url::LISTENER, listener.encode_to_vec()), "0.0.0.0:15080, 1 filter chain");
        let routes = RouteConfiguration {
            virtual_hosts: vec![
                VirtualHost {
                    name: "a".into(),
                    routes: vec![Route::default(), Route::default()],
                    ..Default::default()
                },
                VirtualHost { name: "b".into(), routes: vec![Route::default()], ..Default::default() },
            ],
            ..Default::default()
        };
        assert_eq!(summary(type_url::ROUTE, routes.encode_to_vec()), "2 virtual hosts (a, b), 3 routes");
        let endpoint = |ip| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket(ip, 9080)),
                ..Default::default()
            })),
            ..Default::default()
        };
        let cla = ClusterLoadAssignment {
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            summary(type_url::ENDPOINT, cla.encode_to_vec()),
            "2 endpoints: 10.0.0.1:9080, 10.0.0.2:9080"
        );
        let policy = Authorization {
            namespace: "bookinfo".into(),
            scope: Scope::WorkloadSelector as i32,
            action: Action::Deny as i32,
            rules: vec![Default::default()],
            ..Default::default()
        };
        assert_eq!(
            summary(type_url::AUTHORIZATION, policy.encode_to_vec()),
            "DENY, WORKLOAD_SELECTOR in bookinfo, 1 rule"
        );
    }

    #[test]
    fn unknown_types_and_bad_bodies_are_described_not_fatal() {
        let r = DumpedResource { name: "x".into(), version: "1".into(), value_base64: Some("AAEC".into()) };
        assert_eq!(describe("type.googleapis.com/some.Other", &r, false), "3 bytes");
        let bad = DumpedResource { value_base64: Some("!!".into()), ..r.clone() };
        assert!(describe(type_url::ADDRESS, &bad, false).starts_with("(body is not base64"));
        let garbage = DumpedResource { value_base64: Some("/w==".into()), ..r };
        assert!(describe(type_url::ADDRESS, &garbage, false).starts_with("(cannot decode"));
    }

    #[test]
    fn json_filtered_by_type() {
        let body = r#"{"proxy_id":"p","types":[{"type_url":"a"},{"type_url":"b"}]}"#;
        let v: serde_json::Value = serde_json::from_str(&filter_json(body, Some("b")).unwrap()).unwrap();
        assert_eq!(v["types"], serde_json::json!([{ "type_url": "b" }]));
    }
}
