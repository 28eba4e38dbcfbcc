//! The policies the agent holds, indexed for the connection path.

use std::{collections::HashMap, sync::Arc};
use weft_xds::istio::security::Authorization;

use super::{
    matcher::{Policy, Scope},
    proto::PolicyError,
};

/// Every policy from the control plane, built once per update and then only read: per
/// connection, a slice for the mesh-wide policies, one hash lookup for the namespace's and
/// one per name the destination workload lists.
#[derive(Debug, Default, Clone)]
pub struct PolicyStore {
    /// By xDS resource name, which is what `Workload.authorization_policies` lists.
    by_name: HashMap<Arc<str>, Arc<Policy>>,
    /// GLOBAL policies, ordered by key so decisions do not depend on hash order.
    global: Box<[Arc<Policy>]>,
    /// NAMESPACE policies by namespace, each list ordered by key.
    by_namespace: HashMap<Box<str>, Box<[Arc<Policy>]>>,
}

impl PolicyStore {
    /// Indexes policies by xDS resource name. A name given twice keeps the last policy.
    pub fn new(policies: impl IntoIterator<Item = (Arc<str>, Arc<Policy>)>) -> PolicyStore {
        let by_name: HashMap<Arc<str>, Arc<Policy>> = policies.into_iter().collect();
        let mut global: Vec<Arc<Policy>> = Vec::new();
        let mut by_namespace: HashMap<Box<str>, Vec<Arc<Policy>>> = HashMap::new();
        for policy in by_name.values() {
            match policy.scope() {
                Scope::Global => global.push(Arc::clone(policy)),
                Scope::Namespace => {
                    by_namespace.entry(policy.namespace().into()).or_default().push(Arc::clone(policy))
                }
                // Applies only where a workload names it.
                Scope::WorkloadSelector => {}
            }
        }
        let sorted = |mut list: Vec<Arc<Policy>>| {
            list.sort_by(|a, b| a.key().cmp(b.key()));
            list.into_boxed_slice()
        };
        PolicyStore {
            by_name,
            global: sorted(global),
            by_namespace: by_namespace.into_iter().map(|(ns, list)| (ns, sorted(list))).collect(),
        }
    }

    /// Builds and validates every policy of a set of `(xDS name, resource)`; the first
    /// invalid one is the error (the caller NACKs the update with it and keeps its store).
    pub fn from_resources<'a>(
        resources: impl IntoIterator<Item = (&'a str, &'a Authorization)>,
    ) -> Result<PolicyStore, PolicyError> {
        let policies = resources
            .into_iter()
            .map(|(name, resource)| Ok((Arc::from(name), Arc::new(Policy::from_proto(name, resource)?))))
            .collect::<Result<Vec<_>, PolicyError>>()?;
        Ok(PolicyStore::new(policies))
    }

    /// The policy with this xDS name.
    pub fn get(&self, name: &str) -> Option<&Arc<Policy>> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every policy with its xDS name, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Policy>)> {
        self.by_name.iter()
    }

    pub(super) fn global(&self) -> &[Arc<Policy>] {
        &self.global
    }

    pub(super) fn in_namespace(&self, namespace: &str) -> &[Arc<Policy>] {
        self.by_namespace.get(namespace).map_or(&[], |list| list)
    }
}
