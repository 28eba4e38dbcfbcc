//! The controller loop: kube-rs's `Controller` over Gateways, woken by changes of the
//! Gateways, of what they own (Deployment, Service, ServiceAccount) and of their
//! GatewayClasses; and a watch of the GatewayClasses that recreates weftd's classes when
//! deleted and marks them Accepted.
//!
//! ```text
//!  Gateway / owned objects / GatewayClass events ─▶ reconcile(Gateway):
//!     class weftd's? ── no ─▶ waypoint-shaped and its class exists nowhere? ─▶ status Accepted=False
//!        │ yes
//!     Waypoint::from_gateway ── invalid ─▶ status Accepted=False (listener or name named)
//!        │ ok
//!     server-side apply: root ConfigMap, ServiceAccount, Deployment, Service (skipping an object
//!     of the same name that weftd did not make) ─▶ status Accepted, Programmed
//! ```
//!
//! Deleting a Gateway deletes its objects through their ownerReferences (Kubernetes'
//! garbage collector); weftd deletes nothing itself.

use super::{
    classes::{self, WaypointClass},
    objects::{HBONE_PORT, MANAGED_LABEL, Waypoint, WaypointSettings},
    status::{self, GatewayState},
};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service, ServiceAccount},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        reflector::ObjectRef,
        watcher::{self, Event, watcher},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use std::{fmt::Debug, sync::Arc, time::Duration};
use tracing::{debug, info, warn};

/// The field manager of everything weftd applies for waypoints (istiod's is
/// `istio.io/gateway-controller`).
pub const FIELD_MANAGER: &str = "weft.io/gateway-controller";
/// How long after a failed reconcile it is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Why a reconcile failed (retried after [`RETRY`]).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused a write or a read.
    #[error("{action} {what}: {source}")]
    Api {
        action: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// What the controller needs besides the Gateway.
pub struct WaypointController {
    client: Client,
    settings: WaypointSettings,
    /// The mesh root, put in each waypoint namespace's root ConfigMap.
    roots_pem: String,
}

pub fn gateway_resource() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        plural: "gateways".into(),
    }
}

impl WaypointController {
    pub fn new(client: Client, settings: WaypointSettings, roots_pem: String) -> WaypointController {
        WaypointController { client, settings, roots_pem }
    }

    /// Runs until the future is dropped.
    pub async fn run(self) {
        info!(image = %self.settings.image, xds = %self.settings.xds_address, "waypoint controller starting");
        let client = self.client.clone();
        tokio::spawn(keep_classes(client.clone()));

        let gateways: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_resource());
        let classes_api: Api<DynamicObject> =
            Api::all_with(client.clone(), &classes::gateway_class_resource());
        let controller = Controller::new_with(gateways, watcher::Config::default(), gateway_resource());
        let store = controller.store();
        let controller = controller
            .owns::<Deployment>(Api::all(client.clone()), watcher::Config::default())
            .owns::<Service>(Api::all(client.clone()), watcher::Config::default())
            .owns::<ServiceAccount>(Api::all(client.clone()), watcher::Config::default())
            .watches_with(
                classes_api,
                classes::gateway_class_resource(),
                watcher::Config::default(),
                move |class: DynamicObject| {
                    let name = class.name_any();
                    store
                        .state()
                        .into_iter()
                        .filter(|gw| gw.data["spec"]["gatewayClassName"].as_str() == Some(name.as_str()))
                        .map(|gw| ObjectRef::from_obj_with(gw.as_ref(), gateway_resource()))
                        .collect::<Vec<_>>()
                },
            );
        controller
            .run(reconcile, error_policy, Arc::new(self))
            .for_each(|result| async move {
                match result {
                    Ok((gateway, _)) => debug!(gateway = %gateway, "reconciled"),
                    Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                    Err(e) => debug!(error = %e, "waypoint controller"),
                }
            })
            .await;
    }
}

