//! Logging: journald-friendly `<N>` priority prefixes when stderr is the journal,
//! `[time LEVEL target] message` otherwise. `RUST_LOG` sets the levels as env_logger reads
//! it (default `info`); a logger of our own, as env_logger cost bytes the budget has not.
//! The most recent lines are also kept in memory for the fleet `logs` command. A panic is
//! logged at `crit` and ends the process (`panic_hook`).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Log lines kept in memory.
const KEEP: usize = 500;

/// The most recent log lines (bounded), newest last.
#[derive(Debug, Clone, Default)]
pub struct Recent(Arc<Mutex<VecDeque<String>>>);

impl Recent {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().skip(lines.len().saturating_sub(n)).cloned().collect()
    }
}

/// `RUST_LOG` as env_logger reads it: `level` and `target=level` (a bare target: every
/// level), comma-separated; the longest target prefix that matches decides.
struct Filter {
    default: log::LevelFilter,
    targets: Vec<(String, log::LevelFilter)>,
}

impl Filter {
    fn parse(spec: &str) -> Filter {
        let mut filter = Filter { default: log::LevelFilter::Info, targets: Vec::new() };
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) => {
                    if let Ok(level) = level.trim().parse() {
                        filter.targets.push((target.trim().to_string(), level));
                    }
                }
                None => match directive.parse() {
                    Ok(level) => filter.default = level,
                    Err(_) => filter.targets.push((directive.to_string(), log::LevelFilter::Trace)),
                },
            }
        }
        filter.targets.sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
        filter
    }

    fn level(&self, target: &str) -> log::LevelFilter {
        self.targets.iter().find(|(t, _)| target.starts_with(t.as_str())).map_or(self.default, |(_, level)| *level)
    }

    fn max(&self) -> log::LevelFilter {
        self.targets.iter().map(|(_, level)| *level).fold(self.default, std::cmp::max)
    }
}

/// Writes each line to stderr (`<N>`-prefixed for the journal, else `[time LEVEL target]`)
/// and a copy into `Recent`.
struct Logger {
    filter: Filter,
    journal: bool,
    recent: Recent,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.filter.level(metadata.target())
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ts = crate::time::rfc3339(crate::time::now_ms());
        // The journal adds its own timestamps and reads the syslog priority from `<N>`.
        let line = if self.journal {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            format!("<{priority}>{}\n", record.args())
        } else {
            format!("[{ts} {:<5} {}] {}\n", record.level(), record.target(), record.args())
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        self.recent.push(format!("{ts} {} {}: {}", record.level(), record.target(), record.args()));
    }

    fn flush(&self) {}
}

/// Installs the logger; call once at start. Returns the in-memory copy of recent lines.
pub fn init() -> Recent {
    let filter = Filter::parse(&std::env::var("RUST_LOG").unwrap_or_default());
    let max = filter.max();
    let recent = Recent::default();
    // systemd sets JOURNAL_STREAM when stderr is connected to the journal.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if log::set_boxed_logger(Box::new(Logger { filter, journal, recent: recent.clone() })).is_ok() {
        log::set_max_level(max);
    }
    recent
}

/// Makes a panic, in any thread, one `crit` line (`<2>` for the journal) naming the thread,
/// the place and the message, then aborts: a release build aborts on panic anyway, and a
/// half-dead agent (one thread gone) is worse than one that systemd restarts.
pub fn panic_hook() {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        let thread = std::thread::current();
        let at = info.location().map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        let line = format!(
            "panic in thread '{}'{at}: {}; aborting",
            thread.name().unwrap_or("unnamed"),
            message.unwrap_or("(no message)").replace('\n', " | ")
        );
        let prefix = if journal { "<2>" } else { "CRIT " };
        let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_reads_as_env_logger_reads_it() {
        let f = Filter::parse("warn, doorbell_agent::store=debug,doorbell_agent::fleet , rumqttc=off, x=nonsense");
        assert_eq!(f.level("doorbell_agent::pipeline"), log::LevelFilter::Warn);
        assert_eq!(f.level("doorbell_agent::store::space"), log::LevelFilter::Debug);
        assert_eq!(f.level("doorbell_agent::fleet::link"), log::LevelFilter::Trace);
        assert_eq!(f.level("rumqttc::state"), log::LevelFilter::Off);
        assert_eq!(f.max(), log::LevelFilter::Trace);
        assert_eq!(Filter::parse("").level("any"), log::LevelFilter::Info);
        assert_eq!(Filter::parse("DEBUG").max(), log::LevelFilter::Debug);
    }
}
