//! Finding a process's log line in the text it wrote to stderr: tests assert that a
//! refusal was logged, and with what.

use anyhow::{Result, bail};
use std::time::{Duration, Instant};

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
