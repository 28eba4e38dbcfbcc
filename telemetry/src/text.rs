//! The text exposition format (version 0.0.4): family headers and label values.

use std::fmt::Write as _;

/// A metric family's type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Writes a family's `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: Kind, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
}

/// Appends `name="value",` with the value escaped as the format requires (backslash,
/// double quote, newline); [`end_labels`] drops the last comma.
pub fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\",");
}

/// Drops the trailing comma [`push_label`] leaves.
pub fn end_labels(out: &mut String) {
    if out.ends_with(',') {
        out.pop();
    }
}

/// Label text from pairs, escaped: `a="1",b="2"`.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(pairs.iter().map(|(n, v)| n.len() + v.len() + 4).sum());
    for (name, value) in pairs {
        push_label(&mut out, name, value);
    }
    end_labels(&mut out);
    out
}

/// One sample line: `name{labels} value` (no braces when `labels` is empty).
pub fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_the_format_requires() {
        assert_eq!(labels(&[("a", "we\"ird\\na\nme"), ("b", "x")]), r#"a="we\"ird\\na\nme",b="x""#);
        assert_eq!(labels(&[]), "");
    }

    #[test]
    fn families_and_samples() {
        let mut out = String::new();
        family(&mut out, "x_total", Kind::Counter, "Things.");
        sample(&mut out, "x_total", "", 3);
        sample(&mut out, "x_total", "a=\"1\"", 4);
        assert_eq!(out, "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\nx_total{a=\"1\"} 4\n");
    }
}
