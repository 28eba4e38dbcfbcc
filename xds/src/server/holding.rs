//! What one proxy holds of one resource type, recorded without copying the snapshot.
//!
//! A proxy that is in sync holds exactly what some generation resolves to for it, so the
//! record is that generation (an `Arc` of the shared, persistent index) plus the names
//! where the proxy differs from it: resources it reported on reconnect, a NACK's undo, a
//! name it unsubscribed from. A thousand agents holding the same 100k addresses then cost
//! the server a thousand pointers, not a hundred million map entries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::identity::ProxyIdentity;
use super::prepared::{Name, Prepared, TypeIndex};
use super::snapshot::ScopedResource;

/// A resource the proxy holds.
#[derive(Clone, Debug)]
pub(crate) enum Held {
    /// Sent by this server.
    Sent(Arc<ScopedResource>),
    /// Reported by a reconnecting delta client (`initial_resource_versions`), never sent.
    Reported(String),
}

impl Held {
    pub fn version(&self) -> &str {
        match self {
            Held::Sent(r) => &r.version,
            Held::Reported(version) => version,
        }
    }

    pub fn resource(&self) -> Option<&Arc<ScopedResource>> {
        match self {
            Held::Sent(r) => Some(r),
            Held::Reported(_) => None,
        }
    }
}

/// Which names of a type the proxy asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Everything it may see.
    All,
    Names(Arc<HashSet<String>>),
}

impl Filter {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Names(names) => names.contains(name),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Holding {
    /// The proxy holds what this generation resolves to for it, among `filter`'s names…
    base: Option<Arc<Prepared>>,
    filter: Filter,
    /// …except for these (`None`: not held).
    except: HashMap<Name, Option<Held>>,
    count: usize,
}

impl Default for Holding {
    fn default() -> Self {
        Self { base: None, filter: Filter::All, except: HashMap::new(), count: 0 }
    }
}

impl Holding {
    /// A proxy that reports holding these versions (delta reconnect).
    pub fn reported(versions: impl IntoIterator<Item = (String, String)>) -> Self {
        let except: HashMap<Name, Option<Held>> = versions
            .into_iter()
            .map(|(name, version)| (Name::from(name), Some(Held::Reported(version))))
            .collect();
        Self { count: except.len(), except, ..Self::default() }
    }

    /// The generation this record is relative to.
    pub fn base(&self) -> Option<&Arc<Prepared>> {
        self.base.as_ref()
    }

    /// How many resources the proxy holds.
    pub fn len(&self) -> usize {
        self.count
    }

