//! One proxy's view of one resource type: the resources whose scope matches it, kept up to
//! date from each prepared snapshot's change set rather than recomputed from scratch.

use std::collections::HashMap;
use std::sync::Arc;

use super::identity::ProxyIdentity;
use super::snapshot::{Prepared, ScopedResource};

/// What one proxy sees of one type, by name.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Generation this view reflects; 0 = never computed.
    generation: u64,
    resources: HashMap<String, Arc<ScopedResource>>,
}

impl View {
    /// Brings the view to `snapshot` and returns the names whose resolved resource changed
    /// (appeared, disappeared, or got another version).
    ///
    /// When the view is exactly one generation behind, only the snapshot's change set for the
    /// type is examined; otherwise (first computation, or generations skipped because the
    /// stream was busy) the whole type is resolved again and compared.
    pub fn refresh(&mut self, snapshot: &Prepared, type_url: &str, proxy: &ProxyIdentity) -> Vec<String> {
        if self.generation == snapshot.generation {
            return Vec::new();
        }
        let incremental = self.generation != 0 && self.generation + 1 == snapshot.generation;
        self.generation = snapshot.generation;
        let index = snapshot.types.get(type_url);
        let mut changed = Vec::new();

        if incremental {
            let Some(names) = snapshot.changes.get(type_url) else { return changed };
            for name in names {
                let now = index.and_then(|i| i.resolve(name, proxy));
                if self.set(name, now) {
                    changed.push(name.clone());
                }
            }
            return changed;
        }

        let mut fresh = HashMap::new();
        for (name, variants) in index.map(|i| &i.by_name).into_iter().flatten() {
            if let Some(r) = variants.iter().find(|r| r.scope.matches(proxy)) {
                fresh.insert(name.clone(), Arc::clone(r));
            }
        }
        for (name, r) in &fresh {
            if self.resources.get(name).is_none_or(|old| old.version != r.version) {
                changed.push(name.clone());
            }
        }
        for name in self.resources.keys() {
            if !fresh.contains_key(name) {
                changed.push(name.clone());
            }
        }
        self.resources = fresh;
        changed
    }

    /// Sets one name's resource; true when what the proxy sees changed.
    fn set(&mut self, name: &str, now: Option<&Arc<ScopedResource>>) -> bool {
        match now {
            Some(r) => match self.resources.get_mut(name) {
                Some(old) if old.version == r.version => {
                    // Same version: keep serving, but point at the new allocation so the old
                    // snapshot can be freed.
                    *old = Arc::clone(r);
                    false
                }
                Some(old) => {
                    *old = Arc::clone(r);
                    true
                }
                None => {
                    self.resources.insert(name.to_owned(), Arc::clone(r));
                    true
                }
            },
            None => self.resources.remove(name).is_some(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ScopedResource>> {
        self.resources.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.resources.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<ScopedResource>)> {
        self.resources.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Any;
    use crate::server::snapshot::{Scope, Snapshot};

    fn snap(items: &[(&str, Scope, &[u8])]) -> Snapshot {
        let mut s = Snapshot::new("");
        for (name, scope, bytes) in items {
            s.add(
                "t",
                ScopedResource::new(
                    *name,
                    scope.clone(),
                    Any { type_url: "t".into(), value: bytes.to_vec() },
                ),
            );
        }
        s
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn incremental_and_full_refresh_agree() {
        let n1 = ProxyIdentity { node_name: Some("n1".into()), ..Default::default() };
        let g1 = Prepared::new(
            snap(&[
                ("a", Scope::All, b"1"),
                ("b", Scope::Node("n1".into()), b"1"),
                ("c", Scope::Node("n2".into()), b"1"),
            ]),
            1,
            None,
        );
        let g2 = Prepared::new(
            snap(&[
                ("a", Scope::All, b"2"),
                ("b", Scope::Node("n1".into()), b"1"),
                ("c", Scope::Node("n2".into()), b"2"),
            ]),
            2,
            Some(&g1),
        );
        let g3 = Prepared::new(snap(&[("a", Scope::All, b"2")]), 3, Some(&g2));

        let mut v = View::default();
        assert_eq!(sorted(v.refresh(&g1, "t", &n1)), ["a", "b"]);
        // c changed, but n1 does not see it.
        assert_eq!(v.refresh(&g2, "t", &n1), ["a"]);
        assert_eq!(v.refresh(&g3, "t", &n1), ["b"]);
        assert!(v.refresh(&g3, "t", &n1).is_empty());

        // Skipping g2 forces a full comparison with the same outcome.
        let mut skipped = View::default();
        skipped.refresh(&g1, "t", &n1);
        assert_eq!(sorted(skipped.refresh(&g3, "t", &n1)), ["a", "b"]);
        assert_eq!(sorted(skipped.names().cloned().collect()), ["a"]);
    }

    /// The point of the change sets: one endpoint change in a 100k-resource snapshot costs a
    /// stream one lookup, not a pass over the snapshot.
    #[test]
    fn one_change_in_a_large_snapshot_touches_one_name() {
        const N: usize = 100_000;
        let build = |changed: Option<usize>| {
            let mut s = Snapshot::new("");
            let resources = s.resources.entry("t".into()).or_default();
            for i in 0..N {
                let version = if Some(i) == changed { "2" } else { "1" };
                let scope = if i % 2 == 0 { Scope::All } else { Scope::Node(format!("n{}", i % 10)) };
                resources.push(
                    ScopedResource::new(
                        format!("r{i}"),
                        scope,
                        Any { type_url: "t".into(), value: Vec::new() },
                    )
                    .with_version(version),
                );
            }
            s
        };
        let g1 = Prepared::new(build(None), 1, None);
        let g2 = Prepared::new(build(Some(4242)), 2, Some(&g1));
        assert_eq!(g2.changes["t"].len(), 1);

        let proxy = ProxyIdentity { node_name: Some("n1".into()), ..Default::default() };
        let mut view = View::default();
        assert_eq!(view.refresh(&g1, "t", &proxy).len(), N / 2 + N / 10);
        assert_eq!(view.refresh(&g2, "t", &proxy), ["r4242"]);
    }
}
