//! `press`: a test ring, whatever the button backend; answers with the stored ring.

use std::time::Duration;

use serde_json::Value;

use super::{Args, Context};
use crate::gpio::Trigger;

/// How long the ring may take to be decided and stored.
const RING_TIMEOUT: Duration = Duration::from_secs(15);

/// No arguments.
#[derive(Debug)]
pub struct Press;

impl Press {
    pub(super) fn parse(args: Args) -> Result<Press, String> {
        args.only(&[])?;
        Ok(Press)
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        let mut rings = ctx.view.rings.clone();
        let before = rings.borrow_and_update().rings;
        if !ctx.press.press(Trigger::Fleet) {
            return Err("the button queue is full".into());
        }
        let stored = tokio::time::timeout(RING_TIMEOUT, rings.wait_for(|r| r.rings > before)).await;
        match stored {
            Ok(Ok(stats)) => Ok(serde_json::json!({"ring": stats.last.as_ref().map(crate::pipeline::to_json)})),
            Ok(Err(_)) => Err("the ring pipeline has stopped".into()),
            Err(_) => Err(format!(
                "the press did not become a ring within {}s (debounced or rate limited; see doorbell_presses_dropped_total)",
                RING_TIMEOUT.as_secs()
            )),
        }
    }
}
