//! `weft-cni`: run by the container runtime with `CNI_*` in the environment and the
//! network configuration on stdin. See the library for what it does.

use std::{
    io::{Read, Write},
    process::ExitCode,
};
use weft_cni::{
    plugin::{self, AGENT_TIMEOUT},
    spec::{CniError, IMPLEMENTED_VERSION, code},
};

fn main() -> ExitCode {
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
