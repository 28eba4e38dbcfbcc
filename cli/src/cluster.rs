//! Reaching a cluster: the flags that say which API server, a kube-rs client for it (the
//! same construction weftd uses: the kubeconfig, or a plain URL such as `kubectl proxy`'s
//! or a test server's), and the runtime the cluster subcommands run their calls on.

use anyhow::Context;
use kube::Client;
use weft_controlplane::source::kube::KubeSource;

/// Which Kubernetes API server.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The API server at this plain URL, without credentials (`kubectl proxy`'s
    /// http://127.0.0.1:8001, or a test server), instead of the kubeconfig ($KUBECONFIG,
    /// ~/.kube/config, its current context).
    #[arg(long = "kube-url", env = "WEFT_KUBE_URL", value_name = "URL", global = true)]
    pub kube_url: Option<String>,
}

impl ClusterArgs {
    /// A client for the API server.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let source = match &self.kube_url {
            Some(url) => KubeSource::from_url(url).with_context(|| format!("--kube-url {url}"))?,
            None => KubeSource::try_default().await.context("connecting to Kubernetes")?,
        };
        Ok(source.client())
    }

    /// The namespace to use when none is given: the kubeconfig context's, else "default".
    pub fn namespace(client: &Client, given: Option<&str>) -> String {
        given.map(str::to_owned).unwrap_or_else(|| client.default_namespace().to_owned())
    }
}

/// Runs a cluster subcommand's calls (weftctl is otherwise synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting weftctl's async runtime")?;
    Ok(runtime.block_on(future))
}

/// A kube-rs error as a person should read it: the API server's message where it sent one.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({} {})", status.message, status.code, status.reason),
        other => other.to_string(),
    }
}
