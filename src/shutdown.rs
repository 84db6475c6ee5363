//! Process-wide shutdown signal handed to every task (the mini-redis `Shutdown` shape).

use tokio::sync::watch;

/// Sends the shutdown signal; held by `main`.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A cloneable listener each task selects on.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Creates a connected trigger/listener pair.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every listener to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// True once shutdown has been requested.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is requested (immediately if it already was).
    pub async fn recv(&mut self) {
        // An Err means the trigger was dropped, which only happens when main is exiting.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
