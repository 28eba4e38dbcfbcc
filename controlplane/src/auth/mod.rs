//! Who is calling weftd's secure port, and what they may ask for. One mechanism serves the
//! CSR service and ADS alike.
//!
//! ```text
//!  authorization: Bearer <token>
//!      │ local mode: the token file (tokens.rs)       Kubernetes: TokenReview (tokenreview.rs)
//!      ▼                                                 + the caller's pod in the config
//!  Caller::Agent { node }            an agent: a node's bootstrap token, or a trusted agent
//!                                    service account whose pod runs on that node
//!  Caller::ServiceAccount { ns, sa } anyone else: a waypoint's, a gateway's account
//!      │
//!      ├─ CSR  ─ authorize_identity: an agent gets spiffe://<td>/ns/N/sa/S only if a pod of
//!      │         N/S runs on its node (istiod's NodeAuthorizer); an account, only its own
//!      └─ xDS  ─ authorize_proxy: the first request's NODE_NAME / NAMESPACE / LABELS must be
//!                what the caller authenticated as
//! ```
//!
//! Refusals are logged here, once, with the peer's address: UNAUTHENTICATED for missing or
//! unknown credentials, PERMISSION_DENIED for a claim the caller may not make, UNAVAILABLE
//! while weftd cannot decide yet (no configuration read, API server unreachable).

pub mod tokenreview;
pub mod tokens;

use crate::config::kinds::Pod;
use crate::config::store::ConfigSnapshot;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tracing::warn;
use weft_hbone::Identity;
use weft_xds::server::{ProxyIdentity, StreamAuthenticator, StreamCall, StreamCaller};

use tokenreview::{ReviewError, ReviewedAccount, TokenReviewer};
use tokens::{Subject, TokenFile};

/// The configuration weftd serves, as the authorizer reads it (pods and their nodes);
/// `None` until the source has delivered its first complete state.
pub type ConfigView = watch::Receiver<Option<Arc<ConfigSnapshot>>>;

/// A namespace/name service account, e.g. `istio-system/weft-agent`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for ServiceAccountRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ServiceAccountRef { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            _ => Err(format!("{s:?} is not a service account: expected <namespace>/<name>")),
        }
    }
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What weftd knows of the caller's pod (Kubernetes mode, a pod-bound token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl PodInfo {
    fn of(pod: &Pod) -> PodInfo {
        PodInfo {
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            node: pod.spec.node_name.clone().filter(|n| !n.is_empty()),
            labels: pod.metadata.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The node agent of `node`.
    Agent {
        node: String,
        /// The agent's pod (Kubernetes mode); `None` for a local bootstrap token.
        pod: Option<PodInfo>,
    },
    /// A service account that is not an agent's: a waypoint, a gateway.
    ServiceAccount {
        namespace: String,
        name: String,
        /// The pod a bound token belongs to, when weftd knows it.
        pod: Option<PodInfo>,
    },
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Agent { node, pod: None } => write!(f, "the agent of node {node}"),
            Caller::Agent { node, pod: Some(pod) } => {
                write!(f, "the agent of node {node} (pod {}/{})", pod.namespace, pod.name)
            }
            Caller::ServiceAccount { namespace, name, .. } => write!(f, "service account {namespace}/{name}"),
        }
    }
}

/// Why a call was refused. Messages go back to the caller; details that could help a
/// guesser (why a token was not accepted) only go to weftd's log.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `authorization: Bearer <token>` metadata")]
    NoToken,
    #[error("the authorization metadata is not `Bearer <token>`")]
    NotBearer,
    #[error("the bearer token was not accepted")]
    UnknownToken {
        /// Why, for the log.
        detail: String,
    },
    #[error("cannot tell which node agent {account} runs on: {reason}")]
    AgentUnresolved { account: String, reason: String },
    #[error("weftd cannot check credentials right now ({0}); retry")]
    Unavailable(String),
    #[error("weftd has not read its configuration yet; retry")]
    NotReady,
    #[error("{caller} may not hold {identity}: {reason}")]
    IdentityDenied { caller: String, identity: String, reason: String },
    #[error("{caller} may not claim {claim}: {reason}")]
    ClaimDenied { caller: String, claim: String, reason: String },
}

