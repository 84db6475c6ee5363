//! `alert/ack` and `alert/clear`: an operator acknowledges or resolves an active alert,
//! named by its id or its key.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use super::{Args, Context};
use crate::alerts::{Input, Reply};

/// `alert`: the alert's id or key.
#[derive(Debug)]
pub struct Ack {
    alert: String,
}

/// `alert`: the alert's id or key.
#[derive(Debug)]
pub struct Clear {
    alert: String,
}

fn alert_arg(args: Args) -> Result<String, String> {
    args.only(&["alert"])?;
    Ok(args.string("alert")?.to_string())
}

async fn ask(ctx: &Context, input: impl FnOnce(Reply) -> Input) -> Result<Value, String> {
    let (tx, rx) = oneshot::channel();
    ctx.alerts.send(input(tx)).await.map_err(|_| "the alert engine has stopped".to_string())?;
    let alert = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .map_err(|_| "the alert engine did not answer within 10 s".to_string())?
        .map_err(|_| "the alert engine has stopped".to_string())??;
    Ok(alert.to_json())
}

impl Ack {
    pub(super) fn parse(args: Args) -> Result<Ack, String> {
        Ok(Ack { alert: alert_arg(args)? })
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        ask(ctx, |reply| Input::Ack(self.alert, reply)).await
    }
}

impl Clear {
    pub(super) fn parse(args: Args) -> Result<Clear, String> {
        Ok(Clear { alert: alert_arg(args)? })
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        ask(ctx, |reply| Input::Clear(self.alert, reply)).await
    }
}
