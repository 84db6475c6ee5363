//! A real button on a GPIO line: rpi-pal where the kernel has `/dev/gpiomem` (Raspberry Pi
//! OS), else the GPIO character device (`chardev`: Debian's kernels, emulated Pis); presses
//! from edge interrupts or, with `detect = "poll"`, from the level read on a thread.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rppal::gpio::{Gpio, InputPin, Level, Trigger as Edge};

use super::chardev::{self, Line, LineError};
use super::{Button, EdgeDetector, GpioError, PressSink, Trigger};
use crate::config::{Detect, GpioConfig, Pull};

/// The register windows rpi-pal maps: BCM283x/2711, and the Pi 5's RP1.
const GPIOMEM: [&str; 2] = ["/dev/gpiomem", "/dev/gpiomem0"];

/// How long the event thread waits for an edge before it looks at its stop flag.
const EVENT_WAIT: Duration = Duration::from_millis(100);

/// Whether rpi-pal can reach the GPIO registers without root (`/dev/gpiomem`); without it
/// the agent reads the line through `/dev/gpiochip0`.
pub fn gpiomem_present() -> bool {
    GPIOMEM.iter().any(|p| Path::new(p).exists())
}

/// How the line is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// rpi-pal: registers through `/dev/gpiomem`, interrupts through the character device.
    Rppal,
    /// The character device only.
    Chardev,
}

/// A button wired to a BCM pin.
pub struct RppalButton {
    cfg: GpioConfig,
    access: Access,
    // rpi-pal's interrupt stays registered only while the pin is alive.
    pin: Option<InputPin>,
    // The polling or event thread; dropping it stops and joins the thread.
    worker: Option<Worker>,
}

impl RppalButton {
    /// A button for the configured pin; nothing is touched until `start`.
    pub fn new(cfg: GpioConfig) -> Self {
        let access = if gpiomem_present() { Access::Rppal } else { Access::Chardev };
        RppalButton { cfg, access, pin: None, worker: None }
    }

    fn fail(&self, reason: String) -> GpioError {
        GpioError::Pin { pin: self.cfg.pin, reason }
    }

    /// The pin through rpi-pal, as an input with the configured pull.
    fn rppal_input(&self) -> Result<InputPin, GpioError> {
        let err = |e: rppal::gpio::Error| {
            self.fail(format!("{e} (are /dev/gpiomem and /dev/gpiochip0 present and is the user in the `gpio` group?)"))
        };
        let pin = Gpio::new().map_err(err)?.get(self.cfg.pin).map_err(err)?;
        Ok(match self.cfg.pull {
            Pull::Up => pin.into_input_pullup(),
            Pull::Down => pin.into_input_pulldown(),
            Pull::Off => pin.into_input(),
        })
    }

    /// Kernel debounce asked for with interrupts; the software debounce applies either way.
    fn kernel_debounce(&self) -> Option<Duration> {
        (!self.cfg.debounce.is_zero()).then_some(self.cfg.debounce.min(Duration::from_millis(100)))
    }

    fn start_rppal_interrupt(&mut self, sink: PressSink) -> Result<(), GpioError> {
        let bcm = self.cfg.pin;
        let mut pin = self.rppal_input()?;
        let edge = if self.cfg.active_low { Edge::FallingEdge } else { Edge::RisingEdge };
        // The callback runs on rppal's interrupt thread: it only does a try_send.
        let callback = move |_event| {
            sink.press(Trigger::Button);
        };
        // Older kernels refuse kernel debounce: fall back to the software debounce only.
        if let Err(e) = pin.set_async_interrupt(edge, self.kernel_debounce(), callback.clone()) {
            log::warn!("GPIO {bcm}: kernel debounce unavailable ({e}); using software debounce only");
            pin.set_async_interrupt(edge, None, callback)
                .map_err(|e| self.fail(format!("{e} (is /dev/gpiochip0 present and is the user in the `gpio` group?)")))?;
        }
        self.pin = Some(pin);
        Ok(())
    }

    fn start_chardev_interrupt(&mut self, sink: PressSink) -> Result<(), GpioError> {
        let bcm = self.cfg.pin;
        let edge = if self.cfg.active_low { chardev::Edge::Falling } else { chardev::Edge::Rising };
        let request = |debounce| Line::request(u32::from(bcm), self.cfg.pull, Some(edge), debounce);
        let line = match request(self.kernel_debounce()) {
            Ok(line) => line,
            Err(e @ LineError::Request(_)) if !e.is_busy() && self.kernel_debounce().is_some() => {
                log::warn!("GPIO {bcm}: kernel debounce unavailable ({e}); using software debounce only");
                request(None).map_err(|e| self.fail(e.to_string()))?
            }
            Err(e) => return Err(self.fail(e.to_string())),
        };
        let worker = Worker::spawn("gpio-events", move |stop| event_loop(stop, &line, &sink, bcm))
            .map_err(|e| self.fail(format!("cannot start the GPIO event thread: {e}")))?;
        self.worker = Some(worker);
        Ok(())
    }

    fn start_polling(&mut self, sink: PressSink) -> Result<(), GpioError> {
        let (bcm, interval, active_low) = (self.cfg.pin, self.cfg.poll_interval, self.cfg.active_low);
        let spawned = match self.access {
            Access::Rppal => {
                let pin = self.rppal_input()?;
                let read = move || Ok(pin.read() == Level::High);
                Worker::spawn("gpio-poll", move |stop| poll_loop(stop, interval, active_low, read, &sink, bcm))
            }
            Access::Chardev => {
                let line = Line::request(u32::from(bcm), self.cfg.pull, None, None).map_err(|e| self.fail(e.to_string()))?;
                let read = move || line.level();
                Worker::spawn("gpio-poll", move |stop| poll_loop(stop, interval, active_low, read, &sink, bcm))
            }
        };
        self.worker = Some(spawned.map_err(|e| self.fail(format!("cannot start the GPIO polling thread: {e}")))?);
        Ok(())
    }

