//! Results as JSON lines on stdout, and the exit codes every client shares:
//! 0 success, 1 wrong data, 2 could not connect (or, for `serve`, bind), 3 other I/O error,
//! 64 bad arguments.

use std::io::{self, ErrorKind, Write};

use serde_json::{Value, json};

pub const EXIT_OK: i32 = 0;
pub const EXIT_MISMATCH: i32 = 1;
pub const EXIT_CONNECT: i32 = 2;
pub const EXIT_IO: i32 = 3;

/// Prints `value` as one line and flushes, so a test reading the pipe sees it at once.
pub fn emit(value: &Value) {
    let mut out = io::stdout().lock();
    // A closed stdout (the test stopped reading) is no reason to stop serving.
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// The `io::ErrorKind` name tests match on, e.g. `ConnectionRefused`.
pub fn kind_name(err: &io::Error) -> String {
    match err.kind() {
        // Blocking sockets only return EAGAIN when SO_RCVTIMEO/SO_SNDTIMEO expired.
        ErrorKind::WouldBlock => "TimedOut".to_owned(),
        kind => format!("{kind:?}"),
    }
}

/// Reports a failed connect; returns the exit code.
pub fn connect_failed(err: &io::Error) -> i32 {
    emit(&json!({
        "ok": false,
        "error": "connect",
        "kind": kind_name(err),
        "message": err.to_string(),
    }));
    EXIT_CONNECT
}

/// Reports an I/O error after connecting; returns the exit code.
pub fn io_failed(err: &io::Error) -> i32 {
    emit(&json!({
        "ok": false,
        "error": "io",
        "kind": kind_name(err),
        "message": err.to_string(),
    }));
    EXIT_IO
}
