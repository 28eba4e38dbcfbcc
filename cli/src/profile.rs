//! `weftctl profile list | dump NAME | diff A B`: the charts' profiles (charts/profiles/),
//! which istioctl dropped with its operator and users still ask for.
//!
//! A profile is a values preset applied by the charts themselves (their zzz_profile.yaml,
//! as Istio's): each chart's defaults, then the profile's section for that chart and its
//! `meshConfig`, merged the way Helm's `mustMergeOverwrite` merges (maps deeply, anything
//! else replaced). `dump` shows that result per chart; it is the values Helm starts from
//! before the user's own `--set`. The presets and the charts' defaults are compiled in, so
//! weftctl works without a checkout; `--charts DIR` reads a checkout's instead. weftctl
//! renders no templates: installing is `helm install` (see the README).

use crate::exit;
use serde_yaml::{Mapping, Value};
use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf, process::ExitCode};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Read profiles and chart defaults from this charts/ directory instead of the copies
    /// built into weftctl.
    #[arg(long, global = true, value_name = "DIR")]
    charts: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The profiles, each with what it is for.
    List,
    /// The values a profile gives each chart (YAML), or one chart's with --chart.
    Dump {
        profile: String,
        /// Only this chart's values: base, weftd, agent or gateway.
        #[arg(long)]
        chart: Option<String>,
    },
    /// The values two profiles set differently, flattened to `chart.path.to.key: value`,
    /// as a unified diff (`-` only in A, `+` only in B).
    Diff { a: String, b: String },
}

/// The charts a profile configures, in install order; each takes the profile section of
/// its own name.
const CHARTS: [&str; 4] = ["base", "weftd", "agent", "gateway"];

/// The presets and chart defaults built into weftctl (the same files `--charts` reads).
const BUILT_IN_PROFILES: [(&str, &str); 6] = [
    ("ambient", include_str!("../../charts/profiles/profile-ambient.yaml")),
    ("default", include_str!("../../charts/profiles/profile-default.yaml")),
    ("demo", include_str!("../../charts/profiles/profile-demo.yaml")),
    ("empty", include_str!("../../charts/profiles/profile-empty.yaml")),
    ("minimal", include_str!("../../charts/profiles/profile-minimal.yaml")),
    ("remote", include_str!("../../charts/profiles/profile-remote.yaml")),
];
const BUILT_IN_VALUES: [(&str, &str); 4] = [
    ("base", include_str!("../../charts/base/values.yaml")),
    ("weftd", include_str!("../../charts/weftd/values.yaml")),
    ("agent", include_str!("../../charts/agent/values.yaml")),
    ("gateway", include_str!("../../charts/gateway/values.yaml")),
];

/// Why a profile cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown profile {name:?}; the profiles are {}", known.join(", "))]
    UnknownProfile { name: String, known: Vec<String> },
    #[error("unknown chart {0:?}; profiles configure base, weftd, agent and gateway")]
    UnknownChart(String),
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{what}: not YAML a chart can use: {reason}")]
    Parse { what: String, reason: String },
}

/// Profiles by name (their YAML text) and each chart's defaults.
struct Sources {
    profiles: BTreeMap<String, String>,
    values: BTreeMap<String, String>,
}

impl Sources {
    fn load(charts: Option<&PathBuf>) -> Result<Sources, ProfileError> {
        let Some(dir) = charts else {
            let own = |pairs: &[(&str, &str)]| {
                pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
            };
            return Ok(Sources { profiles: own(&BUILT_IN_PROFILES), values: own(&BUILT_IN_VALUES) });
        };
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| ProfileError::Read { path, source })
        };
        let profiles_dir = dir.join("profiles");
        let entries = std::fs::read_dir(&profiles_dir)
            .map_err(|source| ProfileError::Read { path: profiles_dir.clone(), source })?;
        let mut profiles = BTreeMap::new();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_prefix("profile-").and_then(|f| f.strip_suffix(".yaml")) {
                profiles.insert(name.to_owned(), read(entry.path())?);
            }
        }
        let mut values = BTreeMap::new();
        for chart in CHARTS {
            values.insert(chart.to_owned(), read(dir.join(chart).join("values.yaml"))?);
        }
        Ok(Sources { profiles, values })
    }

    fn profile(&self, name: &str) -> Result<Mapping, ProfileError> {
        let text = self.profiles.get(name).ok_or_else(|| ProfileError::UnknownProfile {
            name: name.to_owned(),
            known: self.profiles.keys().cloned().collect(),
        })?;
        mapping(text, &format!("profile {name}"))
    }

    /// The values `profile` gives each chart, as the charts' zzz_profile.yaml computes them.
    fn dump(&self, profile: &str) -> Result<BTreeMap<&'static str, Value>, ProfileError> {
        let preset = self.profile(profile)?;
        let mut out = BTreeMap::new();
        for chart in CHARTS {
            let chart_values = mapping(&self.values[chart], &format!("{chart}/values.yaml"))?;
            let mut values = chart_values.get("_internal_defaults_do_not_set").cloned().unwrap_or_default();
            let mut mine = preset.get(chart).cloned().unwrap_or(Value::Mapping(Mapping::new()));
            if let (Some(mesh), Value::Mapping(m)) = (preset.get("meshConfig"), &mut mine) {
                m.insert("meshConfig".into(), mesh.clone());
            }
            merge_overwrite(&mut values, mine);
            if let Value::Mapping(m) = &mut values {
                // The profile chosen, as `--set profile=NAME` would record it.
                m.insert("profile".into(), profile.into());
            }
            out.insert(chart, values);
        }
        Ok(out)
    }
}

