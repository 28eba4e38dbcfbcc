//! The JSON log lines (`--log-format json`, tracing-subscriber's JSON format) of Weft's
//! processes, for tests that assert on what was logged and with which fields: no colour
//! codes or field order to trip over, unlike the text format.

use serde_json::Value;

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
}