impl AuthError {
    /// The gRPC status the caller gets.
    pub fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            AuthError::NoToken
            | AuthError::NotBearer
            | AuthError::UnknownToken { .. }
            | AuthError::AgentUnresolved { .. } => Status::unauthenticated(message),
            AuthError::Unavailable(_) | AuthError::NotReady => Status::unavailable(message),
            AuthError::IdentityDenied { .. } | AuthError::ClaimDenied { .. } => {
                Status::permission_denied(message)
            }
        }
    }

    /// The message with what only the log may see.
    fn detail(&self) -> String {
        match self {
            AuthError::UnknownToken { detail } => format!("{self}: {detail}"),
            other => other.to_string(),
        }
    }
}

/// How tokens are checked.
#[derive(Debug)]
pub enum Method {
    /// Local mode: `--token-file`.
    TokenFile(TokenFile),
    /// Kubernetes mode: TokenReview.
    TokenReview(TokenReviewer),
}

/// Authenticates callers and decides what they may ask for.
#[derive(Debug)]
pub struct Authenticator {
    method: Method,
    config: ConfigView,
    /// Service accounts whose pods are node agents (istiod's CA_TRUSTED_NODE_ACCOUNTS).
    agent_accounts: Vec<ServiceAccountRef>,
    trust_domain: String,
}

/// A peer address for logs.
struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("unknown"),
        }
    }
}

impl Authenticator {
    pub fn new(
        method: Method,
        config: ConfigView,
        agent_accounts: Vec<ServiceAccountRef>,
        trust_domain: impl Into<String>,
    ) -> Authenticator {
        Authenticator { method, config, agent_accounts, trust_domain: trust_domain.into() }
    }

    /// Who is calling, from the call's bearer token.
    pub async fn authenticate(
        &self,
        peer: Option<SocketAddr>,
        metadata: &MetadataMap,
    ) -> Result<Caller, AuthError> {
        let result = self.identify(metadata).await;
        if let Err(e) = &result {
            warn!(target: "weftd::auth", peer = %Peer(peer), code = ?e.status().code(), reason = %e.detail(), "refused a call to the secure port");
        }
        result
    }

    /// Whether `caller` may have a certificate for `identity`.
    pub fn authorize_identity(
        &self,
        peer: Option<SocketAddr>,
        caller: &Caller,
        identity: &Identity,
    ) -> Result<(), AuthError> {
        let result = self.check_identity(caller, identity);
        if let Err(e) = &result {
            warn!(target: "weftd::auth", peer = %Peer(peer), %caller, %identity, code = ?e.status().code(), reason = %e, "refused a certificate");
        }
        result
    }

    /// Whether `caller` may open an xDS stream as `proxy` (its first request's node).
    pub fn authorize_proxy(
        &self,
        peer: Option<SocketAddr>,
        caller: &Caller,
        proxy: &ProxyIdentity,
    ) -> Result<(), AuthError> {
        let result = self.check_proxy(caller, proxy);
        if let Err(e) = &result {
            warn!(
                target: "weftd::auth",
                peer = %Peer(peer),
                %caller,
                proxy = proxy.id,
                node_name = proxy.node_name.as_deref().unwrap_or(""),
                namespace = proxy.namespace.as_deref().unwrap_or(""),
                code = ?e.status().code(),
                reason = %e,
                "refused an xDS stream"
            );
        }
        result
    }

