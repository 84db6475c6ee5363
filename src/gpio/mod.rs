//! The doorbell button: backends that report presses, and the filter that turns a noisy
//! stream of presses into a bounded number of rings.
//!
//! Backends (`rppal` for a real pin, `simulated` for laptops and tests) push raw presses
//! into a bounded channel with `try_send`, so an interrupt callback never blocks. The
//! `run` task applies a software debounce and a token-bucket rate limit and hands accepted
//! presses to the ring pipeline; every press that does not become a ring is counted.
//!
//! The real pin is reached through rpi-pal where the kernel has `/dev/gpiomem`, else through
//! the GPIO character device (`chardev`); presses come from edge interrupts or, with
//! `detect = "poll"`, from an `EdgeDetector` over the level read every `poll_interval`.

pub mod chardev;
mod rppal_pin;
mod simulated;

pub use rppal_pin::{gpiomem_present, RppalButton};
pub use simulated::{SimulatedButton, Simulator};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::{Config, GpioBackend, GpioConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Raw presses buffered between a backend and the filter.
pub const RAW_QUEUE: usize = 64;

/// Where a press came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The physical button.
    Button,
    /// `POST /simulate/press` or `doorbell-agent press`.
    Simulated,
    /// The fleet `press` command (a test ring).
    Fleet,
}

impl Trigger {
    /// Label used in metrics and ring events.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Button => "button",
            Trigger::Simulated => "simulated",
            Trigger::Fleet => "fleet",
        }
    }
}

/// One press of the button.
#[derive(Debug, Clone, Copy)]
pub struct Press {
    /// Source of the press.
    pub trigger: Trigger,
    /// Monotonic time of the press, for latency and debounce.
    pub at: Instant,
    /// Wall-clock time of the press, Unix ms.
    pub ts_ms: u64,
}

/// Button backend failures.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The GPIO character device or pin cannot be used.
    #[error("GPIO pin {pin}: {reason}")]
    Pin {
        /// BCM pin.
        pin: u8,
        /// What went wrong, with a hint.
        reason: String,
    },
}

/// A button backend.
pub trait Button: Send {
    /// Starts delivering presses into `sink`; the backend stays live while `self` lives.
    fn start(&mut self, sink: PressSink) -> Result<(), GpioError>;
    /// One line for logs and /status, e.g. `rppal BCM 17 (pull-up, active-low, interrupts)`.
    fn describe(&self) -> String;
}

/// Non-blocking sender of raw presses, safe to call from an interrupt thread.
#[derive(Debug, Clone)]
pub struct PressSink {
    tx: mpsc::Sender<Press>,
    metrics: Arc<Metrics>,
}

impl PressSink {
    /// Creates a sink and the receiver the filter task reads.
    pub fn channel(metrics: Arc<Metrics>) -> (PressSink, mpsc::Receiver<Press>) {
        let (tx, rx) = mpsc::channel(RAW_QUEUE);
        (PressSink { tx, metrics }, rx)
    }

    /// Reports a press now; never blocks. False when the press had to be dropped.
    pub fn press(&self, trigger: Trigger) -> bool {
        self.metrics.presses.inc(&[trigger.as_str()]);
        let press = Press { trigger, at: Instant::now(), ts_ms: doorbell_base::time::now_ms() };
        match self.tx.try_send(press) {
            Ok(()) => true,
            Err(_) => {
                self.metrics.presses_dropped.inc(&["queue_full"]);
                false
            }
        }
    }
}

/// Builds the configured backend; the simulator handle exists only for `simulated`.
pub fn backend(cfg: &GpioConfig) -> (Box<dyn Button>, Option<Simulator>) {
    match cfg.backend {
        GpioBackend::Rppal => (Box::new(RppalButton::new(cfg.clone())), None),
        GpioBackend::Simulated => {
            let (button, simulator) = SimulatedButton::new();
            (Box::new(button), Some(simulator))
        }
    }
}

/// Turns a polled line level into presses: one on each change from inactive to active.
///
/// A line that reads active at the first sample is no press until it has been released
/// once (a button held, or a wiring fault, while the agent starts). Contact bounce gives a
/// press per bounce; `PressFilter` debounces them as it does interrupt edges.
#[derive(Debug, Clone)]
pub struct EdgeDetector {
    active_low: bool,
    /// Whether the previous sample was active; `None` before the first.
    last: Option<bool>,
}

impl EdgeDetector {
    /// A detector for a button that reads low when pressed when `active_low`.
    pub fn new(active_low: bool) -> Self {
        EdgeDetector { active_low, last: None }
    }

    /// Takes one sample of the physical level (true = high); true when it is a press.
    pub fn sample(&mut self, level: bool) -> bool {
        let active = level != self.active_low;
        let press = active && self.last == Some(false);
        self.last = Some(active);
        press
    }
}

/// Why a press did not become a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Within the debounce window of the previous press.
    Debounce,
    /// The rate limit's tokens are spent.
    RateLimit,
}

/// Software debounce plus a token-bucket rate limit.
#[derive(Debug)]
pub struct PressFilter {
    debounce: Duration,
    burst: f64,
    per_second: f64,
    tokens: f64,
    last_press: Option<Instant>,
    last_refill: Option<Instant>,
}

impl PressFilter {
    /// A filter from the `[gpio]` settings.
    pub fn new(cfg: &GpioConfig) -> Self {
        PressFilter {
            debounce: cfg.debounce,
            burst: cfg.burst as f64,
            per_second: cfg.rings_per_minute as f64 / 60.0,
            tokens: cfg.burst as f64,
            last_press: None,
            last_refill: None,
        }
    }

