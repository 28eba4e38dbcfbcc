//! The GatewayClasses weftd handles, and how it keeps them: created when absent (never
//! updated: a user may change them, as istiod's ClassController allows) and marked
//! Accepted when their controllerName is weftd's.

use super::status::Condition;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::{debug, info};

/// One class of waypoint Gateways.
#[derive(Debug, PartialEq, Eq)]
pub struct WaypointClass {
    /// The GatewayClass's name, a Gateway's `gatewayClassName`.
    pub name: &'static str,
    /// The GatewayClass's `spec.controllerName`.
    pub controller: &'static str,
    pub description: &'static str,
}

impl WaypointClass {
    /// The value of the managed-by label on what is made for its Gateways
    /// (`gateway.istio.io/managed`): the controller name with `/` as `-`, as istiod.
    pub fn managed_label(&self) -> String {
        self.controller.replace('/', "-")
    }
}

/// Weft's own class, and Istio's (with istiod's controller name), so that Gateways written
/// for Istio ambient (`istioctl waypoint apply`) work unchanged.
pub const CLASSES: &[WaypointClass] = &[
    WaypointClass {
        name: "weft-waypoint",
        controller: "weft.io/mesh-controller",
        description: "The default Weft waypoint GatewayClass",
    },
    WaypointClass {
        name: "istio-waypoint",
        controller: "istio.io/mesh-controller",
        description: "The default Istio waypoint GatewayClass",
    },
];

/// The class named `name`, if it is one of weftd's.
pub fn by_name(name: &str) -> Option<&'static WaypointClass> {
    CLASSES.iter().find(|c| c.name == name)
}

/// The class whose controller name is `controller`.
pub fn by_controller(controller: &str) -> Option<&'static WaypointClass> {
    CLASSES.iter().find(|c| c.controller == controller)
}

pub fn gateway_class_resource() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "GatewayClass".into(),
        plural: "gatewayclasses".into(),
    }
}

/// The GatewayClass object weftd creates for `class`.
pub fn object(class: &WaypointClass) -> DynamicObject {
    let mut object = DynamicObject::new(class.name, &gateway_class_resource());
    object.data = json!({ "spec": { "controllerName": class.controller, "description": class.description } });
    object
}

/// Creates each class that does not exist (a race with another creator is fine).
pub async fn ensure(client: &Client) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_class_resource());
    for class in CLASSES {
        if api.get_opt(class.name).await?.is_some() {
            debug!(class = class.name, "GatewayClass exists");
            continue;
        }
        match api.create(&PostParams::default(), &object(class)).await {
            Ok(_) => info!(class = class.name, controller = class.controller, "created GatewayClass"),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Marks a GatewayClass of one of weftd's controllers Accepted, unless it already is.
pub async fn accept(client: &Client, class: &DynamicObject, field_manager: &str) -> Result<(), kube::Error> {
    let name = class.metadata.name.clone().unwrap_or_default();
    let controller = class.data["spec"]["controllerName"].as_str().unwrap_or_default();
    if by_controller(controller).is_none() {
        return Ok(());
    }
    let generation = class.metadata.generation.unwrap_or(0);
    let accepted = Condition::new("Accepted", true, "Accepted", "Handled by Weft controller", generation);
    let existing = super::status::parse(&class.data["status"]["conditions"]);
    let Some(conditions) = super::status::merge(&existing, &[accepted]) else {
        return Ok(());
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_class_resource());
    let patch = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": { "name": name },
        "status": { "conditions": conditions },
    });
    api.patch_status(&name, &PatchParams::apply(field_manager).force(), &Patch::Apply(&patch)).await?;
    info!(class = %name, "GatewayClass accepted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_labels() {
        assert_eq!(by_name("istio-waypoint").unwrap().controller, "istio.io/mesh-controller");
        assert_eq!(by_name("weft-waypoint").unwrap().managed_label(), "weft.io-mesh-controller");
        assert!(by_name("istio").is_none());
        let object = serde_json::to_value(object(&CLASSES[0])).unwrap();
        assert_eq!(object["kind"], "GatewayClass");
        assert_eq!(object["metadata"]["name"], "weft-waypoint");
        assert_eq!(object["spec"]["controllerName"], "weft.io/mesh-controller");
    }
}
