//! Snapshots as streams consume them: per type, resources indexed by name in persistent maps,
//! plus the names that changed in each recent generation.
//!
//! Persistent (structure-sharing) maps are what make a large mesh cheap to serve: a
//! one-resource update clones the previous index in O(1) and touches O(log n) nodes, and a
//! proxy can keep the generation it was last sent as its "what I hold" record
//! (see `holding.rs`) without copying anything. The change history lets a stream that is a
//! few generations behind find what differs without comparing whole indexes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::identity::ProxyIdentity;
use super::snapshot::{ScopedResource, Snapshot, SnapshotUpdate};
use crate::Any;

/// A name shared by the index, the change sets and the streams' records.
pub(crate) type Name = Arc<str>;

/// The variants of one name, in priority order: a proxy gets the first whose scope matches.
pub(crate) type Variants = Arc<[Arc<ScopedResource>]>;

/// Generations of change sets kept, and names across them: enough for any stream that is
/// busy for a few pushes; a stream further behind compares whole indexes instead.
const HISTORY_GENERATIONS: usize = 64;
const HISTORY_NAMES: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct Prepared {
    /// 1 for the first snapshot that went live, then +1 each time.
    pub generation: u64,
    pub version: String,
    pub types: HashMap<String, TypeIndex>,
    /// Per type, the names that differ from generation - 1 (added, removed, or another
    /// version or scope). A type absent here did not change.
    pub changes: Arc<TypeChanges>,
    /// Change sets of this and earlier generations, newest last.
    history: VecDeque<(u64, Arc<TypeChanges>)>,
    history_names: usize,
    /// When the first change of the burst that made this generation reached the server
    /// (set by the debouncer), for `pilot_proxy_convergence_time`.
    pub changed_at: std::time::Instant,
}

pub(crate) type TypeChanges = HashMap<String, HashSet<Name>>;

/// One type's resources, by name.
#[derive(Debug, Default, Clone)]
pub(crate) struct TypeIndex {
    pub by_name: imbl::HashMap<Name, Variants>,
}

