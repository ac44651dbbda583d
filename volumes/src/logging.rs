//! Log lines of the server on stderr, with a UTC timestamp.

use std::io::Write;
use std::time::SystemTime;

pub fn log(message: std::fmt::Arguments<'_>) {
    let stamp = crate::timestamp::rfc3339(SystemTime::now());
    // One write per line keeps lines from concurrent connections whole.
    let line = format!("{stamp} berth-volume: {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
