//! Waiting in a test for something another process does (weftd writing an object, a
//! status arriving), by polling a check.

use std::time::Duration;
use tokio::time::Instant;

/// Polls `check` every 50 ms until it finds something, and returns that; panics naming
/// `what` after `patience`.
pub async fn until<T>(patience: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not seen within {patience:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
