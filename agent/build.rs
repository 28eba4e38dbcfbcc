//! Builds the eBPF programs (ebpf/weft-ebpf) with the nightly toolchain and bpf-linker,
//! and leaves the object in OUT_DIR for `include_bytes!`.
//!
//! `WEFT_EBPF_STUB=1` writes an empty object instead so `cargo check` and `clippy` stay
//! fast; an agent built that way refuses to start and says why.

use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=WEFT_EBPF_STUB");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    if env::var("WEFT_EBPF_STUB").is_ok_and(|v| v == "1") {
        fs::write(out_dir.join("weft"), [])?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../ebpf/weft-ebpf");
    let common_dir = manifest_dir.join("../ebpf/weft-ebpf-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    if which_bpf_linker().is_none() {
        anyhow::bail!(
            "bpf-linker is not installed; run `cargo xtask setup` (it installs bpf-linker, \
             nightly rust-src and LLVM 22), or set WEFT_EBPF_STUB=1 for a check-only build"
        );
    }
    let root_dir = ebpf_dir.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package { name: "weft-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )
}

fn which_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join("bpf-linker")).find(|p| p.is_file())
}