/// Creates weftd's GatewayClasses and keeps them: recreated when deleted, Accepted.
async fn keep_classes(client: Client) {
    let mut failing = false;
    loop {
        match classes::ensure(&client).await {
            Ok(()) => break,
            Err(e) => {
                if !failing {
                    warn!(error = %e, "cannot create the waypoint GatewayClasses (are the Gateway API CRDs installed? \
                          weftd needs create on gatewayclasses); retrying");
                }
                failing = true;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &classes::gateway_class_resource());
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let result = match event {
            Ok(Event::Apply(class) | Event::InitApply(class)) => {
                classes::accept(&client, &class, FIELD_MANAGER).await
            }
            Ok(Event::Delete(class)) if classes::by_name(&class.name_any()).is_some() => {
                classes::ensure(&client).await
            }
            Ok(_) => Ok(()),
            Err(e) => {
                debug!(error = %e, "watching GatewayClasses");
                tokio::time::sleep(RETRY).await;
                Ok(())
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "cannot keep the waypoint GatewayClasses");
        }
    }
}

fn error_policy(gateway: Arc<DynamicObject>, error: &ReconcileError, _: Arc<WaypointController>) -> Action {
    warn!(gateway = %format!("{}/{}", gateway.namespace().unwrap_or_default(), gateway.name_any()), %error, "waypoint not reconciled; retrying");
    Action::requeue(RETRY)
}

async fn reconcile(
    gateway: Arc<DynamicObject>,
    ctx: Arc<WaypointController>,
) -> Result<Action, ReconcileError> {
    let class_name = gateway.data["spec"]["gatewayClassName"].as_str().unwrap_or_default().to_owned();
    let Some(class) = ours(&ctx.client, &class_name).await? else {
        if looks_like_a_waypoint(&gateway) && gateway_class(&ctx.client, &class_name).await?.is_none() {
            let message = format!(
                "GatewayClass {class_name:?} does not exist: a waypoint's gatewayClassName is \"weft-waypoint\" \
                 (or \"istio-waypoint\")"
            );
            write_status(&ctx.client, &gateway, &GatewayState::UnknownClass(message)).await?;
        }
        return Ok(Action::await_change());
    };
    let state = match Waypoint::from_gateway(&gateway, class) {
        Ok(waypoint) => deploy(&ctx, &waypoint).await?,
        Err(invalid @ super::objects::Invalid::Listeners { .. }) => {
            GatewayState::BadListeners(invalid.to_string())
        }
        Err(invalid) => GatewayState::BadName(invalid.to_string()),
    };
    if let GatewayState::BadListeners(why) | GatewayState::BadName(why) = &state {
        warn!(gateway = %format!("{}/{}", gateway.namespace().unwrap_or_default(), gateway.name_any()), reason = %why, "not a waypoint");
    }
    write_status(&ctx.client, &gateway, &state).await?;
    Ok(Action::await_change())
}

/// The class of `name` if weftd handles it: one of its classes whose GatewayClass (when
/// it exists) names weftd's controller.
async fn ours(client: &Client, name: &str) -> Result<Option<&'static WaypointClass>, ReconcileError> {
    let Some(class) = classes::by_name(name) else { return Ok(None) };
    match gateway_class(client, name).await? {
        Some(gc) if gc.data["spec"]["controllerName"].as_str() != Some(class.controller) => {
            debug!(class = name, "GatewayClass belongs to another controller");
            Ok(None)
        }
        _ => Ok(Some(class)),
    }
}

async fn gateway_class(client: &Client, name: &str) -> Result<Option<DynamicObject>, ReconcileError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &classes::gateway_class_resource());
    api.get_opt(name).await.map_err(|source| ReconcileError::Api {
        action: "reading",
        what: format!("GatewayClass {name}"),
        source,
    })
}

