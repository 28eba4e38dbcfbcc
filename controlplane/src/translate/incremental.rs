//! Translation that follows the config store generation by generation, so endpoint churn
//! costs what it changes rather than a whole mesh.
//!
//! Like istiod's incremental EDS: when only Pods changed since the last generation (a pod
//! started, moved, got its IP, was relabelled), the translator rebuilds the changed pods'
//! Addresses (with the policies they list), the authorization scopes (they follow pods to
//! nodes), and the ClusterLoadAssignments of the services that select a changed pod, for
//! every waypoint and gateway that had them, and hands the server a [`SnapshotUpdate`].
//! Listeners, routes and clusters do not depend on pods. Any other change is a full
//! translation, which the server diffs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use weft_xds::server::{Scope, ScopedResource, Snapshot, SnapshotUpdate};
use weft_xds::type_url;

use super::{Options, envoy, policy, workload};
use crate::config::kinds::kubernetes::Service;
use crate::config::store::ConfigSnapshot;

/// What to hand the xDS server for one config generation.
#[derive(Debug)]
pub enum Output {
    /// Everything: `XdsServer::publish`.
    Full(Snapshot),
    /// The difference from the previous output: `XdsServer::update`.
    Update(SnapshotUpdate),
}

/// Keeps the last translated generation to translate the next one incrementally.
#[derive(Debug)]
pub struct Translator {
    opts: Options,
    last: Option<Last>,
}

#[derive(Debug)]
struct Last {
    cfg: Arc<ConfigSnapshot>,
    /// The outputs that depend on pods beyond their own Address, by name (each with its
    /// variants), to diff a recomputation against.
    authorizations: HashMap<String, ScopedResource>,
    load_assignments: HashMap<String, Vec<ScopedResource>>,
    /// Per hostname, the scopes (waypoints, gateways) its ClusterLoadAssignments go to.
    endpoint_scopes: HashMap<String, Vec<Scope>>,
}