fn mapping(text: &str, what: &str) -> Result<Mapping, ProfileError> {
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(Value::Null) => Ok(Mapping::new()),
        Ok(_) => Err(ProfileError::Parse { what: what.to_owned(), reason: "not a mapping".into() }),
        Err(e) => Err(ProfileError::Parse { what: what.to_owned(), reason: e.to_string() }),
    }
}

/// Sprig's `mustMergeOverwrite`: maps merge key by key, deeply; any other value of `src`
/// (lists included) replaces what `dst` holds.
fn merge_overwrite(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Mapping(d), Value::Mapping(s)) => {
            for (key, value) in s {
                match d.get_mut(&key) {
                    Some(existing) => merge_overwrite(existing, value),
                    None => {
                        d.insert(key, value);
                    }
                }
            }
        }
        (dst, src) => *dst = src,
    }
}

/// `prefix.key: value` lines for every leaf, lists by index, keys in order.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Mapping(m) if !m.is_empty() => {
            for (key, v) in m {
                let key = match key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_owned(),
                };
                flatten(&format!("{prefix}.{key}"), v, out);
            }
        }
        Value::Sequence(s) if !s.is_empty() => {
            for (i, v) in s.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        leaf => {
            let text = serde_json::to_string(leaf).unwrap_or_default();
            out.insert(prefix.to_owned(), text);
        }
    }
}

fn flattened(dump: &BTreeMap<&'static str, Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (chart, values) in dump {
        flatten(chart, values, &mut out);
    }
    out
}

/// A unified-style diff of two flattened dumps: the keys in order, `-` for A's line, `+`
/// for B's; equal lines are left out.
fn diff(a_name: &str, a: &BTreeMap<String, String>, b_name: &str, b: &BTreeMap<String, String>) -> String {
    let mut out = format!("--- {a_name}\n+++ {b_name}\n");
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                if let Some(x) = x {
                    let _ = writeln!(out, "-{key}: {x}");
                }
                if let Some(y) = y {
                    let _ = writeln!(out, "+{key}: {y}");
                }
            }
        }
    }
    out
}

/// The first sentence of a profile's leading comment.
fn first_comment(text: &str) -> String {
    let comment: Vec<&str> = text.lines().map_while(|l| l.strip_prefix('#')).map(str::trim).collect();
    let joined = comment.join(" ");
    joined.split(". ").next().unwrap_or_default().trim_end_matches('.').to_owned()
}

fn execute(args: Args) -> Result<String, ProfileError> {
    let sources = Sources::load(args.charts.as_ref())?;
    match args.command {
        Command::List => {
            let width = sources.profiles.keys().map(String::len).max().unwrap_or(0);
            let mut out = String::new();
            for (name, text) in &sources.profiles {
                let _ = writeln!(out, "{name:width$}  {}", first_comment(text));
            }
            Ok(out)
        }
        Command::Dump { profile, chart } => {
            let dump = sources.dump(&profile)?;
            let shown: Value = match chart {
                Some(chart) => dump.get(chart.as_str()).cloned().ok_or(ProfileError::UnknownChart(chart))?,
                None => Value::Mapping(dump.into_iter().map(|(k, v)| (Value::from(k), v)).collect()),
            };
            Ok(serde_yaml::to_string(&shown).expect("values serialise"))
        }
        Command::Diff { a, b } => {
            let (left, right) = (flattened(&sources.dump(&a)?), flattened(&sources.dump(&b)?));
            Ok(diff(&a, &left, &b, &right))
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    match execute(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("weftctl profile: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn merge_is_sprigs_merge_overwrite() {
        let mut dst = yaml("a: {b: 1, c: [1, 2]}\nd: x\ne: true");
        merge_overwrite(&mut dst, yaml("a: {c: [3]}\nd: {f: 1}\ne: false\ng: 2"));
        assert_eq!(dst, yaml("a: {b: 1, c: [3]}\nd: {f: 1}\ne: false\ng: 2"));
    }

    #[test]
    fn flatten_names_every_leaf() {
        let mut out = BTreeMap::new();
        flatten("agent", &yaml("t: [{operator: Exists}]\nr: {requests: {cpu: 10m}}\nm: {}\nl: []"), &mut out);
        let lines: Vec<String> = out.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert_eq!(
            lines,
            [
                "agent.l: []",
                "agent.m: {}",
                "agent.r.requests.cpu: \"10m\"",
                "agent.t[0].operator: \"Exists\""
            ]
        );
    }

    #[test]
    fn the_first_sentence_describes_a_profile() {
        assert_eq!(
            first_comment("# The demo profile, as Istio's: for trying\n# Weft out. More.\nx: 1"),
            "The demo profile, as Istio's: for trying Weft out"
        );
        assert_eq!(first_comment("# One line. Two.\n"), "One line");
    }
}
