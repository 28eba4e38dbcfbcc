//! The Address resources an agent holds, by name, as typed resources; the source of each
//! [`WorkloadState`].
//!
//! Both model sources fill it the same way: xDS (each response's upserts and removals) and
//! the local config file (its whole translation each time). A resource that does not
//! convert is refused by name and whatever was held under that name before stays, so one
//! bad object never takes the others down with it.

use crate::{ConvertError, Resource, WorkloadState};
use std::collections::HashMap;
use weft_xds::istio::workload::Address;

#[derive(Debug, Default)]
pub struct AddressTable {
    resources: HashMap<String, Resource>,
    trust_domain: String,
}

impl AddressTable {
    /// `trust_domain` is the one workloads without their own get (Istio's default).
    pub fn new(trust_domain: impl Into<String>) -> AddressTable {
        AddressTable { resources: HashMap::new(), trust_domain: trust_domain.into() }
    }

    /// Applies a set of changes; returns what was refused. The good ones are applied even
    /// when some are refused.
    pub fn apply<'a>(
        &mut self,
        upserts: impl IntoIterator<Item = (&'a str, &'a Address)>,
        removals: impl IntoIterator<Item = &'a str>,
    ) -> Vec<ConvertError> {
        let mut refused = Vec::new();
        for (name, address) in upserts {
            match Resource::from_address(name, address, &self.trust_domain) {
                Ok(r) => {
                    self.resources.insert(name.to_owned(), r);
                }
                Err(e) => refused.push(e),
            }
        }
        for name in removals {
            self.resources.remove(name);
        }
        refused
    }

    /// Replaces everything with `all` (a whole file's worth). Refuses the whole set if any
    /// resource does not convert, leaving the table as it was.
    pub fn replace<'a>(
        &mut self,
        all: impl IntoIterator<Item = (&'a str, &'a Address)>,
    ) -> Result<(), ConvertError> {
        let mut next = HashMap::new();
        for (name, address) in all {
            next.insert(name.to_owned(), Resource::from_address(name, address, &self.trust_domain)?);
        }
        self.resources = next;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The indexes the data path reads, built from what is held now.
    pub fn state(&self) -> WorkloadState {
        WorkloadState::new(self.resources.values())
    }
}
