//! Which Service ports a waypoint treats as HTTP: Istio's rule (kube `ConvertProtocol`
//! and `protocol.Parse`): the port's `appProtocol`, else its name up to the first `-`.
//! Everything that is not HTTP is carried as TCP. Istio sniffs a port of unknown protocol
//! (no name, or a name it does not know); Weft does not sniff, so such a port is TCP until
//! it is named — but gets an `http` cluster beside its `tcp` one, as in Istio, so that an
//! HTTP route (from a gateway, say) naming it still finds its cluster.

use crate::config::kinds::kubernetes::ServicePort;

/// How a waypoint carries a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    /// HTTP/1.1 (or HTTP/2 when the client speaks it): `http`, `http_proxy`,
    /// `kubernetes.io/ws`.
    Http,
    /// HTTP/2 end to end: `http2`, `grpc`, `grpc-web`, `kubernetes.io/h2c`.
    Http2,
    /// A protocol on TCP that is not HTTP: `tcp`, `tls`, `https`, `mongo`, `redis`, `mysql`.
    Tcp,
    /// No name, or a name Istio does not know: carried as TCP.
    Unknown,
}

impl PortProtocol {
    /// How a waypoint carries `port`; `None` for UDP, which it does not carry (as Istio's).
    pub fn of(port: &ServicePort) -> Option<PortProtocol> {
        if port.protocol.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
            return None;
        }
        Some(Self::of_name(port))
    }

    fn of_name(port: &ServicePort) -> PortProtocol {
        let name = match port.app_protocol.as_deref() {
            Some("kubernetes.io/h2c") => return PortProtocol::Http2,
            Some("kubernetes.io/ws") => return PortProtocol::Http,
            Some("kubernetes.io/wss") => return PortProtocol::Tcp,
            Some(app) => app,
            None => port.name.as_deref().unwrap_or(""),
        };
        // `grpc-web` holds a dash of its own, so it is looked for before the prefix cut.
        if name.len() >= 8 && name[..8].eq_ignore_ascii_case("grpc-web") {
            return PortProtocol::Http2;
        }
        let prefix = name.split('-').next().unwrap_or("");
        match prefix.to_ascii_lowercase().as_str() {
            "http" | "http_proxy" => PortProtocol::Http,
            "http2" | "grpc" => PortProtocol::Http2,
            "tcp" | "tls" | "https" | "mongo" | "redis" | "mysql" => PortProtocol::Tcp,
            // SMTP, DNS, MySQL and MongoDB are TCP when nothing says otherwise (Istio's
            // well-known ports, never sniffed).
            _ if matches!(port.port, 25 | 53 | 3306 | 27017) => PortProtocol::Tcp,
            _ => PortProtocol::Unknown,
        }
    }

    /// Whether the waypoint applies HTTP routing to the port.
    pub fn is_http(self) -> bool {
        matches!(self, PortProtocol::Http | PortProtocol::Http2)
    }

    /// The protocol part of Istio's waypoint cluster names for the port's own chain.
    pub fn cluster_kind(self) -> &'static str {
        if self.is_http() { "http" } else { "tcp" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: Option<&str>, app: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_owned),
            app_protocol: app.map(str::to_owned),
            port: 80,
            ..Default::default()
        }
    }

    #[test]
    fn app_protocol_wins_then_the_name_prefix() {
        use PortProtocol::*;
        let cases = [
            (Some("http"), None, Http),
            (Some("http-web"), None, Http),
            (Some("HTTP2"), None, Http2),
            (Some("grpc-api"), None, Http2),
            (Some("grpc-web-x"), None, Http2),
            (Some("tcp-db"), None, Tcp),
            (Some("https"), None, Tcp),
            (Some("web"), None, Unknown),
            (Some("mysql-main"), None, Tcp),
            (None, None, Unknown),
            (Some("tcp"), Some("http"), Http),
            (Some("http"), Some("tcp"), Tcp),
            (None, Some("kubernetes.io/h2c"), Http2),
            (None, Some("kubernetes.io/ws"), Http),
            (None, Some("kubernetes.io/wss"), Tcp),
        ];
        for (name, app, want) in cases {
            assert_eq!(PortProtocol::of(&port(name, app)), Some(want), "name {name:?} appProtocol {app:?}");
        }
        let mysql = ServicePort { port: 3306, ..port(None, None) };
        assert_eq!(PortProtocol::of(&mysql), Some(Tcp));
        let udp = ServicePort { protocol: Some("UDP".into()), ..port(Some("http"), None) };
        assert_eq!(PortProtocol::of(&udp), None);
    }
}
