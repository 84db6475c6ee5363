//! `restart`: the agent exits with 75 and systemd starts it again (`RestartForceExitStatus=75`);
//! the next run reports the command `successful` once it is back.

use serde_json::Value;

use super::{Args, Context};
use crate::shutdown::EXIT_RESTART;

/// No arguments.
#[derive(Debug)]
pub struct Restart;

impl Restart {
    pub(super) fn parse(args: Args) -> Result<Restart, String> {
        args.only(&[])?;
        Ok(Restart)
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        ctx.stop.request(EXIT_RESTART, "restart requested by a fleet command").await?;
        Ok(Value::Null)
    }
}
