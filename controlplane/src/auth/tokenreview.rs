//! Kubernetes mode: a caller's service-account token is checked by the API server
//! (TokenReview, authentication.k8s.io/v1), as istiod does
//! (security/pkg/k8s/tokenreview/k8sauthn.go): the token must be a service account's, for
//! one of weftd's audiences; the reviewed user `system:serviceaccount:<ns>:<sa>` says which
//! account, and the `pod-name` / `pod-uid` extras of a pod-bound token say which pod.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

/// The extra naming the pod a bound token belongs to (kube-apiserver's serviceaccount
/// package).
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The extra carrying that pod's UID.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Asks the API server who a token belongs to.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer").field("audiences", &self.audiences).finish_non_exhaustive()
    }
}

/// The service account a token authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewedAccount {
    pub namespace: String,
    pub name: String,
    /// The pod a bound token belongs to.
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// The API server could not be asked (down, no permission to create TokenReviews).
    #[error("TokenReview failed: {0} (weftd needs create on tokenreviews.authentication.k8s.io)")]
    Unavailable(String),
    /// The API server does not know the token, or not for weftd's audiences.
    #[error("the API server did not authenticate the token: {0}")]
    NotAuthenticated(String),
    /// The token is a user's or a node's, not a service account's.
    #[error("the token belongs to {0:?}, which is not a service account")]
    NotServiceAccount(String),
}

impl TokenReviewer {
    /// `audiences`: what the token must have been issued for (istiod: `istio-ca`); empty
    /// accepts the API server's own audience.
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        TokenReviewer { client, audiences }
    }

    pub async fn review(&self, token: &str) -> Result<ReviewedAccount, ReviewError> {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        account(&answer.status.unwrap_or_default(), &self.audiences)
    }
}

/// Reads a review's answer as istiod does.
fn account(status: &TokenReviewStatus, audiences: &[String]) -> Result<ReviewedAccount, ReviewError> {
    if let Some(error) = status.error.as_deref().filter(|e| !e.is_empty()) {
        return Err(ReviewError::NotAuthenticated(error.to_owned()));
    }
    if status.authenticated != Some(true) {
        return Err(ReviewError::NotAuthenticated("not authenticated".into()));
    }
    // An audience-aware server lists the audiences the token matched; one that lists none
    // authenticated it for itself only.
    let matched = status.audiences.as_deref().unwrap_or_default();
    if !audiences.is_empty() && !matched.iter().any(|a| audiences.contains(a)) {
        return Err(ReviewError::NotAuthenticated(format!(
            "the token is not for weftd's audiences {audiences:?} (matched {matched:?})"
        )));
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let in_group = user.groups.as_deref().unwrap_or_default().iter().any(|g| g == "system:serviceaccounts");
    let parts: Vec<&str> = username.split(':').collect();
    let (true, ["system", "serviceaccount", namespace, name]) = (in_group, parts.as_slice()) else {
        return Err(ReviewError::NotServiceAccount(username));
    };
    let extra = |key: &str| {
        user.extra
            .as_ref()
            .and_then(|e| e.get(key))
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    Ok(ReviewedAccount {
        namespace: (*namespace).to_owned(),
        name: (*name).to_owned(),
        pod_name: extra(POD_NAME_EXTRA),
        pod_uid: extra(POD_UID_EXTRA),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    fn status(username: &str, groups: &[&str], audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                extra: Some(BTreeMap::from([(POD_NAME_EXTRA.to_owned(), vec!["agent-x".to_owned()])])),
                ..Default::default()
            }),
            error: None,
        }
    }

    #[test]
    fn a_service_account_with_its_pod() {
        let ok = status(
            "system:serviceaccount:istio-system:weft-agent",
            &["system:serviceaccounts"],
            &["istio-ca"],
        );
        let account = account(&ok, &["istio-ca".into()]).unwrap();
        assert_eq!((account.namespace.as_str(), account.name.as_str()), ("istio-system", "weft-agent"));
        assert_eq!(account.pod_name.as_deref(), Some("agent-x"));
        assert_eq!(account.pod_uid, None);
    }

    #[test]
    fn refusals() {
        let aud = ["istio-ca".to_owned()];
        let user = status("alice", &["system:authenticated"], &["istio-ca"]);
        assert_eq!(account(&user, &aud), Err(ReviewError::NotServiceAccount("alice".into())));
        let wrong_aud = status("system:serviceaccount:a:b", &["system:serviceaccounts"], &["api"]);
        assert!(matches!(account(&wrong_aud, &aud), Err(ReviewError::NotAuthenticated(_))));
        let mut failed = status("system:serviceaccount:a:b", &["system:serviceaccounts"], &["istio-ca"]);
        failed.authenticated = Some(false);
        failed.error = Some("token expired".into());
        assert_eq!(account(&failed, &aud), Err(ReviewError::NotAuthenticated("token expired".into())));
    }
}
