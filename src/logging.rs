//! Logging: journald-friendly `<N>` priority prefixes when stderr is the journal,
//! env_logger's usual format otherwise. `RUST_LOG` overrides the level (default `info`).

use std::io::Write;

/// Installs the logger; call once at start.
pub fn init() {
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
    let _ = builder.try_init();
}
