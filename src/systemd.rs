//! systemd integration: READY/STATUS/STOPPING notifications and watchdog pings.
//!
//! Every call is a no-op outside systemd (no NOTIFY_SOCKET), so the laptop run is the same
//! code path as on a device.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::shutdown::Shutdown;
use crate::status::View;

/// Tells systemd start-up is complete, with the first status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the STATUS= line shown by `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Tells systemd the agent is shutting down.
pub fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::debug!("sd_notify: {e}");
    }
}

/// The watchdog interval systemd asked for, if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval and refreshes the STATUS= line when it changes.
///
/// The pings come from the async runtime, so a wedged runtime stops them and systemd
/// restarts the agent; so does a stuck store.
pub async fn supervise(view: View, mut shutdown: Shutdown) {
    if doorbell_base::fault::active() == Some(doorbell_base::fault::Fault::HangAfterReady) {
        log::warn!("fault injection: hanging after READY (no more watchdog pings)");
        return shutdown.recv().await;
    }
    let watchdog = watchdog_interval();
    let period = watchdog.map_or(Duration::from_secs(2), |w| (w / 2).min(Duration::from_secs(2)));
    let mut ticks = tokio::time::interval(period);
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = ticks.tick() => {}
        }
        // A stuck store cannot be freed in the process (sled's hung flush holds its files):
        // no ping, and systemd restarts the agent (the store check says why).
        match view.store.stalled() {
            None if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
            None => {}
            Some(stalled) => log::error!("store: a write has not returned for {} s; withholding the watchdog", stalled.as_secs()),
        }
        view.store.report_health(&view.health);
        let line = view.line();
        if line != last {
            status(&line);
            last = line;
        }
    }
}
