//! Simulated button: presses come from `POST /simulate/press` and `doorbell-agent press`.
//! A real program path (laptops, CI, the systemd testbed), not a test double.

use std::sync::{Arc, OnceLock};

use super::{Button, GpioError, PressSink, Trigger};

/// The backend half, started like any other button.
#[derive(Debug)]
pub struct SimulatedButton(Arc<OnceLock<PressSink>>);

/// The handle the probe uses to press the simulated button.
#[derive(Debug, Clone)]
pub struct Simulator(Arc<OnceLock<PressSink>>);

impl SimulatedButton {
    /// A simulated button and the handle that presses it.
    pub fn new() -> (SimulatedButton, Simulator) {
        let slot = Arc::new(OnceLock::new());
        (SimulatedButton(slot.clone()), Simulator(slot))
    }
}

impl Button for SimulatedButton {
    fn start(&mut self, sink: PressSink) -> Result<(), GpioError> {
        // A second start keeps the first sink; there is only one button.
        let _ = self.0.set(sink);
        Ok(())
    }

    fn describe(&self) -> String {
        "simulated (POST /simulate/press)".into()
    }
}

impl Simulator {
    /// Presses the button; false when the backend is not started or the press was dropped.
    pub fn press(&self) -> bool {
        self.0.get().is_some_and(|sink| sink.press(Trigger::Simulated))
    }
}
