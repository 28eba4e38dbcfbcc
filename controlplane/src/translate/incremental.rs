//! Translation that follows the config store generation by generation, so endpoint churn
//! costs what it changes rather than a whole mesh.
//!
//! Like istiod's incremental EDS: when only Pods changed since the last generation (a pod
//! started, moved, got its IP), the translator rebuilds the changed pods' Addresses, the
//! authorization scopes (they follow pods to nodes), and the waypoint and gateway
//! resources only if a changed pod backs one of their clusters, and hands the server a
//! [`SnapshotUpdate`]. Any other change is a full translation, which the server diffs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use weft_xds::server::{ScopedResource, Snapshot, SnapshotUpdate};
use weft_xds::type_url;

use super::{Options, envoy, workload};
use crate::config::kinds::kubernetes::Pod;
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
    /// The outputs that depend on pods beyond their own Address, by type and name, to
    /// diff a recomputation against.
    authorizations: HashMap<String, ScopedResource>,
    envoy: HashMap<(&'static str, String), ScopedResource>,
    /// Hostnames with endpoints in the envoy output: a pod of one of these services
    /// changes a ClusterLoadAssignment.
    endpoint_hosts: HashSet<String>,
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
        let authorizations = workload::authorizations(&cfg, &self.opts);
        let envoy = envoy::resources(&cfg, &self.opts);
        for r in &authorizations {
            snapshot.add(type_url::AUTHORIZATION, r.clone());
        }
        for (type_url, r) in &envoy {
            snapshot.add(*type_url, r.clone());
        }
        let last = Last {
            endpoint_hosts: endpoint_hosts(&envoy),
            authorizations: authorizations.into_iter().map(|r| (r.name.clone(), r)).collect(),
            envoy: envoy.into_iter().map(|(t, r)| ((t, r.name.clone()), r)).collect(),
            cfg,
        };
        (snapshot, last)
    }

    fn update(&self, mut last: Last, cfg: Arc<ConfigSnapshot>) -> (SnapshotUpdate, Last) {
        let mut update = SnapshotUpdate::new(cfg.generation.to_string());
        let mut envoy_affected = false;
        for (_, old, new) in cfg.pods.changes_since(&last.cfg.pods) {
            for pod in [old, new].into_iter().flatten() {
                envoy_affected |= backs_an_endpoint(&cfg, pod, &last.endpoint_hosts, &self.opts);
            }
            // Same namespace/name on both sides, so the same uid.
            let Some(pod) = new.or(old) else { continue };
            let uid = workload::workload_uid(pod, &self.opts);
            let address = new.and_then(|pod| workload::pod_address(&cfg, pod, &self.opts));
            update.set(type_url::ADDRESS, &uid, address.into_iter().collect());
        }

        let authorizations = workload::authorizations(&cfg, &self.opts);
        let mut seen = HashSet::new();
        for r in authorizations {
            seen.insert(r.name.clone());
            if last.authorizations.get(&r.name) != Some(&r) {
                update.set(type_url::AUTHORIZATION, &r.name.clone(), vec![r.clone()]);
                last.authorizations.insert(r.name.clone(), r);
            }
        }
        last.authorizations.retain(|name, _| {
            let keep = seen.contains(name);
            if !keep {
                update.remove(type_url::AUTHORIZATION, name);
            }
            keep
        });

        if envoy_affected {
            let envoy = envoy::resources(&cfg, &self.opts);
            last.endpoint_hosts = endpoint_hosts(&envoy);
            let mut seen = HashSet::new();
            for (type_url, r) in envoy {
                let key = (type_url, r.name.clone());
                seen.insert(key.clone());
                if last.envoy.get(&key) != Some(&r) {
                    update.set(type_url, &r.name.clone(), vec![r.clone()]);
                    last.envoy.insert(key, r);
                }
            }
            last.envoy.retain(|key, _| {
                let keep = seen.contains(key);
                if !keep {
                    update.remove(key.0, &key.1);
                }
                keep
            });
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
}

/// The hostnames in ClusterLoadAssignment names (`outbound|port|subset|host`).
fn endpoint_hosts(envoy: &[(&'static str, ScopedResource)]) -> HashSet<String> {
    envoy
        .iter()
        .filter(|(t, _)| *t == type_url::ENDPOINT)
        .filter_map(|(_, r)| r.name.rsplit('|').next().map(str::to_owned))
        .collect()
}

/// Whether a service that selects `pod` has endpoints in the envoy output.
fn backs_an_endpoint(cfg: &ConfigSnapshot, pod: &Pod, hosts: &HashSet<String>, opts: &Options) -> bool {
    !hosts.is_empty()
        && cfg
            .services
            .in_namespace(&pod.metadata.namespace)
            .any(|svc| workload::selects(svc, pod) && hosts.contains(&workload::service_hostname(svc, opts)))
}
