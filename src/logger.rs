//! A minimal stderr logger for the `log` facade (no env_logger: size).
//! Verbosity follows klog's `-v`: 0-2 info, 3-5 debug, 6+ trace.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct Stderr;

/// Other crates' debug output (rustls's handshake notes) only at trace
/// verbosity: picolet's own debug lines are what -v 3..5 is for.
static THIRD_PARTY_DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
            && (m.level() <= Level::Info
                || m.target().starts_with("picolet")
                || THIRD_PARTY_DEBUG.load(std::sync::atomic::Ordering::Relaxed))
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let ts = jiff::Timestamp::now();
        let lvl = match r.level() {
            Level::Error => 'E',
            Level::Warn => 'W',
            Level::Info => 'I',
            Level::Debug => 'D',
            Level::Trace => 'T',
        };
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{lvl} {ts:.6} {}] {}", r.target(), r.args());
    }
    fn flush(&self) {}
}

/// Errors (anyhow) capture a backtrace when RUST_BACKTRACE is set, and in
/// the stripped release binary that is bare addresses, bought by a walk of
/// the unwind tables per error: CPU, and 0.8 MiB of `.eh_frame` kept
/// resident. This turns error backtraces off unless RUST_LIB_BACKTRACE
/// asks for them; panics still follow RUST_BACKTRACE. Call it first in
/// `main`, before any thread exists (it sets an environment variable).
pub fn quiet_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

pub fn level_for(verbosity: u8) -> LevelFilter {
    match verbosity {
        0..=2 => LevelFilter::Info,
        3..=5 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

pub fn init(verbosity: u8) {
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level_for(verbosity));
        THIRD_PARTY_DEBUG.store(verbosity >= 6, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backtraces_are_off_under_rust_backtrace() {
        // std decides once per process; nextest runs each test in its own.
        std::env::set_var("RUST_BACKTRACE", "1");
        std::env::remove_var("RUST_LIB_BACKTRACE");
        quiet_error_backtraces();
        let e = anyhow::anyhow!("boom");
        assert_eq!(
            e.backtrace().status(),
            std::backtrace::BacktraceStatus::Disabled
        );
        // An explicit wish is kept.
        std::env::set_var("RUST_LIB_BACKTRACE", "1");
        quiet_error_backtraces();
        assert_eq!(std::env::var("RUST_LIB_BACKTRACE").as_deref(), Ok("1"));
    }
}
