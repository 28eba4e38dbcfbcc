//! Images, which the bed does not pull: the one place that says which of the repository's
//! built binaries an image is, and where that binary sits in the image.

use crate::bins;
use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Container;
use std::path::PathBuf;

/// Image name (its repository's last path segment, without registry, tag or digest) →
/// the workspace binary that is its entrypoint, at `/usr/local/bin/<binary>` in the image.
/// `weft/weft-waypoint:1.0` and `registry.example/x/weft-waypoint@sha256:…` are both
/// `weft-waypoint`, the binary `cargo build --bins` makes.
const IMAGES: &[(&str, &str)] = &[
    ("weft-waypoint", "weft-waypoint"),
    ("weft-agent", "weft-agent"),
    ("weft-cni", "weft-cni"),
    ("weftd", "weftd"),
    ("weft-testapp", "weft-testapp"),
];
const IMAGE_BIN_DIR: &str = "/usr/local/bin";

/// The program a container runs: the built binary, and the path it has in the container.
#[derive(Debug, Clone)]
pub struct Program {
    pub binary: PathBuf,
    pub in_container: String,
}

/// The built binary an image's entrypoint is, and its path in the image.
pub fn entrypoint(image: &str) -> Result<Program> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let name = last.split(':').next().unwrap_or(last);
    let Some((_, binary)) = IMAGES.iter().find(|(image_name, _)| *image_name == name) else {
        bail!(
            "image {image:?}: the bed's kubelet runs only the repository's own binaries ({}); add it to IMAGES in tests/src/kubelet/image.rs",
            IMAGES.iter().map(|(i, _)| *i).collect::<Vec<_>>().join(", ")
        );
    };
    Ok(Program { binary: bins::path(binary), in_container: format!("{IMAGE_BIN_DIR}/{binary}") })
}

/// What a container executes: `command` (its first word a binary of the image, by its
/// name) or else the image's entrypoint, then `args`; `$(VAR)` expanded in both.
pub fn program(container: &Container, env: &[(String, String)]) -> Result<(Program, Vec<String>)> {
    let image = container.image.as_deref().unwrap_or_default();
    let image_program = entrypoint(image)?;
    let expand = |words: &[String]| words.iter().map(|w| expand(w, env)).collect::<Vec<_>>();
    let command = expand(container.command.as_deref().unwrap_or_default());
    let mut args = expand(container.args.as_deref().unwrap_or_default());
    let program = match command.split_first() {
        None => image_program,
        Some((first, rest)) => {
            let named = first.rsplit('/').next().unwrap_or(first);
            let binary_name = image_program.binary.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if named != binary_name {
                bail!(
                    "command {first:?}: image {image:?} holds {binary_name} only (tests/src/kubelet/image.rs)"
                );
            }
            let in_container =
                if first.starts_with('/') { first.clone() } else { image_program.in_container.clone() };
            args.splice(0..0, rest.iter().cloned());
            Program { binary: image_program.binary, in_container }
        }
    };
    Ok((program, args))
}

/// Kubernetes' `$(VAR)` expansion: a defined variable's value; `$$` is a literal `$`; an
/// undefined reference stays as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(k, _)| *k == inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_as_kubernetes_expands_them() {
        let env = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "x y".to_owned())];
        assert_eq!(expand("--a=$(A) $(B)", &env), "--a=1 x y");
        assert_eq!(expand("$$(A) $(C) $", &env), "$(A) $(C) $");
    }
}
