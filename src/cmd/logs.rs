//! `logs`: the agent's most recent log lines.

use serde_json::Value;

use super::{Args, Context};

/// `lines`: how many (1..=500, default 100).
#[derive(Debug)]
pub struct Logs {
    lines: usize,
}

impl Logs {
    pub(super) fn parse(args: Args) -> Result<Logs, String> {
        args.only(&["lines"])?;
        let lines = args.count("lines", 1..=500)?.unwrap_or(100) as usize;
        Ok(Logs { lines })
    }

    pub(super) fn apply(self, ctx: &Context) -> Result<Value, String> {
        Ok(serde_json::json!({"lines": ctx.logs.last(self.lines)}))
    }
}