    async fn identify(&self, metadata: &MetadataMap) -> Result<Caller, AuthError> {
        let token = bearer_token(metadata)?;
        match &self.method {
            Method::TokenFile(file) => match file.lookup(token) {
                None => Err(AuthError::UnknownToken { detail: "not in the token file".into() }),
                Some(Subject::Node(node)) => Ok(Caller::Agent { node, pod: None }),
                Some(Subject::ServiceAccount { namespace, name }) => {
                    Ok(Caller::ServiceAccount { namespace, name, pod: None })
                }
            },
            Method::TokenReview(reviewer) => {
                let account = reviewer.review(token).await.map_err(|e| match e {
                    ReviewError::Unavailable(_) => AuthError::Unavailable(e.to_string()),
                    other => AuthError::UnknownToken { detail: other.to_string() },
                })?;
                self.caller_of(account)
            }
        }
    }

    /// The caller a reviewed service account is: an agent (its pod's node) or itself.
    fn caller_of(&self, account: ReviewedAccount) -> Result<Caller, AuthError> {
        let snapshot = self.snapshot()?;
        let pod = account.pod_name.as_deref().and_then(|name| snapshot.pods.get(&account.namespace, name));
        if let Some(pod) = pod
            && pod.service_account() != account.name
        {
            return Err(AuthError::UnknownToken {
                detail: format!(
                    "the token of {}/{} names pod {}, which runs as service account {}",
                    account.namespace,
                    account.name,
                    pod.metadata.name,
                    pod.service_account()
                ),
            });
        }
        let pod = pod.map(|p| PodInfo::of(p));
        let is_agent =
            self.agent_accounts.iter().any(|a| a.namespace == account.namespace && a.name == account.name);
        if !is_agent {
            return Ok(Caller::ServiceAccount { namespace: account.namespace, name: account.name, pod });
        }
        let unresolved = |reason: String| AuthError::AgentUnresolved {
            account: format!("{}/{}", account.namespace, account.name),
            reason,
        };
        let Some(pod_name) = account.pod_name.as_deref() else {
            return Err(unresolved(
                "its token is not bound to a pod (no pod-name in the review): give the agent a projected token".into(),
            ));
        };
        let Some(pod) = pod else {
            return Err(unresolved(format!(
                "weftd does not know its pod {}/{pod_name} (yet)",
                account.namespace
            )));
        };
        let Some(node) = pod.node.clone() else {
            return Err(unresolved(format!(
                "its pod {}/{pod_name} is not scheduled on a node",
                account.namespace
            )));
        };
        Ok(Caller::Agent { node, pod: Some(pod) })
    }

    fn snapshot(&self) -> Result<Arc<ConfigSnapshot>, AuthError> {
        self.config.borrow().clone().ok_or(AuthError::NotReady)
    }

    fn check_identity(&self, caller: &Caller, identity: &Identity) -> Result<(), AuthError> {
        let denied = |reason: String| AuthError::IdentityDenied {
            caller: caller.to_string(),
            identity: identity.to_string(),
            reason,
        };
        if identity.trust_domain() != self.trust_domain {
            return Err(denied(format!("weftd signs identities of trust domain {} only", self.trust_domain)));
        }
        let (namespace, account) = (identity.namespace(), identity.service_account());
        match caller {
            Caller::ServiceAccount { namespace: own_ns, name: own, .. } => {
                if own_ns == namespace && own == account {
                    Ok(())
                } else {
                    Err(denied("a service account may only have a certificate of its own identity".into()))
                }
            }
            Caller::Agent { node, .. } => {
                let snapshot = self.snapshot()?;
                if runs_on(&snapshot, node, namespace, account) {
                    Ok(())
                } else {
                    Err(denied(format!(
                        "no pod of service account {namespace}/{account} runs on node {node}"
                    )))
                }
            }
        }
    }

