//! `weftctl proxy-status`: every proxy connected to weftd and how far it got with each
//! resource type, as `istioctl proxy-status` shows it.
//!
//! ```text
//! NAME                NODE       CDS       LDS       EDS       RDS            ADDRESS   AUTHZ     VERSION
//! waypoint.bookinfo   bookinfo   SYNCED    SYNCED    SYNCED    STALE (NACK)   IGNORED   IGNORED   8
//! ztunnel-n1          n1         IGNORED   IGNORED   IGNORED   IGNORED        SYNCED    SYNCED    8
//!
//! waypoint.bookinfo RDS NACK 8: unknown cluster outbound|9080|v3|reviews.bookinfo.svc.cluster.local
//! ```
//!
//! - SYNCED: the proxy acknowledged the latest version of what it should hold of the type;
//!   STALE: something was sent and not (yet) acknowledged, or the config moved on since;
//!   NOT SENT: subscribed, nothing sent yet; IGNORED: the proxy did not subscribe to it.
//!   `(NACK)` marks a STALE type whose last push the proxy rejected.
//! - NODE is the Kubernetes node a node agent runs on, or a waypoint's namespace.
//! - VERSION is the newest config version the proxy acknowledged for any type.
//! - Below the table, the last rejection of each type that has one, with the proxy's
//!   message (kept after later ACKs, so a NACK that was fixed since still shows).
//!
//! Reads `/debug/syncz`; `--output json` prints it as weftd sent it. Exits 0, or 2 when
//! weftd cannot be asked.

use crate::exit;
use crate::weftd::{self, Output, WeftdArgs};
use serde::Deserialize;
use std::process::ExitCode;
use weft_xds::type_url;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub weftd: WeftdArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The table's type columns, in istioctl's order, then Istio's workload API.
pub const COLUMNS: [(&str, &str); 6] = [
    ("CDS", type_url::CLUSTER),
    ("LDS", type_url::LISTENER),
    ("EDS", type_url::ENDPOINT),
    ("RDS", type_url::ROUTE),
    ("ADDRESS", type_url::ADDRESS),
    ("AUTHZ", type_url::AUTHORIZATION),
];

/// One entry of `/debug/syncz` (weft-xds' `ProxyStatus`), as far as the table needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct ProxyStatus {
    pub connection_id: u64,
    pub proxy_id: String,
    pub node_name: Option<String>,
    pub namespace: Option<String>,
    pub types: Vec<TypeStatus>,
}

