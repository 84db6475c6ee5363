//! `status`: the same document as the probe's /status.

use serde_json::Value;

use super::{Args, Context};

/// No arguments.
#[derive(Debug)]
pub struct Status;

impl Status {
    pub(super) fn parse(args: Args) -> Result<Status, String> {
        args.only(&[])?;
        Ok(Status)
    }

    pub(super) fn apply(self, ctx: &Context) -> Result<Value, String> {
        Ok(ctx.view.json())
    }
}
