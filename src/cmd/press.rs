//! `press`: a test ring, whatever the button backend; answers with the stored ring.

use std::time::Duration;

use serde_json::Value;

use super::{Args, Context};
use crate::gpio::Trigger;

/// Room for storing the decided ring, beyond the pipeline's own bounds.
const STORE_MARGIN: Duration = Duration::from_secs(10);

/// No arguments.
#[derive(Debug)]
pub struct Press;

impl Press {
    pub(super) fn parse(args: Args) -> Result<Press, String> {
        args.only(&[])?;
        Ok(Press)
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        // The pipeline decides every ring it takes within these bounds (a slow worker's ring
        // is stored as `error`), so a ring missing after them was dropped, not slow.
        let pipeline = ctx.settings.current().pipeline;
        let wait = pipeline.start_timeout + pipeline.ring_deadline + STORE_MARGIN;
        let mut rings = ctx.view.rings.clone();
        let before = rings.borrow_and_update().rings;
        if !ctx.press.press(Trigger::Fleet) {
            return Err("the button queue is full".into());
        }
        let stored = tokio::time::timeout(wait, rings.wait_for(|r| r.rings > before)).await;
        match stored {
            Ok(Ok(stats)) => Ok(serde_json::json!({"ring": stats.last.as_ref().map(crate::store::RingV1::to_json)})),
            Ok(Err(_)) => Err("the ring pipeline has stopped".into()),
            Err(_) => Err(format!(
                "the press did not become a ring within {}s (pipeline.start_timeout + pipeline.ring_deadline + {}s): it was \
                 dropped as debounced, rate limited or busy (see doorbell_presses_dropped_total)",
                wait.as_secs(),
                STORE_MARGIN.as_secs()
            )),
        }
    }
}