/// A proxy's standing with one type (weft-xds' `TypeStatus`).
#[derive(Debug, Clone, Deserialize)]
pub struct TypeStatus {
    pub type_url: String,
    /// "SYNCED", "STALE" or "NOT SENT".
    pub state: String,
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Nack {
    pub version: String,
    pub message: String,
}

pub fn run(mut args: Args) -> ExitCode {
    match args.weftd.resolve("proxy-status") {
        Ok(url) => args.weftd.url = url,
        Err(code) => return code,
    }
    let response = match weftd::get(&args.weftd.url, "/debug/syncz") {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            eprintln!("weftctl proxy-status: weftd answered {}: {}", r.status, r.body.trim_end());
            return ExitCode::from(exit::USAGE);
        }
        Err(e) => {
            eprintln!("weftctl proxy-status: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let text = match args.output {
        Output::Json => response.body,
        Output::Table => match serde_json::from_str::<Vec<ProxyStatus>>(&response.body) {
            Ok(proxies) => {
                if proxies.is_empty() {
                    eprintln!("no proxies are connected to weftd at {}", args.weftd.url);
                }
                render(&proxies)
            }
            Err(e) => {
                eprintln!(
                    "weftctl proxy-status: weftd's /debug/syncz is not what this weftctl expects ({e}); \
                     is weftctl as new as weftd? `--output json` shows the raw answer"
                );
                return ExitCode::from(exit::USAGE);
            }
        },
    };
    weftd::print_answer(&text, "proxy-status")
}

/// The whole table view: the table, then one line per recorded NACK.
pub fn render(proxies: &[ProxyStatus]) -> String {
    let mut proxies: Vec<&ProxyStatus> = proxies.iter().collect();
    proxies.sort_by(|a, b| a.proxy_id.cmp(&b.proxy_id).then(a.connection_id.cmp(&b.connection_id)));

    let mut rows = vec![
        ["NAME", "NODE"]
            .into_iter()
            .chain(COLUMNS.iter().map(|(name, _)| *name))
            .chain(["VERSION"])
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    ];
    for p in &proxies {
        let mut row = vec![p.proxy_id.clone(), node(p).to_owned()];
        row.extend(COLUMNS.iter().map(|(_, url)| cell(p.types.iter().find(|t| t.type_url == *url))));
        row.push(acked_version(p).unwrap_or("-").to_owned());
        rows.push(row);
    }
    let mut out = table(&rows);

    let nacks: Vec<String> = proxies
        .iter()
        .flat_map(|p| {
            p.types.iter().filter_map(move |t| {
                let nack = t.last_nack.as_ref()?;
                let message = nack.message.trim();
                Some(format!("{} {} NACK {}: {message}", p.proxy_id, short_name(&t.type_url), nack.version))
            })
        })
        .collect();
    if !nacks.is_empty() {
        out.push('\n');
        for line in nacks {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The node of a node agent, else the namespace of a waypoint or gateway.
fn node(p: &ProxyStatus) -> &str {
    p.node_name.as_deref().or(p.namespace.as_deref()).unwrap_or("-")
}

/// One type column: the state, "(NACK)" when the pending push is a rejected one, and
/// IGNORED for types the proxy did not subscribe to (istioctl's word for it).
fn cell(t: Option<&TypeStatus>) -> String {
    let Some(t) = t else { return "IGNORED".into() };
    let rejected_pending = t.state != "SYNCED"
        && t.last_nack.as_ref().is_some_and(|n| t.sent_version.as_deref() == Some(n.version.as_str()));
    if rejected_pending { format!("{} (NACK)", t.state) } else { t.state.clone() }
}

/// The newest version the proxy acknowledged for any type. weftd's versions are config
/// generations (numbers); anything else is compared as text.
fn acked_version(p: &ProxyStatus) -> Option<&str> {
    p.types
        .iter()
        .filter_map(|t| t.acked_version.as_deref())
        .max_by_key(|v| (v.parse::<u64>().ok(), v.len(), *v))
}

/// The column name of a type URL, else SDS for secrets, else the message name.
pub fn short_name(type_url: &str) -> &str {
    if let Some((name, _)) = COLUMNS.iter().find(|(_, url)| *url == type_url) {
        return name;
    }
    if type_url == type_url::SECRET {
        return "SDS";
    }
    type_url.rsplit(['/', '.']).next().unwrap_or(type_url)
}

/// Left-aligned columns three spaces apart, no trailing blanks (as Go's tabwriter in
/// istioctl prints them).
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, value) in row.iter().enumerate() {
            line.push_str(value);
            let pad = widths[c] - value.chars().count() + 3;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(type_url: &str, state: &str, sent: Option<&str>, acked: Option<&str>) -> TypeStatus {
        TypeStatus {
            type_url: type_url.into(),
            state: state.into(),
            sent_version: sent.map(Into::into),
            acked_version: acked.map(Into::into),
            last_nack: None,
        }
    }

    fn proxy(id: &str, node: Option<&str>, ns: Option<&str>, types: Vec<TypeStatus>) -> ProxyStatus {
        ProxyStatus {
            connection_id: 1,
            proxy_id: id.into(),
            node_name: node.map(Into::into),
            namespace: ns.map(Into::into),
            types,
        }
    }

    #[test]
    fn table_pads_columns_and_trims_line_ends() {
        let rows = vec![
            vec!["NAME".to_owned(), "A".to_owned(), "B".to_owned()],
            vec!["x".to_owned(), "longer".to_owned(), "".to_owned()],
        ];
        assert_eq!(table(&rows), "NAME   A        B\nx      longer\n");
        assert_eq!(table(&[]), "");
    }

    #[test]
    fn agents_and_waypoints_side_by_side_sorted_by_name() {
        let agent = proxy(
            "ztunnel-n1",
            Some("n1"),
            Some("istio-system"),
            vec![
                status(type_url::ADDRESS, "SYNCED", Some("7"), Some("7")),
                status(type_url::AUTHORIZATION, "NOT SENT", None, None),
            ],
        );
        let mut route = status(type_url::ROUTE, "STALE", Some("8"), Some("6"));
        route.last_nack = Some(Nack { version: "8".into(), message: "bad weights\n".into() });
        let waypoint = proxy(
            "waypoint.bookinfo",
            None,
            Some("bookinfo"),
            vec![
                status(type_url::CLUSTER, "SYNCED", Some("8"), Some("8")),
                status(type_url::ENDPOINT, "STALE", Some("9"), None),
                status(type_url::LISTENER, "SYNCED", Some("3"), Some("3")),
                route,
            ],
        );
        let expected = "\
NAME                NODE       CDS       LDS       EDS       RDS            ADDRESS   AUTHZ      VERSION
waypoint.bookinfo   bookinfo   SYNCED    SYNCED    STALE     STALE (NACK)   IGNORED   IGNORED    8
ztunnel-n1          n1         IGNORED   IGNORED   IGNORED   IGNORED        SYNCED    NOT SENT   7

waypoint.bookinfo RDS NACK 8: bad weights
";
        assert_eq!(render(&[agent, waypoint]), expected);
    }

    #[test]
    fn a_nack_fixed_since_is_listed_but_not_marked() {
        let mut route = status(type_url::ROUTE, "SYNCED", Some("9"), Some("9"));
        route.last_nack = Some(Nack { version: "8".into(), message: "bad weights".into() });
        let p = proxy("w", None, None, vec![route]);
        let got = render(&[p]);
        assert!(got.lines().nth(1).unwrap().contains("SYNCED"), "{got}");
        assert!(!got.contains("(NACK)"), "{got}");
        assert!(got.ends_with("\nw RDS NACK 8: bad weights\n"), "{got}");
        assert!(got.lines().nth(1).unwrap().starts_with("w      -      IGNORED   "), "{got}");
    }

    #[test]
    fn newest_acked_version_is_numeric() {
        let p = proxy(
            "p",
            None,
            None,
            vec![
                status(type_url::ADDRESS, "SYNCED", Some("10"), Some("10")),
                status(type_url::AUTHORIZATION, "SYNCED", Some("9"), Some("9")),
            ],
        );
        assert_eq!(acked_version(&p), Some("10"));
        assert_eq!(acked_version(&proxy("q", None, None, vec![])), None);
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name(type_url::ENDPOINT), "EDS");
        assert_eq!(short_name(type_url::AUTHORIZATION), "AUTHZ");
        assert_eq!(short_name(type_url::SECRET), "SDS");
        assert_eq!(
            short_name("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"),
            "TypedExtensionConfig"
        );
    }

    #[test]
    fn reads_weftd_syncz_json() {
        let json = r#"[{"connection_id":3,"proxy_id":"a","node_name":"n1","namespace":null,
            "protocol":"delta","connected_since":1.5,"types":[{"type_url":"type.googleapis.com/istio.workload.Address",
            "state":"NOT SENT","sent_version":null,"acked_version":null,"current_version":null,
            "last_nack":{"version":"2","message":"no","at":3.0},"resources":0}]}]"#;
        let proxies: Vec<ProxyStatus> = serde_json::from_str(json).unwrap();
        assert_eq!(proxies[0].types[0].state, "NOT SENT");
        assert_eq!(proxies[0].types[0].last_nack.as_ref().unwrap().message, "no");
    }
}
