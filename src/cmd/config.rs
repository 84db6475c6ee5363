//! `config/get` and `config/set`: read the effective configuration; change the keys the
//! running agent can apply live (validated, persisted, applied; see `settings`).

use serde_json::{Map, Value};

use super::{Args, Context};

/// `key`: an optional dotted key (`sampler.interval`, `mqtt`); the whole config otherwise.
#[derive(Debug)]
pub struct Get {
    key: Option<String>,
}

/// Every argument is a dotted key with its new value: `{"sampler.interval": "10s"}`.
#[derive(Debug)]
pub struct Set {
    values: Map<String, Value>,
}

impl Get {
    pub(super) fn parse(args: Args) -> Result<Get, String> {
        args.only(&["key"])?;
        let key = match args.0.get("key") {
            None => None,
            Some(_) => Some(args.string("key")?.to_string()),
        };
        Ok(Get { key })
    }

    pub(super) fn apply(self, ctx: &Context) -> Result<Value, String> {
        let mut config = serde_json::to_value(ctx.settings.current()).map_err(|e| e.to_string())?;
        // Secrets never leave the device.
        if let Some(password) = config.pointer_mut("/mqtt/password").filter(|p| !p.is_null()) {
            *password = Value::from("(set)");
        }
        match self.key {
            None => Ok(config),
            Some(key) => {
                config.pointer(&format!("/{}", key.replace('.', "/"))).cloned().ok_or_else(|| format!("no configuration key `{key}`"))
            }
        }
    }
}

impl Set {
    pub(super) fn parse(args: Args) -> Result<Set, String> {
        if args.0.is_empty() {
            return Err("bad arguments: give at least one dotted key with its new value, e.g. {\"sampler.interval\": \"10s\"}".into());
        }
        Ok(Set { values: args.0.clone() })
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        let settings = ctx.settings.clone();
        let applied = tokio::task::spawn_blocking(move || settings.set(&self.values)).await.map_err(|e| e.to_string())??;
        Ok(serde_json::json!({"applied": applied}))
    }
}
