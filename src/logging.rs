//! Logging: journald-friendly `<N>` priority prefixes when stderr is the journal,
//! env_logger's usual format otherwise. `RUST_LOG` overrides the level (default `info`).
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

/// env_logger, plus a copy of every line it writes into `Recent`.
struct Tee {
    inner: env_logger::Logger,
    recent: Recent,
}

impl log::Log for Tee {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if self.inner.matches(record) {
            self.inner.log(record);
            let ts = crate::time::rfc3339(crate::time::now_ms());
            self.recent.push(format!("{ts} {} {}: {}", record.level(), record.target(), record.args()));
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger; call once at start. Returns the in-memory copy of recent lines.
pub fn init() -> Recent {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // systemd sets JOURNAL_STREAM when stderr is connected to the journal; then the journal
    // adds its own timestamps and reads the syslog priority from the `<N>` prefix.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}", record.args())
        });
    }
    let inner = builder.build();
    let recent = Recent::default();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Tee { inner, recent: recent.clone() })).is_ok() {
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
