//! Recording benchmark tables in BENCHMARKS.md, between markers, leaving the prose
//! around them untouched.

use anyhow::Result;
use std::path::Path;

/// The line that heads every recorded table: when, on what.
fn machine_line() -> String {
    format!(
        "Measured {} on {} cores, kernel {}, with `cargo xtask bench`.",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    )
}

/// Replaces the text between `begin` and `end` in the file at `path` with `table`. When
/// the markers are missing, appends `section` (unless `heading` is already there) and
/// the marked table at the end.
pub fn record(path: &Path, begin: &str, end: &str, table: &str, heading: &str, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}\n{}\n\n{table}{end}", machine_line());
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + end.len()..]),
        _ => {
            let section = if heading.is_empty() || old.contains(heading) {
                String::new()
            } else {
                format!("{section}\n")
            };
            format!("{}\n\n{section}{block}\n", old.trim_end())
        }
    };
    std::fs::write(path, new)?;
    Ok(())
}
