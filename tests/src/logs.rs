//! What Weft's processes logged, for tests that assert that something was logged and with
//! which fields: the JSON lines (`--log-format json`, tracing-subscriber's JSON format) read
//! by field, or a text log searched for a line with given fragments.

use anyhow::{Result, bail};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The flags that make an agent log JSON.
pub const AGENT_JSON_ARGS: [&str; 2] = ["--log-format", "json"];

/// One log line: `{"level":…,"target":…,"fields":{"message":…,…},…}`.
#[derive(Debug, Clone)]
pub struct Event(pub Value);

impl Event {
    pub fn level(&self) -> &str {
        self.0["level"].as_str().unwrap_or_default()
    }

    pub fn target(&self) -> &str {
        self.0["target"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.field("message").unwrap_or_default()
    }

    /// A field as text (strings as they are, other values as JSON), e.g. `src.identity`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0["fields"][name].as_str()
    }

    /// Whether the event carries every `(field, value)` of `fields`; a number or boolean
    /// field matches its JSON text.
    pub fn has(&self, fields: &[(&str, &str)]) -> bool {
        fields.iter().all(|(name, want)| match &self.0["fields"][*name] {
            Value::String(s) => s == want,
            Value::Null => false,
            other => serde_json::from_str::<Value>(want).is_ok_and(|w| w == *other),
        })
    }
}

/// The JSON events in `text` (a process's stderr); other lines (a panic message, text
/// from before the logger started) are skipped.
pub fn events(text: &str) -> Vec<Event> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .map(Event)
        .collect()
}

/// The events of `text` with this message and every one of `fields`.
pub fn matching(text: &str, message: &str, fields: &[(&str, &str)]) -> Vec<Event> {
    events(text).into_iter().filter(|e| e.message() == message && e.has(fields)).collect()
}

/// Waits until `text()` holds at least `n` events with this message and every one of
/// `fields` (a connection is logged when it closes, which can follow the client's view of
/// it by a moment), then returns them all; after `patience`, returns what there is.
pub fn wait_matching(
    text: impl Fn() -> String,
    message: &str,
    fields: &[(&str, &str)],
    n: usize,
    patience: Duration,
) -> Vec<Event> {
    let deadline = Instant::now() + patience;
    loop {
        let found = matching(&text(), message, fields);
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of `text` that contain every one of `fragments`, with terminal colour codes
/// removed first (a log written with ANSI styling splits `key=value` with escapes).
pub fn lines_with(text: &str, fragments: &[&str]) -> Vec<String> {
    text.lines().map(strip_ansi).filter(|line| fragments.iter().all(|f| line.contains(f))).collect()
}

/// Waits until `text()` (e.g. `|| agent.stderr()`) holds a line with every fragment and
/// returns it. Fails after `patience`, naming `whose` log and showing its end.
pub fn wait_for_line(
    whose: &str,
    text: impl Fn() -> String,
    fragments: &[&str],
    patience: Duration,
) -> Result<String> {
    let deadline = Instant::now() + patience;
    loop {
        let all = text();
        if let Some(line) = lines_with(&all, fragments).pop() {
            return Ok(line);
        }
        if Instant::now() > deadline {
            let tail: Vec<String> = all.lines().rev().take(40).map(strip_ansi).collect();
            let tail: Vec<&str> = tail.iter().rev().map(String::as_str).collect();
            bail!(
                "{whose} logged no line with {fragments:?} within {patience:?}; its last lines:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `line` without CSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tracing_json_lines() {
        let text = concat!(
            "not json\n",
            r#"{"timestamp":"t","level":"WARN","fields":{"message":"connection denied by policy","policy":"shop/x","port":8080},"target":"access"}"#,
            "\n",
            r#"{"timestamp":"t","level":"INFO","fields":{"message":"connection complete","policy":"shop/y"},"target":"access"}"#,
            "\n"
        );
        let denied = matching(text, "connection denied by policy", &[("policy", "shop/x"), ("port", "8080")]);
        assert_eq!(denied.len(), 1);
        assert_eq!((denied[0].level(), denied[0].target()), ("WARN", "access"));
        assert!(matching(text, "connection denied by policy", &[("policy", "shop/y")]).is_empty());
        assert!(matching(text, "connection complete", &[("absent", "x")]).is_empty());
    }
    #[test]
    fn finds_lines_through_colour_codes() {
        let text = "\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m refused \u{1b}[3mpeer\u{1b}[0m\u{1b}[2m=\u{1b}[0m1.2.3.4:5\nother\n";
        assert_eq!(lines_with(text, &["WARN", "peer=1.2.3.4"]), ["2026  WARN refused peer=1.2.3.4:5"]);
        assert!(lines_with(text, &["WARN", "peer=9.9.9.9"]).is_empty());
    }

    #[test]
    fn a_missing_line_is_an_error_that_shows_the_log() {
        let e = wait_for_line("agent", || "a\nb\n".into(), &["c"], Duration::ZERO).unwrap_err();
        assert!(
            e.to_string().contains("agent logged no line with [\"c\"]") && e.to_string().ends_with("a\nb"),
            "{e}"
        );
    }
}
