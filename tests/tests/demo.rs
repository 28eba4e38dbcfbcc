//! End-to-end: `cargo xtask demo` sets up, carries its traffic and tears down.

#[test]
fn the_demo_runs_its_traffic_and_tears_down() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-demo"))
        .arg("--once")
        .output()
        .expect("weft-demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("answered by reviews-v"), "{stdout}");
    assert!(stdout.contains("byte-exact"), "{stdout}");
    assert!(stdout.contains("reporter=destination"), "{stdout}");
}