    fn base_index<'a>(&'a self, type_url: &str) -> Option<&'a TypeIndex> {
        self.base.as_ref().and_then(|b| b.types.get(type_url))
    }

    /// What the proxy holds under `name`.
    pub fn get(&self, type_url: &str, name: &str, proxy: &ProxyIdentity) -> Option<HeldRef<'_>> {
        if let Some(held) = self.except.get(name) {
            return held.as_ref().map(HeldRef::from);
        }
        if !self.filter.contains(name) {
            return None;
        }
        self.base_index(type_url)?.resolve(name, proxy).map(HeldRef::Sent)
    }

    /// Records that the proxy now holds `held` under `name`.
    pub fn set(&mut self, type_url: &str, name: Name, held: Option<Held>, proxy: &ProxyIdentity) {
        let before = self.get(type_url, &name, proxy).is_some();
        match (before, held.is_some()) {
            (false, true) => self.count += 1,
            (true, false) => self.count -= 1,
            _ => {}
        }
        self.except.insert(name, held);
    }

    /// The proxy now holds exactly what `base` resolves to for it among `filter`'s names
    /// (`count` of them): every difference was just sent.
    pub fn rebase(&mut self, base: Arc<Prepared>, filter: Filter, count: usize) {
        self.base = Some(base);
        self.filter = filter;
        self.except.clear();
        self.count = count;
    }

    /// Every name the record may hold, possibly with repeats filtered by the caller: the
    /// base's names and the exceptions.
    pub fn for_each_name(&self, type_url: &str, mut f: impl FnMut(&Name)) {
        let base = self.base_index(type_url);
        for name in base.into_iter().flat_map(|b| b.by_name.keys()) {
            f(name);
        }
        for name in self.except.keys() {
            if !base.is_some_and(|b| b.contains(name)) {
                f(name);
            }
        }
    }

    /// The exceptions' names (the names where the proxy differs from the base).
    pub fn exceptions(&self) -> impl Iterator<Item = &Name> {
        self.except.keys()
    }

    /// Turns the record into an explicit list (no base): for the rare changes that
    /// re-interpret what the proxy holds, such as dropping a wildcard subscription.
    pub fn materialize(&mut self, type_url: &str, proxy: &ProxyIdentity) {
        let mut explicit = HashMap::with_capacity(self.count);
        self.for_each_name(type_url, |name| {
            if let Some(held) = self.get(type_url, name, proxy) {
                explicit.insert(Arc::clone(name), Some(held.to_owned()));
            }
        });
        self.base = None;
        self.filter = Filter::All;
        self.count = explicit.len();
        self.except = explicit;
    }

    /// What the proxy holds, sorted by name (operator views).
    pub fn list(&self, type_url: &str, proxy: &ProxyIdentity) -> Vec<(Name, Held)> {
        let mut all = Vec::with_capacity(self.count);
        self.for_each_name(type_url, |name| {
            if let Some(held) = self.get(type_url, name, proxy) {
                all.push((Arc::clone(name), held.to_owned()));
            }
        });
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// A borrowed [`Held`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum HeldRef<'a> {
    Sent(&'a Arc<ScopedResource>),
    Reported(&'a str),
}

impl<'a> From<&'a Held> for HeldRef<'a> {
    fn from(held: &'a Held) -> Self {
        match held {
            Held::Sent(r) => HeldRef::Sent(r),
            Held::Reported(v) => HeldRef::Reported(v),
        }
    }
}

impl HeldRef<'_> {
    pub fn version(&self) -> &str {
        match self {
            HeldRef::Sent(r) => &r.version,
            HeldRef::Reported(v) => v,
        }
    }

    pub fn to_owned(self) -> Held {
        match self {
            HeldRef::Sent(r) => Held::Sent(Arc::clone(r)),
            HeldRef::Reported(v) => Held::Reported(v.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::snapshot::Scope;
    use crate::server::snapshot::tests::snap;

    fn prepared(generation: u64, items: &[(&str, Scope, &[u8])]) -> Arc<Prepared> {
        Arc::new(Prepared::new(snap("", items), generation, None))
    }

    #[test]
    fn base_plus_exceptions() {
        let n1 = ProxyIdentity { node_name: Some("n1".into()), ..Default::default() };
        let g = prepared(
            1,
            &[("a", Scope::All, b"1"), ("b", Scope::Node("n2".into()), b"1"), ("c", Scope::All, b"1")],
        );
        let mut h = Holding::reported([("a".to_string(), "old".to_string())]);
        assert_eq!(h.get("t", "a", &n1).unwrap().version(), "old");
        assert_eq!(h.len(), 1);

        h.rebase(Arc::clone(&g), Filter::Names(Arc::new(HashSet::from(["a".into(), "b".into()]))), 1);
        assert!(matches!(h.get("t", "a", &n1), Some(HeldRef::Sent(_))));
        assert!(h.get("t", "b", &n1).is_none(), "scoped to another node");
        assert!(h.get("t", "c", &n1).is_none(), "not subscribed");

        h.set("t", "a".into(), None, &n1);
        h.set("t", "z".into(), Some(Held::Reported("9".into())), &n1);
        assert!(h.get("t", "a", &n1).is_none());
        assert_eq!(h.len(), 1);
        let listed: Vec<String> = h.list("t", &n1).into_iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(listed, ["z"]);

        h.materialize("t", &n1);
        assert!(h.base().is_none());
        assert_eq!(h.get("t", "z", &n1).unwrap().version(), "9");
        assert_eq!(h.len(), 1);
    }
}
