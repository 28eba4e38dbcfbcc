//! Runs the `weftctl` binary on the fixture directories and checks what it prints and
//! how it exits.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn weftctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weftctl")).args(args).output().expect("run weftctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn a_clean_directory_exits_zero_and_prints_nothing() {
    let dir = fixture("good");
    let out = weftctl(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("No validation issues"), "{}", stderr(&out));
}

#[test]
fn warnings_alone_exit_zero() {
    let dir = fixture("warnings");
    let out = weftctl(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let expected = format!(
        "warning: VirtualService/bookinfo/reviews ({}:1): spec.http[0].route[0].destination.subset: Referenced host+subset in destinationrule not found: \"reviews+v3\"",
        dir.join("routing.yaml").display()
    );
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.trim_end().ends_with("[IST0101]"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn errors_exit_one_sorted_by_file_and_line() {
    let dir = fixture("bad");
    let out = weftctl(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let file = |f: &str| dir.join(f).display().to_string();
    let expected = [
        format!(
            "error: {}:13: VirtualService/bookinfo/broken (from line 6) is not YAML: ",
            file("a-syntax.yaml")
        ),
        format!(
            "error: VirtualService/bookinfo/reviews ({}:1): spec.http[0].route[1].weight: weight -10 is negative [IST0106]",
            file("b-routes.yaml")
        ),
        format!(
            "error: VirtualService/bookinfo/ratings ({}:15): spec.http[0].match[0].uri.regex: regex \"/ratings/(v1\" does not compile",
            file("b-routes.yaml")
        ),
        format!(
            "error: VirtualService/bookinfo/ratings ({}:15): spec.http[0].timeout: timeout 500us must be at least 1ms",
            file("b-routes.yaml")
        ),
        format!(
            "error: VirtualServce/bookinfo/typo ({}:29): kind: unknown kind \"VirtualServce\"",
            file("b-routes.yaml")
        ),
        format!(
            "error: AuthorizationPolicy/bookinfo/allow-get ({}:1): spec.action: unknown variant `ALOW`",
            file("c-security.yaml")
        ),
    ];
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), expected.len(), "{text}");
    for (line, want) in got.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "\n got: {line}\nwant: {want}…");
    }
    assert!(stderr(&out).contains("6 error(s), 0 warning(s)"), "{}", stderr(&out));
}

#[test]
fn json_output() {
    let dir = fixture("bad");
    let out = weftctl(&["analyze", "--output", "json", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["errors"], 6);
    assert_eq!(doc["warnings"], 0);
    let first_object = &doc["diagnostics"][1];
    assert_eq!(first_object["kind"], "VirtualService");
    assert_eq!(first_object["namespace"], "bookinfo");
    assert_eq!(first_object["name"], "reviews");
    assert_eq!(first_object["line"], 1);
    assert_eq!(first_object["field"], "spec.http[0].route[1].weight");
    assert_eq!(first_object["severity"], "error");
    assert_eq!(first_object["code"], "IST0106");
    assert!(first_object["file"].as_str().unwrap().ends_with("b-routes.yaml"));

    let out = weftctl(&["analyze", "-o", "json", fixture("good").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["diagnostics"], serde_json::json!([]));
    assert_eq!(doc["served"], 7);
}

#[test]
fn usage_and_io_problems_exit_two() {
    let out = weftctl(&["analyze", "/nonexistent/weft-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read config directory /nonexistent/weft-config"),
        "{}",
        stderr(&out)
    );

    let file = fixture("good").join("routing.yaml");
    let out = weftctl(&["analyze", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a directory"), "{}", stderr(&out));

    assert_eq!(weftctl(&["analyze"]).status.code(), Some(2), "missing DIR");
    assert_eq!(weftctl(&["analyze", "--output", "yaml", "x"]).status.code(), Some(2), "bad format");
    assert_eq!(weftctl(&["frobnicate"]).status.code(), Some(2), "unknown subcommand");
}