/// A Gateway with an HBONE listener: meant as a waypoint, whatever its class.
fn looks_like_a_waypoint(gateway: &DynamicObject) -> bool {
    gateway.data["spec"]["listeners"]
        .as_array()
        .is_some_and(|ls| ls.iter().any(|l| l["protocol"] == "HBONE" && l["port"] == HBONE_PORT))
}

/// Applies the waypoint's objects; returns its state (blocked by an object weftd did not
/// make, if there is one).
async fn deploy(ctx: &WaypointController, waypoint: &Waypoint) -> Result<GatewayState, ReconcileError> {
    let ns = waypoint.namespace.as_str();
    let client = &ctx.client;
    let map = waypoint.root_config_map(&ctx.settings.root_config_map, &ctx.roots_pem);
    apply(&Api::<ConfigMap>::namespaced(client.clone(), ns), &map, false).await?;
    let blocked = [
        apply(&Api::<ServiceAccount>::namespaced(client.clone(), ns), &waypoint.service_account(), true)
            .await?,
        apply(&Api::<Deployment>::namespaced(client.clone(), ns), &waypoint.deployment(&ctx.settings), true)
            .await?,
        apply(&Api::<Service>::namespaced(client.clone(), ns), &waypoint.service(), true).await?,
    ];
    let blocked: Vec<String> = blocked.into_iter().flatten().collect();
    info!(waypoint = %format!("{ns}/{}", waypoint.name), class = waypoint.class.name, "waypoint applied");
    let blocked = (!blocked.is_empty()).then(|| {
        format!(
            "{} not made by a gateway controller (no {MANAGED_LABEL} label): weftd leaves it alone; delete it or \
             rename the Gateway",
            blocked.join(" and ")
        )
    });
    Ok(GatewayState::Deployed { hostname: waypoint.hostname(), blocked })
}

/// Server-side applies `object` unless an object of that name exists that weftd did not
/// make (`managed_only`): istiod's `canManage`, so a user's own Deployment named like the
/// Gateway is never taken over. Returns the object that stood in the way, if one did.
async fn apply<K>(api: &Api<K>, object: &K, managed_only: bool) -> Result<Option<String>, ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.name_any();
    let what = || format!("{} {}/{}", K::kind(&()), object.namespace().unwrap_or_default(), name);
    if managed_only {
        let existing = api.get_opt(&name).await.map_err(|source| ReconcileError::Api {
            action: "reading",
            what: what(),
            source,
        })?;
        if let Some(existing) = existing
            && !existing.labels().contains_key(MANAGED_LABEL)
        {
            warn!(object = %what(), "exists and was not made by a gateway controller: leaving it alone");
            return Ok(Some(what()));
        }
    }
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
        .await
        .map_err(|source| ReconcileError::Api { action: "applying", what: what(), source })?;
    Ok(None)
}

/// Writes the Gateway's conditions (and its listeners' and addresses), if they changed.
async fn write_status(
    client: &Client,
    gateway: &DynamicObject,
    state: &GatewayState,
) -> Result<(), ReconcileError> {
    let generation = gateway.metadata.generation.unwrap_or(0);
    let existing = status::parse(&gateway.data["status"]["conditions"]);
    let Some(conditions) = status::merge(&existing, &status::gateway_conditions(state, generation)) else {
        return Ok(());
    };
    let namespace = gateway.namespace().unwrap_or_default();
    let name = gateway.name_any();
    let addresses = match state {
        GatewayState::Deployed { hostname, blocked: None } => {
            json!([{ "type": "Hostname", "value": hostname }])
        }
        _ => json!([]),
    };
    let patch = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": name, "namespace": namespace },
        "status": {
            "conditions": conditions,
            "addresses": addresses,
            "listeners": status::listener_status(&gateway.data["spec"]["listeners"], state, generation),
        },
    });
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &gateway_resource());
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| ReconcileError::Api {
            action: "writing the status of",
            what: format!("Gateway {namespace}/{name}"),
            source,
        })?;
    Ok(())
}
