//! The standard `process_*` metrics (as Prometheus' client libraries export them), read
//! from /proc/self when scraped.

use crate::text::{self, Kind};
use std::sync::OnceLock;

/// What /proc says about this process now.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64
}

/// Seconds since the epoch at boot (`btime` in /proc/stat); read once.
fn boot_time() -> f64 {
    static BOOT: OnceLock<f64> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok()))
            .unwrap_or(0.0)
    })
}

impl Process {
    /// Reads /proc/self; what cannot be read stays 0.
    pub fn read() -> Process {
        let mut p = Process::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            p.parse_stat(&stat, clock_ticks(), page_size(), boot_time());
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            p.max_fds = limits
                .lines()
                .find_map(|l| l.strip_prefix("Max open files")?.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
        }
        p
    }

    /// /proc/PID/stat: the command (field 2) is in parentheses and may hold spaces, so
    /// fields are counted after the last `)`; that remainder starts at field 3.
    fn parse_stat(&mut self, stat: &str, ticks: f64, page: u64, boot: f64) {
        let Some((_, rest)) = stat.rsplit_once(')') else { return };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        self.cpu_seconds = (field(14) + field(15)) as f64 / ticks;
        self.start_time_seconds = boot + field(22) as f64 / ticks;
        self.virtual_bytes = field(23);
        self.resident_bytes = field(24) * page;
    }

    pub fn render(&self, out: &mut String) {
        let families: [(&str, Kind, &str, f64); 6] = [
            (
                "process_cpu_seconds_total",
                Kind::Counter,
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                Kind::Gauge,
                "Resident memory size in bytes.",
                self.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                Kind::Gauge,
                "Virtual memory size in bytes.",
                self.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
            ("process_open_fds", Kind::Gauge, "Number of open file descriptors.", self.open_fds as f64),
            ("process_max_fds", Kind::Gauge, "Maximum number of open file descriptors.", self.max_fds as f64),
        ];
        for (name, kind, help, value) in families {
            text::family(out, name, kind, help);
            text::sample(out, name, "", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_command() {
        let stat = "42 (weft agent) S 1 42 42 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 1000 123456789 300 \
                    18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let mut p = Process::default();
        p.parse_stat(stat, 100.0, 4096, 1_700_000_000.0);
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
        assert_eq!(p.virtual_bytes, 123456789);
        assert_eq!(p.resident_bytes, 300 * 4096);
    }

    #[test]
    fn reads_this_process() {
        let p = Process::read();
        assert!(p.resident_bytes > 0 && p.open_fds > 0 && p.max_fds > 0, "{p:?}");
        assert!(p.start_time_seconds > 1_500_000_000.0, "{p:?}");
        let mut out = String::new();
        p.render(&mut out);
        assert!(
            out.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "),
            "{out}"
        );
    }
}