    fn describe_as(&self, access: Access) -> String {
        let pull = match self.cfg.pull {
            Pull::Up => "pull-up",
            Pull::Down => "pull-down",
            Pull::Off => "no pull",
        };
        let level = if self.cfg.active_low { "active-low" } else { "active-high" };
        let detect = match self.cfg.detect {
            Detect::Interrupt => "interrupts".to_string(),
            Detect::Poll => format!("polled every {}", humantime::format_duration(self.cfg.poll_interval)),
        };
        let line = match access {
            Access::Rppal => format!("rppal BCM {}", self.cfg.pin),
            Access::Chardev => format!("gpiochip0 line {}", self.cfg.pin),
        };
        format!("{line} ({pull}, {level}, {detect})")
    }
}

impl Button for RppalButton {
    fn start(&mut self, sink: PressSink) -> Result<(), GpioError> {
        // A second start replaces the first: its thread is stopped and its line released.
        self.worker = None;
        self.pin = None;
        match (self.access, self.cfg.detect) {
            (Access::Rppal, Detect::Interrupt) => self.start_rppal_interrupt(sink)?,
            (Access::Chardev, Detect::Interrupt) => self.start_chardev_interrupt(sink)?,
            (_, Detect::Poll) => self.start_polling(sink)?,
        }
        let path = match self.access {
            Access::Rppal => "rpi-pal through /dev/gpiomem".to_string(),
            Access::Chardev => format!("{} (no /dev/gpiomem on this kernel)", chardev::CHIP),
        };
        log::info!("button: {}, read with {path}", self.describe());
        Ok(())
    }

    fn describe(&self) -> String {
        self.describe_as(self.access)
    }
}

/// A thread that runs until dropped: drop sets its stop flag, wakes it and joins it.
struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(name: &str, body: impl FnOnce(&AtomicBool) + Send + 'static) -> io::Result<Worker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || body(&flag))?;
        Ok(Worker { stop, thread: Some(thread) })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            // Ends a polling thread's wait at once; an event thread sees the flag within EVENT_WAIT.
            thread.thread().unpark();
            if thread.join().is_err() {
                log::error!("the GPIO thread panicked");
            }
        }
    }
}

/// Reads the level every `interval` and reports each inactive → active change as a press.
fn poll_loop(
    stop: &AtomicBool,
    interval: Duration,
    active_low: bool,
    mut read: impl FnMut() -> io::Result<bool>,
    sink: &PressSink,
    bcm: u8,
) {
    let mut edges = EdgeDetector::new(active_low);
    let mut failing = false;
    while !stop.load(Ordering::Acquire) {
        match read() {
            Ok(level) => {
                if failing {
                    log::info!("GPIO {bcm}: reading the line works again");
                    failing = false;
                }
                if edges.sample(level) {
                    sink.press(Trigger::Button);
                }
            }
            Err(e) if !failing => {
                log::error!("GPIO {bcm}: {e}; still trying every {}", humantime::format_duration(interval));
                failing = true;
            }
            Err(_) => {}
        }
        std::thread::park_timeout(interval);
    }
}

/// Reports each edge event of `line` as a press.
fn event_loop(stop: &AtomicBool, line: &Line, sink: &PressSink, bcm: u8) {
    let mut failing = false;
    while !stop.load(Ordering::Acquire) {
        match line.wait_events(EVENT_WAIT) {
            Ok(events) => {
                if failing {
                    log::info!("GPIO {bcm}: line events work again");
                    failing = false;
                }
                for _ in 0..events {
                    sink.press(Trigger::Button);
                }
            }
            Err(e) => {
                if !failing {
                    log::error!("GPIO {bcm}: {e}; still trying every second");
                    failing = true;
                }
                std::thread::park_timeout(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn gpio_describe_names_the_path_and_the_detection() {
        let mut b = RppalButton::new(GpioConfig::default());
        assert_eq!(b.describe_as(Access::Rppal), "rppal BCM 17 (pull-up, active-low, interrupts)");
        b.cfg.detect = Detect::Poll;
        assert_eq!(b.describe_as(Access::Chardev), "gpiochip0 line 17 (pull-up, active-low, polled every 10ms)");
    }

    #[test]
    fn gpio_polling_thread_reports_presses_and_stops_when_dropped() {
        // Active-low: idle, press, held, release, bounce of a second press, then idle forever.
        let script: VecDeque<bool> = [true, false, false, true, false, true, false, true].into();
        let script = Arc::new(Mutex::new(script));
        let left = script.clone();
        let read = move || Ok(left.lock().map_err(|_| io::Error::other("poisoned"))?.pop_front().unwrap_or(true));
        let (sink, mut rx) = PressSink::channel(Arc::new(Metrics::default()));
        let worker = Worker::spawn("gpio-poll-test", move |stop| poll_loop(stop, Duration::from_millis(1), true, read, &sink, 17)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !script.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(worker);
        let mut presses = 0;
        while rx.try_recv().is_ok() {
            presses += 1;
        }
        assert_eq!(presses, 3);
    }

    #[test]
    fn gpio_polling_thread_stops_at_once_even_with_a_long_interval() {
        let (sink, _rx) = PressSink::channel(Arc::new(Metrics::default()));
        let worker =
            Worker::spawn("gpio-poll-test", move |stop| poll_loop(stop, Duration::from_secs(1), true, || Ok(true), &sink, 17)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        drop(worker);
        assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
    }
}
