//! Process-wide shutdown signal handed to every task (the mini-redis `Shutdown` shape).

use tokio::sync::{mpsc, watch};

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

/// Exit code asking systemd for a restart: `RestartForceExitStatus=75` restarts the unit
/// whatever `Restart=` says (a fleet `restart`, a staged update, a requested rollback).
pub const EXIT_RESTART: u8 = 75;

/// A request to stop the agent with an exit code (75: "restart me", for systemd).
#[derive(Debug)]
pub struct Stop {
    /// Exit code.
    pub code: u8,
    /// Why, for the log.
    pub reason: String,
}

/// Lets a component ask `main` to stop the agent.
#[derive(Debug, Clone)]
pub struct Stopper(mpsc::Sender<Stop>);

/// Creates a stopper and the receiver `main` waits on.
pub fn stopper() -> (Stopper, mpsc::Receiver<Stop>) {
    let (tx, rx) = mpsc::channel(1);
    (Stopper(tx), rx)
}

impl Stopper {
    /// Asks for the stop; the error is why it cannot be asked.
    pub async fn request(&self, code: u8, reason: &str) -> Result<(), String> {
        self.0.send(Stop { code, reason: reason.into() }).await.map_err(|_| "the agent is already stopping".to_string())
    }
}
