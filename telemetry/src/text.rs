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

/// One sample line with a whole-number value, written piece by piece: a scrape of a busy
/// waypoint is tens of MB of these lines, and `format!` machinery was most of its CPU.
pub fn sample_u64(out: &mut String, name: &str, suffix: &str, labels: &str, le: Option<&str>, value: u64) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some(le) = le {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_u64(out, value);
    out.push('\n');
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
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
    fn whole_numbers_print_as_display_does() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        let mut out = String::new();
        sample_u64(&mut out, "x", "_bucket", "a=\"1\"", Some("0.5"), 3);
        sample_u64(&mut out, "x", "_bucket", "", Some("+Inf"), 4);
        sample_u64(&mut out, "x", "_count", "", None, 5);
        assert_eq!(out, "x_bucket{a=\"1\",le=\"0.5\"} 3\nx_bucket{le=\"+Inf\"} 4\nx_count 5\n");
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
