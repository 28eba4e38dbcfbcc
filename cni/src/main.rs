//! `weft-cni`: run by the container runtime with `CNI_*` in the environment and the
//! network configuration on stdin (and no arguments). See the library for what it does.
//! `weft-cni install` and `weft-cni uninstall` put the plugin on a node or take it off
//! (the agent DaemonSet's init container runs `install`).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::{
    io::{Read, Write},
    process::ExitCode,
};
use weft_cni::{
    install::{self, InstallOptions},
    plugin::{self, AGENT_TIMEOUT},
    spec::{CniError, IMPLEMENTED_VERSION, code},
};

fn main() -> ExitCode {
    // The runtime runs a plugin without arguments (CNI spec); any argument is a person or
    // the installer container asking for a subcommand.
    if std::env::args_os().len() > 1 {
        return installer(Installer::parse());
    }
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => plugin::run(|name| std::env::var(name).ok(), &stdin, AGENT_TIMEOUT),
        Err(e) => plugin::Outcome {
            stdout: CniError::new(code::IO, "cannot read the network configuration from stdin")
                .with_details(e)
                .to_json(IMPLEMENTED_VERSION),
            notes: Vec::new(),
            exit_code: 1,
        },
    };
    for note in &outcome.notes {
        eprintln!("weft-cni: {note}");
    }
    let mut out = std::io::stdout().lock();
    // Nothing to do if the runtime closed our stdout: the exit code still tells it.
    let _ = out.write_all(outcome.stdout.as_bytes()).and_then(|()| out.flush());
    ExitCode::from(outcome.exit_code)
}

#[derive(Debug, Parser)]
#[command(
    name = "weft-cni",
    version,
    about = "Weft's chained CNI plugin; these subcommands install it on a node"
)]
struct Installer {
    #[command(subcommand)]
    command: InstallCommand,
}

#[derive(Debug, Subcommand)]
enum InstallCommand {
    /// Copy this binary into the host's CNI bin directory and chain weft-cni after the
    /// cluster's CNI in its primary network configuration. Idempotent.
    Install {
        /// The host's CNI bin directory, as mounted in this container.
        #[arg(long, env = "WEFT_CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        /// The host's CNI configuration directory, as mounted in this container.
        #[arg(long, env = "WEFT_CNI_CONF_DIR", default_value = "/host/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        /// The configuration file to chain into. Default: the primary one (first by name).
        #[arg(long, env = "WEFT_CNI_CONF_NAME")]
        cni_conf_name: Option<String>,
        /// The agent's CNI socket, as the host sees it (the agent's --cni-socket).
        #[arg(long, env = "WEFT_CNI_SOCKET", default_value = "/var/run/weft/cni.sock")]
        agent_socket: PathBuf,
        /// Namespaces whose pods are never handed to the agent (comma separated).
        #[arg(
            long,
            env = "WEFT_CNI_EXCLUDE_NAMESPACES",
            value_delimiter = ',',
            default_value = "kube-system"
        )]
        exclude_namespaces: Vec<String>,
        /// The plugin binary to copy. Default: this executable.
        #[arg(long, value_name = "FILE")]
        binary: Option<PathBuf>,
    },
    /// Remove weft-cni from the primary network configuration (the binary stays, for the
    /// DEL of sandboxes still being torn down).
    Uninstall {
        #[arg(long, env = "WEFT_CNI_CONF_DIR", default_value = "/host/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        #[arg(long, env = "WEFT_CNI_CONF_NAME")]
        cni_conf_name: Option<String>,
    },
}

fn installer(cli: Installer) -> ExitCode {
    let result = match cli.command {
        InstallCommand::Install {
            cni_bin_dir,
            cni_conf_dir,
            cni_conf_name,
            agent_socket,
            exclude_namespaces,
            binary,
        } => {
            let binary = match binary.map_or_else(std::env::current_exe, Ok) {
                Ok(path) => path,
                Err(e) => {
                    eprintln!("weft-cni install: cannot find this executable: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = InstallOptions {
                binary,
                bin_dir: cni_bin_dir,
                conf_dir: cni_conf_dir,
                conf_file: cni_conf_name,
                agent_socket,
                exclude_namespaces,
            };
            install::install(&options).map(|file| format!("chained weft-cni in {}", file.display()))
        }
        InstallCommand::Uninstall { cni_conf_dir, cni_conf_name } => {
            install::uninstall(&cni_conf_dir, cni_conf_name.as_deref()).map(|changed| match changed {
                Some(file) => format!("removed weft-cni from {}", file.display()),
                None => "weft-cni was not chained; nothing to do".to_owned(),
            })
        }
    };
    match result {
        Ok(done) => {
            println!("weft-cni: {done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-cni: {e}");
            ExitCode::FAILURE
        }
    }
}