    /// Decides whether a press at `at` becomes a ring.
    pub fn admit(&mut self, at: Instant) -> Result<(), Rejected> {
        // Measured from the previous edge, so a whole bounce train counts as one press.
        let bounced = self.last_press.is_some_and(|p| at.saturating_duration_since(p) < self.debounce);
        self.last_press = Some(at);
        if bounced {
            return Err(Rejected::Debounce);
        }
        if let Some(last) = self.last_refill {
            let refill = at.saturating_duration_since(last).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last_refill = Some(at);
        if self.tokens < 1.0 {
            return Err(Rejected::RateLimit);
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

/// Filters raw presses into rings until shutdown or until every sink is gone; the debounce
/// and rate limit follow `config` live.
pub async fn run(
    mut raw: mpsc::Receiver<Press>,
    rings: mpsc::Sender<Press>,
    metrics: Arc<Metrics>,
    mut config: watch::Receiver<Config>,
    mut shutdown: Shutdown,
) {
    let mut gpio = config.borrow_and_update().gpio.clone();
    let mut filter = PressFilter::new(&gpio);
    loop {
        let press = tokio::select! {
            _ = shutdown.recv() => break,
            Ok(()) = config.changed() => {
                let new = config.borrow_and_update().gpio.clone();
                if new != gpio {
                    log::info!("button filter now: debounce {}, burst {}, {} rings/min", humantime::format_duration(new.debounce), new.burst, new.rings_per_minute);
                    filter = PressFilter::new(&new);
                    gpio = new;
                }
                continue;
            }
            press = raw.recv() => match press {
                Some(p) => p,
                None => break,
            },
        };
        match filter.admit(press.at) {
            Err(Rejected::Debounce) => metrics.presses_dropped.inc(&["debounce"]),
            Err(Rejected::RateLimit) => metrics.presses_dropped.inc(&["rate_limit"]),
            Ok(()) => {
                if rings.try_send(press).is_err() {
                    metrics.presses_dropped.inc(&["busy"]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(debounce_ms: u64, burst: u32, per_minute: u32) -> PressFilter {
        PressFilter::new(&GpioConfig {
            debounce: Duration::from_millis(debounce_ms),
            burst,
            rings_per_minute: per_minute,
            ..GpioConfig::default()
        })
    }

    #[test]
    fn bounce_train_is_one_press() {
        let mut f = filter(50, 3, 12);
        let t0 = Instant::now();
        assert_eq!(f.admit(t0), Ok(()));
        for i in 1..20 {
            assert_eq!(f.admit(t0 + Duration::from_millis(i * 2)), Err(Rejected::Debounce));
        }
        assert_eq!(f.admit(t0 + Duration::from_millis(38 + 60)), Ok(()));
    }

    #[test]
    fn storm_of_1000_presses_in_a_second_is_bounded() {
        // Presses 1 ms apart with no debounce: only the burst gets through, plus the refill.
        let mut f = filter(0, 3, 12);
        let t0 = Instant::now();
        let admitted = (0..1000).filter(|i| f.admit(t0 + Duration::from_millis(*i)).is_ok()).count();
        assert_eq!(admitted, 3);
    }

    /// Presses a detector reports over a run of physical levels (1 = high).
    fn presses(active_low: bool, levels: &[u8]) -> Vec<usize> {
        let mut d = EdgeDetector::new(active_low);
        levels.iter().enumerate().filter(|(_, l)| d.sample(**l == 1)).map(|(i, _)| i).collect()
    }

    #[test]
    fn edge_detector_idle_start_is_no_press() {
        assert!(presses(true, &[1, 1, 1]).is_empty());
        assert!(presses(false, &[0, 0, 0]).is_empty());
    }

    #[test]
    fn edge_detector_press_hold_release() {
        // Active-low: press at 2, held through 4, released at 5 (no press), pressed again at 7.
        assert_eq!(presses(true, &[1, 1, 0, 0, 0, 1, 1, 0]), vec![2, 7]);
        // Active-high: the same wiring inverted.
        assert_eq!(presses(false, &[0, 1, 1, 0, 1]), vec![1, 4]);
    }

    #[test]
    fn edge_detector_active_at_start_waits_for_a_release() {
        assert!(presses(true, &[0, 0, 0]).is_empty());
        assert_eq!(presses(true, &[0, 0, 1, 0]), vec![3]);
    }

    #[test]
    fn edge_detector_bounce_train_is_debounced_by_the_filter() {
        // A press sampled every 1 ms bouncing for 6 ms, held, then a bouncy release.
        let levels = [1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1];
        let edges = presses(true, &levels);
        assert_eq!(edges, vec![2, 4, 6, 12]);
        let mut f = filter(50, 3, 12);
        let t0 = Instant::now();
        let rings = edges.iter().filter(|i| f.admit(t0 + Duration::from_millis(**i as u64)).is_ok()).count();
        assert_eq!(rings, 1);
    }

    #[test]
    fn tokens_refill_over_time() {
        let mut f = filter(0, 1, 60);
        let t0 = Instant::now();
        assert_eq!(f.admit(t0), Ok(()));
        assert_eq!(f.admit(t0 + Duration::from_millis(500)), Err(Rejected::RateLimit));
        assert_eq!(f.admit(t0 + Duration::from_millis(1600)), Ok(()));
    }
}