    fn check_proxy(&self, caller: &Caller, proxy: &ProxyIdentity) -> Result<(), AuthError> {
        let denied = |claim: String, reason: String| AuthError::ClaimDenied {
            caller: caller.to_string(),
            claim,
            reason,
        };
        let (node, namespace, pod) = match caller {
            Caller::Agent { node, pod } => (Some(node), None, pod.as_ref()),
            Caller::ServiceAccount { namespace, pod, .. } => {
                (pod.as_ref().and_then(|p| p.node.as_ref()), Some(namespace), pod.as_ref())
            }
        };
        if let Some(claimed) = &proxy.node_name
            && node != Some(claimed)
        {
            let reason = match (caller, node) {
                (Caller::Agent { node, .. }, _) => format!("it authenticated as the agent of node {node}"),
                (_, Some(node)) => format!("its pod runs on node {node}"),
                (_, None) => {
                    "a service account may name only the node its pod runs on, and weftd knows no pod of it"
                        .into()
                }
            };
            return Err(denied(format!("node {claimed} (NODE_NAME)"), reason));
        }
        if let Some(claimed) = &proxy.namespace {
            let own = match (namespace, pod) {
                (Some(ns), _) => ns == claimed,
                (None, Some(pod)) => pod.namespace == *claimed,
                // A local bootstrap token stands for the agent DaemonSet's account.
                (None, None) => self.agent_accounts.iter().any(|a| a.namespace == *claimed),
            };
            if !own {
                return Err(denied(
                    format!("namespace {claimed}"),
                    "it is not the caller's namespace".into(),
                ));
            }
        }
        if !proxy.labels.is_empty() {
            match pod {
                Some(pod) => {
                    if let Some((k, v)) = proxy.labels.iter().find(|(k, v)| pod.labels.get(*k) != Some(*v)) {
                        return Err(denied(
                            format!("label {k}={v} (LABELS)"),
                            format!("its pod {}/{} does not carry it", pod.namespace, pod.name),
                        ));
                    }
                }
                // Local mode: the token file is the operator's word for a service
                // account, and pods' labels cannot be checked; agents have none to claim.
                None if matches!(caller, Caller::Agent { .. }) => {
                    return Err(denied(
                        "pod labels (LABELS)".into(),
                        "an agent has no labels to claim".into(),
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// Whether a pod of service account `namespace/account` runs on `node`. Pods that have
/// finished (Succeeded, Failed) need no certificate; istiod leaves out Failed ones.
fn runs_on(snapshot: &ConfigSnapshot, node: &str, namespace: &str, account: &str) -> bool {
    snapshot.pods.in_namespace(namespace).any(|pod| {
        pod.service_account() == account
            && pod.spec.node_name.as_deref() == Some(node)
            && !matches!(pod.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    })
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata.get("authorization").ok_or(AuthError::NoToken)?;
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}

/// The authenticator as the xDS server's hook.
pub struct XdsAuth(pub Arc<Authenticator>);

impl StreamAuthenticator for XdsAuth {
    fn authenticate(&self, call: StreamCall) -> BoxFuture<'static, Result<Arc<dyn StreamCaller>, Status>> {
        let auth = Arc::clone(&self.0);
        Box::pin(async move {
            let caller = auth.authenticate(call.peer, &call.metadata).await.map_err(|e| e.status())?;
            Ok(Arc::new(XdsCaller { auth, caller, peer: call.peer }) as Arc<dyn StreamCaller>)
        })
    }
}

/// A caller of one xDS stream.
struct XdsCaller {
    auth: Arc<Authenticator>,
    caller: Caller,
    peer: Option<SocketAddr>,
}

impl fmt::Debug for XdsCaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsCaller").field("caller", &self.caller).field("peer", &self.peer).finish()
    }
}

impl fmt::Display for XdsCaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.caller.fmt(f)
    }
}

impl StreamCaller for XdsCaller {
    fn authorize(&self, proxy: &ProxyIdentity) -> Result<(), Status> {
        self.auth.authorize_proxy(self.peer, &self.caller, proxy).map_err(|e| e.status())
    }
}

#[cfg(test)]
mod tests;
