//! `weftctl profile list | dump | diff`, run as a binary: the presets built into weftctl
//! are the charts' own (charts/profiles/), and `--charts DIR` reads a checkout instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn charts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("charts")
}

fn weftctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weftctl")).args(args).output().expect("run weftctl")
}

fn ok(args: &[&str]) -> String {
    let out = weftctl(args);
    assert_eq!(out.status.code(), Some(0), "weftctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn list_names_istios_profiles_with_what_each_is_for() {
    let text = ok(&["profile", "list"]);
    let names: Vec<&str> = text.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(names, ["ambient", "default", "demo", "empty", "minimal", "remote"]);
    let demo = text.lines().find(|l| l.starts_with("demo")).unwrap();
    assert!(demo.contains("for trying Weft out, not for production"), "{demo}");
}

#[test]
fn dump_gives_each_chart_its_defaults_with_the_profile_on_top() {
    let demo: serde_yaml::Value = serde_yaml::from_str(&ok(&["profile", "dump", "demo"])).unwrap();
    assert_eq!(demo["weftd"]["resources"]["requests"]["cpu"], "10m", "the profile's");
    assert_eq!(demo["weftd"]["image"], "weftd", "the chart's default");
    assert_eq!(demo["weftd"]["meshConfig"]["accessLogFile"], "/dev/stdout");
    assert_eq!(demo["weftd"]["meshConfig"]["trustDomain"], "cluster.local", "merged, not replaced");
    assert_eq!(demo["gateway"]["components"]["egressGateway"], true);
    assert_eq!(demo["agent"]["profile"], "demo");

    let agent: serde_yaml::Value =
        serde_yaml::from_str(&ok(&["profile", "dump", "minimal", "--chart", "agent"])).unwrap();
    assert_eq!(agent["enabled"], false);
    assert_eq!(agent["priorityClassName"], "system-node-critical");
}

#[test]
fn diff_is_a_unified_diff_of_the_flattened_values() {
    let text = ok(&["profile", "diff", "default", "demo"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..2], ["--- default", "+++ demo"]);
    for line in [
        "-gateway.components.egressGateway: false",
        "+gateway.components.egressGateway: true",
        "-weftd.resources.requests.cpu: \"500m\"",
        "+weftd.resources.requests.cpu: \"10m\"",
        "+agent.meshConfig.accessLogFile: \"/dev/stdout\"",
        "-agent.profile: \"default\"",
    ] {
        assert!(lines.contains(&line), "{line:?} in\n{text}");
    }
    // Only differences: nothing both profiles set alike.
    assert!(!text.contains("weftd.image"), "{text}");
    assert_eq!(ok(&["profile", "diff", "demo", "demo"]), "--- demo\n+++ demo\n");
}

#[test]
fn the_built_in_presets_are_the_charts_own() {
    let dir = charts();
    let dir = dir.to_str().unwrap();
    for profile in ["default", "demo", "minimal", "remote", "empty", "ambient"] {
        assert_eq!(
            ok(&["profile", "dump", profile]),
            ok(&["profile", "dump", profile, "--charts", dir]),
            "{profile}"
        );
    }
    assert_eq!(ok(&["profile", "list"]), ok(&["profile", "list", "--charts", dir]));
}

#[test]
fn a_checkout_with_a_profile_of_its_own() {
    let checkout = tempfile::tempdir().unwrap();
    let root = checkout.path();
    std::fs::create_dir(root.join("profiles")).unwrap();
    std::fs::write(
        root.join("profiles/profile-tiny.yaml"),
        "# Tiny nodes. More.\nagent:\n  workerThreads: 1\n",
    )
    .unwrap();
    for chart in ["base", "weftd", "agent", "gateway"] {
        std::fs::create_dir(root.join(chart)).unwrap();
        std::fs::copy(charts().join(chart).join("values.yaml"), root.join(chart).join("values.yaml"))
            .unwrap();
    }
    let dir = root.to_str().unwrap();
    assert_eq!(ok(&["profile", "list", "--charts", dir]), "tiny  Tiny nodes\n");
    let agent = ok(&["profile", "dump", "tiny", "--chart", "agent", "--charts", dir]);
    assert!(agent.contains("workerThreads: 1"), "{agent}");
}

#[test]
fn unknown_names_are_refused_with_the_known_ones() {
    let out = weftctl(&["profile", "dump", "dmeo"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "unknown profile \"dmeo\"; the profiles are ambient, default, demo, empty, minimal, remote"
        ),
        "{err}"
    );
    let out = weftctl(&["profile", "dump", "demo", "--chart", "ztunnel"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown chart \"ztunnel\""));
    let out = weftctl(&["profile", "list", "--charts", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/profiles"));
}
