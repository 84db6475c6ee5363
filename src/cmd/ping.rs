//! `ping`: the agent is alive and executing commands.

use serde_json::Value;

use super::{Args, Context};

/// No arguments.
#[derive(Debug)]
pub struct Ping;

impl Ping {
    pub(super) fn parse(args: Args) -> Result<Ping, String> {
        args.only(&[])?;
        Ok(Ping)
    }

    pub(super) fn apply(self, ctx: &Context) -> Result<Value, String> {
        let info = &ctx.view.info;
        Ok(serde_json::json!({
            "pong": true,
            "device": info.device_id,
            "version": crate::VERSION,
            "uptime_s": info.started.elapsed().as_secs(),
        }))
    }
}
