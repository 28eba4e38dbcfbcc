//! Where the binaries under test are. `cargo xtask test` builds them all first; a test
//! run on its own finds them beside the test executable's profile directory.

use std::path::PathBuf;

/// Overrides the directory (the benchmark and demo use the release build).
pub const BIN_DIR_ENV: &str = "WEFT_BIN_DIR";

/// Where a workspace binary, e.g. `weft-agent`, would be (whether or not it is built).
pub fn location(name: &str) -> PathBuf {
    let dir = std::env::var_os(BIN_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| {
        // target/<profile>/deps/<test-binary> → target/<profile>
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe.parent().expect("exe dir");
        if dir.ends_with("deps") { dir.parent().expect("profile dir").to_owned() } else { dir.to_owned() }
    });
    dir.join(name)
}

/// Path of a workspace binary, e.g. `weft-agent`. Panics with the command that builds it
/// when it is missing, so a test never runs against nothing.
pub fn path(name: &str) -> PathBuf {
    let path = location(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --bins`, which `cargo xtask test` runs)",
        path.display()
    );
    path
}
