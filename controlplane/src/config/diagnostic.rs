//! What validation says about an object: a [`Diagnostic`] names the object, where it came
//! from (file:line or Kubernetes), the field and the reason, in one line a person can act on.

use crate::source::{ObjectKey, Origin};
use serde_json::{Value, json};
use std::{cmp::Ordering, fmt};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The object (or document) is rejected; the last good version, if any, stays in force.
    Error,
    /// The object is served, but probably does not do what its author wants.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about one object (or about a document that could not be read at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Istio's analyzer code where Istio has one (`IST0109`, …).
    pub code: Option<&'static str>,
    /// The object; `None` when the document never became an object (a YAML syntax error).
    pub object: Option<ObjectKey>,
    pub origin: Origin,
    /// Path of the offending field, like `spec.http[0].route[1].weight`; empty when the
    /// finding is about the whole object.
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        object: &ObjectKey,
        origin: &Origin,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code: None,
            object: Some(object.clone()),
            origin: origin.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn warning(
        object: &ObjectKey,
        origin: &Origin,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(object, origin, field, message) }
    }

    /// A document that never became an object.
    pub fn unreadable(origin: &Origin, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code: None,
            object: None,
            origin: origin.clone(),
            field: String::new(),
            message: message.into(),
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The order `weftctl analyze` prints in: by file and line, then object, field, message.
    /// Kubernetes origins sort after files.
    pub fn cmp_by_location(&self, other: &Self) -> Ordering {
        origin_sort_key(&self.origin)
            .cmp(&origin_sort_key(&other.origin))
            .then_with(|| self.object.cmp(&other.object))
            .then_with(|| self.severity.cmp(&other.severity))
            .then_with(|| self.field.cmp(&other.field))
            .then_with(|| self.message.cmp(&other.message))
    }

    /// A JSON form for tools (`weftctl analyze --output json`).
    pub fn to_json(&self) -> Value {
        let (file, line, resource_version) = match &self.origin {
            Origin::File { path, line } => (Some(path.display().to_string()), Some(*line), None),
            Origin::Kubernetes { resource_version } => (None, None, Some(resource_version.clone())),
        };
        json!({
            "severity": self.severity.to_string(),
            "code": self.code,
            "group": self.object.as_ref().map(|k| k.group.clone()),
            "kind": self.object.as_ref().map(|k| k.kind.clone()),
            "namespace": self.object.as_ref().and_then(|k| k.namespace.clone()),
            "name": self.object.as_ref().map(|k| k.name.clone()),
            "file": file,
            "line": line,
            "resourceVersion": resource_version,
            "field": self.field,
            "message": self.message,
            "text": self.to_string(),
        })
    }
}

/// Orders origins by file path, then line; Kubernetes origins last.
pub(crate) fn origin_sort_key(origin: &Origin) -> (u8, &std::path::Path, usize, &str) {
    match origin {
        Origin::File { path, line } => (0, path.as_path(), *line, ""),
        Origin::Kubernetes { resource_version } => (1, std::path::Path::new(""), 0, resource_version),
    }
}

/// `error: VirtualService/bookinfo/reviews (conf/reviews.yaml:12): spec.http[0].route[1].weight: weight -10 is negative`
/// with ` [IST0109]` appended when Istio has a code for the finding.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        match &self.object {
            Some(object) => write!(f, "{object} ({}): ", self.origin)?,
            None => write!(f, "{}: ", self.origin)?,
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(code) = self.code {
            write!(f, " [{code}]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ObjectKey {
        ObjectKey {
            group: "networking.istio.io".into(),
            kind: "VirtualService".into(),
            namespace: Some("bookinfo".into()),
            name: "reviews".into(),
        }
    }

    #[test]
    fn display_names_object_origin_field_and_reason() {
        let origin = Origin::File { path: "conf/reviews.yaml".into(), line: 12 };
        let d = Diagnostic::error(&key(), &origin, "spec.http[0].route[1].weight", "weight -10 is negative");
        assert_eq!(
            d.to_string(),
            "error: VirtualService/bookinfo/reviews (conf/reviews.yaml:12): spec.http[0].route[1].weight: weight -10 is negative"
        );
        let w = Diagnostic::warning(&key(), &origin, "", "shadowed").with_code("IST0109");
        assert_eq!(
            w.to_string(),
            "warning: VirtualService/bookinfo/reviews (conf/reviews.yaml:12): shadowed [IST0109]"
        );
    }

    #[test]
    fn unreadable_has_no_object() {
        let origin = Origin::File { path: "conf/bad.yaml".into(), line: 3 };
        assert_eq!(
            Diagnostic::unreadable(&origin, "not YAML").to_string(),
            "error: conf/bad.yaml:3: not YAML"
        );
    }
}
