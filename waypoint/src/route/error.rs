//! What the route compiler refuses, and where: weft-waypoint NACKs a RouteConfiguration
//! with this error, so it names the virtual host, the route and the field.

/// A field the compiler cannot apply, as a dotted path below the route or virtual host
/// (`route.weighted_clusters.clusters[1].metadata_match`), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    /// A field that changes the meaning of the configuration and that weft-waypoint does
    /// not implement: applying the rest would route differently from Envoy.
    pub(crate) fn unsupported(field: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), reason: "not supported by weft-waypoint".to_owned() }
    }

    /// A value Envoy itself rejects (or that cannot mean anything).
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), reason: reason.into() }
    }

    /// The same error, one level further down the path: `within("route")` turns `timeout`
    /// into `route.timeout`.
    pub(crate) fn within(mut self, parent: &str) -> FieldError {
        self.field =
            if self.field.is_empty() { parent.to_owned() } else { format!("{parent}.{}", self.field) };
        self
    }
}

pub(crate) type FieldResult<T> = Result<T, FieldError>;

/// Why a RouteConfiguration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A route of a virtual host has a field weft-waypoint cannot apply.
    #[error("route configuration {config:?}, virtual host {vhost:?}, route {route}: {field}: {reason}")]
    Route { config: String, vhost: String, route: String, field: String, reason: String },
    /// A field of a virtual host itself (domains, headers, per-filter config, …).
    #[error("route configuration {config:?}, virtual host {vhost:?}: {field}: {reason}")]
    VirtualHost { config: String, vhost: String, field: String, reason: String },
    /// A field of the RouteConfiguration outside any virtual host.
    #[error("route configuration {config:?}: {field}: {reason}")]
    Config { config: String, field: String, reason: String },
    /// More than one of the above: every route is compiled on its own, so one NACK names
    /// all the routes that failed, not only the first.
    #[error("{}", several(.0))]
    Several(Vec<RouteError>),
}

fn several(errors: &[RouteError]) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("{} errors: {}", errors.len(), all.join("; "))
}

impl RouteError {
    /// The single errors this one stands for (itself unless it is `Several`).
    pub fn failures(&self) -> &[RouteError] {
        match self {
            RouteError::Several(all) => all,
            one => std::slice::from_ref(one),
        }
    }

    pub(crate) fn collect(mut errors: Vec<RouteError>) -> Option<RouteError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(RouteError::Several(errors)),
        }
    }
}

/// How a route is named in errors and logs: its name, or its position when it has none.
pub(crate) fn route_label(name: &str, index: usize) -> String {
    if name.is_empty() { format!("#{index}") } else { format!("{name:?} (#{index})") }
}
