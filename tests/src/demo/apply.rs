//! `kubectl -n bookinfo apply -f` and `delete -f`, for weftd's config directory: objects
//! are kept by kind, namespace and name, so applying a sample replaces the objects of the
//! same names as in a cluster, and all of them are written as one file in one rename, so
//! weftd sees each step whole.

use anyhow::{Context, Result};
use serde::Deserialize as _;
use serde_yaml::Value;
use std::collections::BTreeMap;

use super::samples::Sample;
use crate::scenario::Scenario;

/// The file in weftd's config directory that holds every applied object.
const FILE: &str = "applied.yaml";

/// An object's kind, namespace and name: what `kubectl apply` replaces it by.
type Key = (String, String, String);

/// The objects applied so far.
pub struct Applied {
    namespace: &'static str,
    objects: BTreeMap<Key, String>,
}

impl Applied {
    /// Objects without a namespace go to `namespace`, as with `kubectl -n`.
    pub fn new(namespace: &'static str) -> Applied {
        Applied { namespace, objects: BTreeMap::new() }
    }

    /// `kubectl apply -f sample`.
    pub fn apply(&mut self, sample: &Sample) -> Result<()> {
        for (key, text) in self.documents(sample)? {
            self.objects.insert(key, text);
        }
        Ok(())
    }

    /// `kubectl delete -f sample`.
    pub fn delete(&mut self, sample: &Sample) -> Result<()> {
        for (key, _) in self.documents(sample)? {
            self.objects.remove(&key);
        }
        Ok(())
    }

    /// Writes every applied object to weftd's config directory at once.
    pub fn write(&self, s: &Scenario) -> Result<()> {
        s.write_kubernetes_yaml(FILE, &self.objects.values().cloned().collect::<Vec<_>>().join("---\n"))
    }

    fn documents(&self, sample: &Sample) -> Result<Vec<(Key, String)>> {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(sample.yaml) {
            let mut object = Value::deserialize(doc).with_context(|| format!("parsing {}", sample.file))?;
            let kind = object["kind"].as_str().context("an object without kind")?.to_owned();
            let metadata = object["metadata"].as_mapping_mut().context("an object without metadata")?;
            let namespace = metadata
                .entry("namespace".into())
                .or_insert_with(|| self.namespace.into())
                .as_str()
                .context("metadata.namespace is not a string")?
                .to_owned();
            let name = object["metadata"]["name"].as_str().context("an object without a name")?.to_owned();
            out.push(((kind, namespace, name), serde_yaml::to_string(&object)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::samples;

    #[test]
    fn apply_replaces_by_name_and_delete_removes() {
        let mut a = Applied::new("bookinfo");
        a.apply(&samples::VIRTUAL_SERVICE_ALL_V1).unwrap();
        assert_eq!(a.objects.len(), 4);
        a.apply(&samples::VIRTUAL_SERVICE_REVIEWS_TEST_V2).unwrap();
        assert_eq!(a.objects.len(), 4);
        let reviews = &a.objects[&("VirtualService".into(), "bookinfo".into(), "reviews".into())];
        assert!(reviews.contains("jason") && reviews.contains("namespace: bookinfo"), "{reviews}");
        a.delete(&samples::VIRTUAL_SERVICE_ALL_V1).unwrap();
        assert!(a.objects.is_empty());
    }
}
