//! A real button on a GPIO line via the kernel's GPIO character device (rppal).

use std::time::Duration;

use rppal::gpio::{Gpio, InputPin, Trigger as Edge};

use super::{Button, GpioError, PressSink, Trigger};
use crate::config::{GpioConfig, Pull};

/// A button wired to a BCM pin.
pub struct RppalButton {
    cfg: GpioConfig,
    // The interrupt stays registered only while the pin is alive.
    pin: Option<InputPin>,
}

impl RppalButton {
    /// A button for the configured pin; nothing is touched until `start`.
    pub fn new(cfg: GpioConfig) -> Self {
        RppalButton { cfg, pin: None }
    }
}

impl Button for RppalButton {
    fn start(&mut self, sink: PressSink) -> Result<(), GpioError> {
        let bcm = self.cfg.pin;
        let err = |e: rppal::gpio::Error| GpioError::Pin {
            pin: bcm,
            reason: format!("{e} (is /dev/gpiochip0 present and is the user in the `gpio` group?)"),
        };
        let pin = Gpio::new().map_err(err)?.get(bcm).map_err(err)?;
        let mut pin = match self.cfg.pull {
            Pull::Up => pin.into_input_pullup(),
            Pull::Down => pin.into_input_pulldown(),
            Pull::Off => pin.into_input(),
        };
        let edge = if self.cfg.active_low { Edge::FallingEdge } else { Edge::RisingEdge };
        // The callback runs on rppal's interrupt thread: it only does a try_send.
        let callback = move |_event| {
            sink.press(Trigger::Button);
        };
        // Ask the kernel for hardware debounce; older kernels refuse it, and the software
        // debounce in `PressFilter` applies either way.
        let hw = (!self.cfg.debounce.is_zero()).then_some(self.cfg.debounce.min(Duration::from_millis(100)));
        if let Err(e) = pin.set_async_interrupt(edge, hw, callback.clone()) {
            log::warn!("GPIO {bcm}: kernel debounce unavailable ({e}); using software debounce only");
            pin.set_async_interrupt(edge, None, callback).map_err(err)?;
        }
        self.pin = Some(pin);
        Ok(())
    }

    fn describe(&self) -> String {
        let pull = match self.cfg.pull {
            Pull::Up => "pull-up",
            Pull::Down => "pull-down",
            Pull::Off => "no pull",
        };
        let level = if self.cfg.active_low { "active-low" } else { "active-high" };
        format!("rppal BCM {} ({pull}, {level})", self.cfg.pin)
    }
}