impl TypeIndex {
    /// The variant of `name` this proxy sees, if any.
    pub fn resolve(&self, name: &str, proxy: &ProxyIdentity) -> Option<&Arc<ScopedResource>> {
        self.by_name.get(name)?.iter().find(|r| r.scope.matches(proxy))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// The names of one type that may differ between an older generation and this one.
pub(crate) enum Changed<'a> {
    /// Exactly these (their union, when several generations apart).
    Names(Vec<&'a HashSet<Name>>),
    /// Unknown: the older generation is beyond the history. Compare everything.
    Everything,
}

impl Prepared {
    /// Indexes a full snapshot and diffs it against `previous`. Resources equal to the
    /// previous generation's (same version and scope) are taken from it, so generations
    /// share memory and a stream holding an old one costs little.
    pub fn new(snapshot: Snapshot, generation: u64, previous: Option<&Prepared>) -> Self {
        let version = if snapshot.version.is_empty() { generation.to_string() } else { snapshot.version };
        let mut types: HashMap<String, TypeIndex> = HashMap::with_capacity(snapshot.resources.len());
        let mut changes = TypeChanges::new();
        for (type_url, resources) in snapshot.resources {
            let before = previous.and_then(|p| p.types.get(&type_url));
            let mut grouped: HashMap<Name, Vec<Arc<ScopedResource>>> =
                HashMap::with_capacity(resources.len());
            for r in resources {
                let name: Name = match before.and_then(|b| b.by_name.get_key_value(r.name.as_str())) {
                    Some((name, _)) => Arc::clone(name),
                    None => Arc::from(r.name.as_str()),
                };
                grouped.entry(name).or_default().push(Arc::new(with_version(r)));
            }
            let mut index = TypeIndex::default();
            let changed = changes.entry(type_url.clone()).or_default();
            for (name, variants) in grouped {
                let variants = match before.and_then(|b| b.by_name.get(&name)) {
                    Some(old) if same(old, &variants) => Arc::clone(old),
                    _ => {
                        changed.insert(Arc::clone(&name));
                        Variants::from(variants)
                    }
                };
                index.by_name.insert(name, variants);
            }
            if let Some(before) = before {
                changed.extend(before.by_name.keys().filter(|n| !index.contains(n)).cloned());
            }
            types.insert(type_url, index);
        }
        // Types that disappeared entirely: every name in them is removed.
        for (type_url, before) in previous.map(|p| &p.types).into_iter().flatten() {
            if !types.contains_key(type_url) {
                changes.entry(type_url.clone()).or_default().extend(before.by_name.keys().cloned());
            }
        }
        changes.retain(|_, names| !names.is_empty());
        Self::finish(generation, version, types, changes, previous)
    }

    /// Applies `updates`, in order, to `previous` (or to nothing).
    pub fn update(updates: Vec<SnapshotUpdate>, generation: u64, previous: Option<&Prepared>) -> Self {
        let mut types: HashMap<String, TypeIndex> = previous.map(|p| p.types.clone()).unwrap_or_default();
        let mut changes = TypeChanges::new();
        let mut version = String::new();
        for update in updates {
            if !update.version.is_empty() {
                version = update.version;
            }
            for (type_url, sets) in update.set {
                let index = types.entry(type_url.clone()).or_default();
                let changed = changes.entry(type_url).or_default();
                for (name, variants) in sets {
                    let variants: Vec<Arc<ScopedResource>> =
                        variants.into_iter().map(|r| Arc::new(with_version(r))).collect();
                    let name = index
                        .by_name
                        .get_key_value(name.as_str())
                        .map_or_else(|| Name::from(name.as_str()), |(n, _)| Arc::clone(n));
                    if variants.is_empty() {
                        if index.by_name.remove(&name).is_some() {
                            changed.insert(name);
                        }
                        continue;
                    }
                    if index.by_name.get(&name).is_some_and(|old| same(old, &variants)) {
                        continue;
                    }
                    index.by_name.insert(Arc::clone(&name), Variants::from(variants));
                    changed.insert(name);
                }
            }
        }
        if version.is_empty() {
            version = generation.to_string();
        }
        // An update can undo itself within one debounce window; only real differences count.
        if let Some(previous) = previous {
            for (type_url, names) in &mut changes {
                let (before, after) = (previous.types.get(type_url), types.get(type_url));
                names.retain(|n| {
                    match (before.and_then(|b| b.by_name.get(n)), after.and_then(|a| a.by_name.get(n))) {
                        (Some(b), Some(a)) => !same(b, a),
                        (None, None) => false,
                        _ => true,
                    }
                });
            }
        }
        changes.retain(|_, names| !names.is_empty());
        Self::finish(generation, version, types, changes, previous)
    }

    fn finish(
        generation: u64,
        version: String,
        types: HashMap<String, TypeIndex>,
        changes: TypeChanges,
        previous: Option<&Prepared>,
    ) -> Self {
        let changes = Arc::new(changes);
        let mut history = previous.map(|p| p.history.clone()).unwrap_or_default();
        let mut history_names = previous.map_or(0, |p| p.history_names);
        // A generation after a gap (the first one) has no usable predecessor.
        if previous.is_some_and(|p| p.generation + 1 != generation) {
            history.clear();
            history_names = 0;
        }
        history_names += changes.values().map(HashSet::len).sum::<usize>();
        history.push_back((generation, Arc::clone(&changes)));
        while history.len() > HISTORY_GENERATIONS || (history_names > HISTORY_NAMES && history.len() > 1) {
            if let Some((_, dropped)) = history.pop_front() {
                history_names -= dropped.values().map(HashSet::len).sum::<usize>();
            }
        }
        Self {
            generation,
            version,
            types,
            changes,
            history,
            history_names,
            changed_at: std::time::Instant::now(),
        }
    }

    /// The names of `type_url` that may differ between generation `since` and this one.
    pub fn changed_since(&self, type_url: &str, since: u64) -> Changed<'_> {
        if since >= self.generation {
            return Changed::Names(Vec::new());
        }
        // The history must reach back to the generation right after `since`.
        if self.history.front().is_none_or(|(oldest, _)| *oldest > since + 1) {
            return Changed::Everything;
        }
        Changed::Names(
            self.history
                .iter()
                .filter(|(generation, _)| *generation > since)
                .filter_map(|(_, changes)| changes.get(type_url))
                .collect(),
        )
    }
}

/// Whether two variant lists serve the same thing to every proxy.
fn same(a: &[Arc<ScopedResource>], b: &[Arc<ScopedResource>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || (x.version == y.version && x.scope == y.scope))
}

fn with_version(mut r: ScopedResource) -> ScopedResource {
    if r.version.is_empty() {
        r.version = content_version(&r.resource);
    }
    r
}

/// A version derived from the resource bytes (FNV-1a, 64 bit). Stable across processes and
/// Rust releases, unlike `DefaultHasher`, so a restarted server agrees with the versions a
/// reconnecting client reports in `initial_resource_versions`.
pub(crate) fn content_version(any: &Any) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in any.type_url.as_bytes().iter().chain([0u8].iter()).chain(any.value.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::snapshot::Scope;
    use crate::server::snapshot::tests::{any, snap};

    fn names(p: &Prepared) -> HashSet<String> {
        p.changes.get("t").into_iter().flatten().map(|n| n.to_string()).collect()
    }

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_snapshot_changes_everything_then_only_the_difference() {
        let a = Prepared::new(snap("1", &[("a", Scope::All, b"1"), ("b", Scope::All, b"1")]), 1, None);
        assert_eq!(names(&a), set(&["a", "b"]));

        let b = Prepared::new(snap("2", &[("a", Scope::All, b"1"), ("b", Scope::All, b"2")]), 2, Some(&a));
        assert_eq!(names(&b), set(&["b"]));
        // Unchanged resources are shared with the previous generation.
        assert!(Arc::ptr_eq(&a.types["t"].by_name["a"], &b.types["t"].by_name["a"]));

        // Same content, new scope: changed, because other proxies may now see it.
        let c = Prepared::new(
            snap("3", &[("a", Scope::Node("n".into()), b"1"), ("b", Scope::All, b"2")]),
            3,
            Some(&b),
        );
        assert_eq!(names(&c), set(&["a"]));

        let d = Prepared::new(snap("4", &[("a", Scope::Node("n".into()), b"1")]), 4, Some(&c));
        assert_eq!(names(&d), set(&["b"]));

        let e = Prepared::new(Snapshot::new("5"), 5, Some(&d));
        assert_eq!(names(&e), set(&["a"]));

        let f = Prepared::new(Snapshot::new(""), 6, Some(&e));
        assert!(f.changes.is_empty());
        assert_eq!(f.version, "6");
    }

    #[test]
    fn updates_change_only_what_they_name() {
        let a = Prepared::new(snap("1", &[("a", Scope::All, b"1"), ("b", Scope::All, b"1")]), 1, None);
        let mut u1 = SnapshotUpdate::new("2");
        u1.set("t", "b", vec![ScopedResource::new("b", Scope::All, any(b"2"))]);
        u1.set("t", "c", vec![ScopedResource::new("c", Scope::All, any(b"1"))]);
        let mut u2 = SnapshotUpdate::new("3");
        u2.remove("t", "a");
        // c comes and goes within one debounce window: not a change.
        u2.set("t", "c", Vec::new());
        let b = Prepared::update(vec![u1, u2], 2, Some(&a));
        assert_eq!(b.version, "3");
        assert_eq!(names(&b), set(&["a", "b"]));
        assert!(b.types["t"].resolve("c", &ProxyIdentity::default()).is_none());
        assert_eq!(b.types["t"].resolve("b", &ProxyIdentity::default()).unwrap().resource.value, b"2");
        // The first generation is untouched.
        assert_eq!(a.types["t"].resolve("b", &ProxyIdentity::default()).unwrap().resource.value, b"1");
    }

    #[test]
    fn history_answers_for_recent_generations_only() {
        let mut p = Prepared::new(snap("1", &[("a", Scope::All, b"0")]), 1, None);
        for g in 2..=100u64 {
            let mut u = SnapshotUpdate::new("");
            let name = format!("r{g}");
            u.set("t", &name, vec![ScopedResource::new(name.as_str(), Scope::All, any(b"x"))]);
            p = Prepared::update(vec![u], g, Some(&p));
        }
        let Changed::Names(sets) = p.changed_since("t", 97) else { panic!("history lost") };
        let union: HashSet<&str> = sets.iter().flat_map(|s| s.iter().map(|n| &**n)).collect();
        assert_eq!(union, HashSet::from(["r98", "r99", "r100"]));
        assert!(matches!(p.changed_since("t", 100), Changed::Names(v) if v.is_empty()));
        assert!(matches!(p.changed_since("t", 2), Changed::Everything));
    }

    #[test]
    fn first_matching_variant_wins() {
        let p = Prepared::new(
            snap("1", &[("a", Scope::Node("n1".into()), b"for-n1"), ("a", Scope::All, b"default")]),
            1,
            None,
        );
        let n1 = ProxyIdentity { node_name: Some("n1".into()), ..Default::default() };
        let other = ProxyIdentity::default();
        assert_eq!(p.types["t"].resolve("a", &n1).unwrap().resource.value, b"for-n1");
        assert_eq!(p.types["t"].resolve("a", &other).unwrap().resource.value, b"default");
    }
}