impl Translator {
    pub fn new(opts: Options) -> Self {
        Self { opts, last: None }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Forgets the last generation: the next translation is a full one.
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Translates `cfg`, incrementally when only pods changed since the last call.
    pub fn translate(&mut self, cfg: Arc<ConfigSnapshot>) -> Output {
        match self.last.take() {
            Some(last) if only_pods_changed(&last.cfg, &cfg) => {
                let (update, last) = self.update(last, cfg);
                self.last = Some(last);
                Output::Update(update)
            }
            _ => {
                let (snapshot, last) = self.full(cfg);
                self.last = Some(last);
                Output::Full(snapshot)
            }
        }
    }

    fn full(&self, cfg: Arc<ConfigSnapshot>) -> (Snapshot, Last) {
        let mut snapshot = Snapshot::new(cfg.generation.to_string());
        for r in workload::addresses(&cfg, &self.opts) {
            snapshot.add(type_url::ADDRESS, r);
        }
        let authorizations = policy::authorizations(&cfg, &self.opts);
        let envoy = envoy::resources(&cfg, &self.opts);
        for r in &authorizations {
            snapshot.add(type_url::AUTHORIZATION, r.clone());
        }
        for (type_url, r) in &envoy {
            snapshot.add(*type_url, r.clone());
        }
        let mut load_assignments: HashMap<String, Vec<ScopedResource>> = HashMap::new();
        for (_, r) in envoy.into_iter().filter(|(t, _)| *t == type_url::ENDPOINT) {
            load_assignments.entry(r.name.clone()).or_default().push(r);
        }
        let last = Last {
            endpoint_scopes: endpoint_scopes(&load_assignments),
            authorizations: authorizations.into_iter().map(|r| (r.name.clone(), r)).collect(),
            load_assignments,
            cfg,
        };
        (snapshot, last)
    }

    fn update(&self, mut last: Last, cfg: Arc<ConfigSnapshot>) -> (SnapshotUpdate, Last) {
        let mut update = SnapshotUpdate::new(cfg.generation.to_string());
        // Services whose endpoints may have changed: those selecting a pod before or after.
        let mut services: HashMap<(String, String), Arc<Service>> = HashMap::new();
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        for (_, old, new) in cfg.pods.changes_since(&last.cfg.pods) {
            for pod in [old, new].into_iter().flatten() {
                namespaces.insert(pod.metadata.namespace.clone());
                for svc in
                    cfg.services.in_namespace(&pod.metadata.namespace).filter(|s| workload::selects(s, pod))
                {
                    services
                        .insert((svc.metadata.namespace.clone(), svc.metadata.name.clone()), Arc::clone(svc));
                }
            }
            // Same namespace/name on both sides, so the same uid.
            let Some(pod) = new.or(old) else { continue };
            let uid = workload::workload_uid(pod, &self.opts);
            let address = new.and_then(|pod| workload::pod_address(&cfg, pod, &self.opts));
            update.set(type_url::ADDRESS, &uid, address.into_iter().collect());
        }

        // Policies follow the pods they select to nodes. The set of policies is the same
        // (only pods changed), so only the scopes of those that can select a changed pod
        // can differ: its namespace's, and the root namespace's selector policies.
        for r in policy::authorizations_after_pod_changes(&cfg, &self.opts, &namespaces) {
            if last.authorizations.get(&r.name) != Some(&r) {
                update.set(type_url::AUTHORIZATION, &r.name.clone(), vec![r.clone()]);
                last.authorizations.insert(r.name.clone(), r);
            }
        }

        let hosts = envoy::HostIndex::new(&cfg, &self.opts);
        for svc in services.values() {
            let Some(scopes) = last.endpoint_scopes.get(&workload::service_hostname(svc, &self.opts)) else {
                continue;
            };
            for (name, any) in envoy::service_load_assignments(&cfg, &self.opts, &hosts, svc) {
                let variants: Vec<ScopedResource> = scopes
                    .iter()
                    .map(|scope| ScopedResource::new(name.as_str(), scope.clone(), any.clone()))
                    .collect();
                if last.load_assignments.get(&name) != Some(&variants) {
                    update.set(type_url::ENDPOINT, &name, variants.clone());
                    last.load_assignments.insert(name, variants);
                }
            }
        }
        last.cfg = cfg;
        (update, last)
    }
}

/// Whether everything translation reads, except pods, is the same in both generations.
fn only_pods_changed(before: &ConfigSnapshot, after: &ConfigSnapshot) -> bool {
    before.namespaces.same_as(&after.namespaces)
        && before.services.same_as(&after.services)
        && before.endpoint_slices.same_as(&after.endpoint_slices)
        && before.virtual_services.same_as(&after.virtual_services)
        && before.destination_rules.same_as(&after.destination_rules)
        && before.gateways.same_as(&after.gateways)
        && before.service_entries.same_as(&after.service_entries)
        && before.sidecars.same_as(&after.sidecars)
        && before.workload_entries.same_as(&after.workload_entries)
        && before.authorization_policies.same_as(&after.authorization_policies)
        && before.peer_authentications.same_as(&after.peer_authentications)
        && before.kubernetes_gateways.same_as(&after.kubernetes_gateways)
        && before.http_routes.same_as(&after.http_routes)
        && before.reference_grants.same_as(&after.reference_grants)
}

/// Per hostname in ClusterLoadAssignment names (`outbound|port|subset|host`), the scopes
/// of its assignments, in output order.
fn endpoint_scopes(load_assignments: &HashMap<String, Vec<ScopedResource>>) -> HashMap<String, Vec<Scope>> {
    let mut out: HashMap<String, Vec<Scope>> = HashMap::new();
    for (name, variants) in load_assignments {
        let Some(host) = name.rsplit('|').next() else { continue };
        let scopes = out.entry(host.to_owned()).or_default();
        for v in variants {
            if !scopes.contains(&v.scope) {
                scopes.push(v.scope.clone());
            }
        }
    }
    out
}
