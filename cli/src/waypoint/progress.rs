//! Waiting for weftd to program a waypoint, polling the Gateway once a second (as
//! istioctl), shown as it goes: on a terminal a spinner line rewritten in place with the
//! time waited and the Programmed condition's reason; otherwise (a log, a pipe) one plain
//! line each time the condition changes.

use super::{condition, programmed};
use crate::cluster::describe;
use anyhow::bail;
use kube::{Api, api::DynamicObject};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_secs(1);
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// What the wait shows, on stderr.
struct Display {
    terminal: bool,
    ticks: usize,
    last: Option<String>,
}

impl Display {
    fn show(&mut self, what: &str, state: &str, waited: Duration) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let spinner = SPINNER[self.ticks % SPINNER.len()];
            self.ticks += 1;
            // \x1b[2K clears the line: the state may be shorter than the last one.
            let _ = write!(
                err,
                "\r\x1b[2K{spinner} waiting for waypoint {what} to be programmed ({}s): {state}",
                waited.as_secs()
            );
            let _ = err.flush();
        } else if self.last.as_deref() != Some(state) {
            let _ = writeln!(err, "waiting for waypoint {what} to be programmed: {state}");
            self.last = Some(state.to_owned());
        }
    }

    fn finish(&self) {
        if self.terminal {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// The Programmed condition in a few words, for the display.
fn state(gateway: Option<&DynamicObject>) -> String {
    let Some(gateway) = gateway else { return "the Gateway is not there".into() };
    match condition(gateway, "Programmed") {
        None => "no status yet (is weftd running in Kubernetes mode?)".into(),
        Some(c) => format!(
            "Programmed={} ({}: {})",
            c["status"].as_str().unwrap_or("?"),
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        ),
    }
}

/// Polls until the Gateway is Programmed, or fails after `timeout` naming the last state
/// (and an Accepted=False condition's message, which says what is wrong with it).
pub async fn wait_programmed(
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let what = format!("{namespace}/{name}");
    let mut display = Display { terminal: std::io::stderr().is_terminal(), ticks: 0, last: None };
    let start = Instant::now();
    loop {
        let gateway = api.get_opt(name).await;
        let (gateway, state) = match gateway {
            Ok(g) => {
                let s = state(g.as_ref());
                (g, s)
            }
            Err(e) => (None, format!("cannot read the Gateway: {}", describe(&e))),
        };
        if gateway.as_ref().is_some_and(programmed) {
            display.finish();
            return Ok(());
        }
        if let Some(refused) =
            gateway.as_ref().and_then(|g| condition(g, "Accepted")).filter(|c| c["status"] == "False")
        {
            display.finish();
            bail!(
                "waypoint {what} was not accepted: {} ({})",
                refused["message"].as_str().unwrap_or_default(),
                refused["reason"].as_str().unwrap_or_default()
            );
        }
        let waited = start.elapsed();
        if waited >= timeout {
            display.finish();
            bail!("timed out while waiting for waypoint {what} after {}s: {state}", timeout.as_secs());
        }
        display.show(&what, &state, waited);
        tokio::time::sleep(POLL.min(timeout - waited)).await;
    }
}
