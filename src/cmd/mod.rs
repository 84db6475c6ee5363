//! Fleet commands: one file per command and one `Command` enum that parses and dispatches
//! (the shape of tokio's mini-redis). Transport-independent: the fleet link delivers
//! requests from MQTT (responses published through the durable outbox), the local control
//! socket (`local`) delivers lines from operators on the device (responses sent back to them
//! only); both go through the one `Dispatcher`.
//!
//! Every request is answered: `failed` with a reason when it is too large, not JSON, has no
//! usable id, names an unknown command, has bad arguments or is not authorised; otherwise
//! `accepted`, `executing`, then `successful` or `failed`. A repeated id is answered with
//! the stored outcome and never executed twice (the `Ledger`).

mod alert;
mod auth;
mod config;
mod dispatch;
mod face;
mod ledger;
mod logs;
mod ping;
mod press;
mod restart;
mod status;
mod update;

pub use auth::{command_text, sign};
pub use dispatch::{Context, Dispatcher, Inbound, Origin, LOCAL_STEPS};
pub use ledger::Ledger;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// Where a command is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Parsed, authorised and recorded; will be executed.
    Accepted,
    /// Running.
    Executing,
    /// Done.
    Successful,
    /// Refused or failed; `reason` says why.
    Failed,
}

impl Status {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Executing => "executing",
            Status::Successful => "successful",
            Status::Failed => "failed",
        }
    }

    /// Successful or failed: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Successful | Status::Failed)
    }
}

/// One step of a command's lifecycle, as published on `P/cmd/res`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The request's id (absent only when the request had none that could be read).
    pub id: Option<String>,
    /// The command name.
    pub name: String,
    /// Lifecycle step.
    pub status: Status,
    /// 0..1 for long commands.
    pub progress: Option<f64>,
    /// What a successful command produced.
    pub result: Option<Value>,
    /// Why it failed.
    pub reason: Option<String>,
}

impl Response {
    /// A step of request `id`.
    pub fn new(id: &str, name: &str, status: Status) -> Response {
        Response { id: Some(id.into()), name: name.into(), status, progress: None, result: None, reason: None }
    }

    /// A failure of request `id`.
    pub fn failed(id: &str, name: &str, reason: impl Into<String>) -> Response {
        Response { reason: Some(reason.into()), ..Response::new(id, name, Status::Failed) }
    }

    /// A request refused before it could be parsed: the id is recovered if the payload has one.
    pub fn rejected(name: &str, payload: &[u8], reason: impl Into<String>) -> Response {
        let id = serde_json::from_slice::<Value>(payload).ok().and_then(|v| v.get("id")?.as_str().map(String::from));
        Response { id, ..Response::failed("", name, reason) }
    }

    /// A local control line refused before it could be parsed: id and name are recovered if
    /// it has them.
    pub fn rejected_local(line: &[u8], reason: impl Into<String>) -> Response {
        let name = serde_json::from_slice::<Value>(line).ok().and_then(|v| v.get("name")?.as_str().map(String::from)).unwrap_or_default();
        Response::rejected(&name, line, reason)
    }

    /// The `P/cmd/res` payload.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "name": self.name,
            "status": self.status.as_str(),
            "ts": doorbell_base::time::rfc3339(doorbell_base::time::now_ms()),
        });
        for (key, value) in [
            ("progress", self.progress.map(Value::from)),
            ("result", self.result.clone()),
            ("reason", self.reason.clone().map(Value::from)),
        ] {
            if let Some(value) = value {
                v[key] = value;
            }
        }
        v
    }
}

/// A parsed request: `{id, ...args}` sent to `P/cmd/{name}`, or signed (see `auth`).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Caller-chosen id; repeats are answered from the ledger.
    pub id: String,
    /// Command name.
    pub name: String,
    /// Arguments: every field but `id`.
    pub args: Map<String, Value>,
    /// The fleet signature, when the request came signed.
    pub signed: Option<Signed>,
    /// Sent to `{prefix}/all/cmd/{name}`.
    pub broadcast: bool,
}

/// A signed request's text, as sent, and what it binds besides the command.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    /// The command JSON that was signed, byte for byte.
    pub text: String,
    /// Base64 ed25519 signature over `text`.
    pub sig: String,
    /// The device id it is for, or `all`.
    pub target: String,
    /// RFC 3339 time after which it is refused.
    pub expires: String,
}

/// Longest accepted request id.
const MAX_ID: usize = 128;

/// The shape of a signed request, for errors.
const SIGNED_SHAPE: &str = "a signed command is {\"signed\": TEXT, \"sig\": SIG}, TEXT the command as JSON \
     {\"id\", \"name\", \"target\", \"expires\", \"args\"}, SIG the base64 ed25519 signature of TEXT";

impl Request {
    /// Parses an MQTT payload `{id, ...args}` of command `name`, or a signed one
    /// `{signed, sig}`; the error is the `failed` reason.
    pub fn parse(name: &str, broadcast: bool, payload: &[u8], max_bytes: usize) -> Result<Request, String> {
        if payload.len() > max_bytes {
            return Err(format!("too large: {} bytes, the limit is {max_bytes}", payload.len()));
        }
        let Value::Object(mut fields) = json(payload)? else {
            return Err("malformed request: the payload must be a JSON object {\"id\": ..., args}".into());
        };
        if !fields.contains_key("signed") {
            if fields.contains_key("sig") || fields.contains_key("expires") {
                return Err(format!("malformed request: `sig` and `expires` do not go beside the arguments: {SIGNED_SHAPE}"));
            }
            return Request::from_fields(name.into(), broadcast, fields);
        }
        let (text, sig) = (string("signed", &mut fields)?, string("sig", &mut fields)?);
        if let Some(key) = fields.keys().next() {
            return Err(format!("malformed request: unknown field `{key}`: {SIGNED_SHAPE}"));
        }
        let Value::Object(mut inner) = json(text.as_bytes())? else {
            return Err(format!("malformed request: {SIGNED_SHAPE}"));
        };
        let (target, expires) = (string("target", &mut inner)?, string("expires", &mut inner)?);
        let request = Request::from_nested(inner, broadcast, SIGNED_SHAPE)?;
        if request.name != name {
            return Err(format!("malformed request: the signed command is `{}`, sent to the topic of `{name}`", request.name));
        }
        Ok(Request { signed: Some(Signed { text, sig, target, expires }), ..request })
    }

    /// Parses a line of the local control socket, `{"id", "name", "args"?}` (its size was
    /// bounded by the socket); the error is the `failed` reason.
    pub fn parse_local(line: &[u8]) -> Result<Request, String> {
        let Value::Object(fields) = json(line)? else {
            return Err("malformed request: a line must be a JSON object {\"id\", \"name\", \"args\"}".into());
        };
        Request::from_nested(fields, false, "a request is {\"id\", \"name\", \"args\"}")
    }

    /// A request `{"id", "name", "args"?}` (`shape` says so in errors).
    fn from_nested(mut fields: Map<String, Value>, broadcast: bool, shape: &str) -> Result<Request, String> {
        let name = match fields.remove("name") {
            Some(Value::String(name)) if !name.is_empty() => name,
            Some(_) => return Err("bad arguments: `name` must be a command name".into()),
            None => return Err("bad arguments: missing `name`".into()),
        };
        let args = match fields.remove("args") {
            None => Map::new(),
            Some(Value::Object(args)) => args,
            Some(_) => return Err("bad arguments: `args` must be a JSON object".into()),
        };
        if let Some(key) = fields.keys().find(|k| *k != "id") {
            return Err(format!("malformed request: unknown field `{key}` ({shape})"));
        }
        if args.contains_key("id") {
            return Err("bad arguments: `id` belongs beside `name`, not in `args`".into());
        }
        fields.extend(args);
        Request::from_fields(name, broadcast, fields)
    }

    /// Takes `id` out of the fields; the rest are the arguments.
    fn from_fields(name: String, broadcast: bool, mut args: Map<String, Value>) -> Result<Request, String> {
        let id = match args.remove("id") {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID && !id.chars().any(char::is_control) => id,
            Some(_) => return Err(format!("bad arguments: `id` must be a string of 1 to {MAX_ID} printable characters")),
            None => return Err("bad arguments: missing `id`".into()),
        };
        Ok(Request { id, name, args, signed: None, broadcast })
    }
}

/// Takes the string field `key` out of a request object.
fn string(key: &str, fields: &mut Map<String, Value>) -> Result<String, String> {
    match fields.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("malformed request: `{key}` must be a string")),
        None => Err(format!("malformed request: missing `{key}`: {SIGNED_SHAPE}")),
    }
}

fn json(payload: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(payload).map_err(|e| format!("malformed JSON: {e}"))
}

/// Typed argument access for the command files; every error names the argument.
pub(crate) struct Args<'a>(&'a Map<String, Value>);

impl<'a> Args<'a> {
    /// Fails if an argument other than `known` is present.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) if known.is_empty() => Err(format!("bad arguments: this command takes none, got `{k}`")),
            Some(k) => Err(format!("bad arguments: unknown argument `{k}` (expected {})", known.join(", "))),
            None => Ok(()),
        }
    }

    /// A required string.
    pub(crate) fn string(&self, key: &str) -> Result<&'a str, String> {
        match self.0.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(format!("bad arguments: `{key}` must be a non-empty string")),
            None => Err(format!("bad arguments: missing `{key}`")),
        }
    }

    /// An optional string (present means non-empty).
    pub(crate) fn optional_string(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// A required boolean.
    pub(crate) fn boolean(&self, key: &str) -> Result<bool, String> {
        match self.0.get(key) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("bad arguments: `{key}` must be true or false")),
            None => Err(format!("bad arguments: missing `{key}`")),
        }
    }

    /// An optional boolean.
    pub(crate) fn optional_boolean(&self, key: &str) -> Result<Option<bool>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(_) => self.boolean(key).map(Some),
        }
    }

    /// An optional whole number within `range`.
    pub(crate) fn count(&self, key: &str, range: std::ops::RangeInclusive<u64>) -> Result<Option<u64>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(format!("bad arguments: `{key}` must be a whole number from {} to {}", range.start(), range.end())),
            },
        }
    }
}

/// Every command this version knows.
#[derive(Debug)]
pub enum Command {
    /// `ping`
    Ping(ping::Ping),
    /// `status`
    Status(status::Status),
    /// `config/get`
    ConfigGet(config::Get),
    /// `config/set`
    ConfigSet(config::Set),
    /// `alert/ack`
    AlertAck(alert::Ack),
    /// `alert/clear`
    AlertClear(alert::Clear),
    /// `press`
    Press(press::Press),
    /// `logs`
    Logs(logs::Logs),
    /// `restart`
    Restart(restart::Restart),
    /// `face/enroll`
    FaceEnroll(face::Enroll),
    /// `face/remove`
    FaceRemove(face::Remove),
    /// `face/list`
    FaceList(face::ListPeople),
    /// `face/feedback`
    FaceFeedback(face::Feedback),
    /// `face/export`
    FaceExport(face::Export),
    /// `face/import`
    FaceImport(face::Import),
    /// `update`
    Update(update::Update),
    /// `rollback`
    Rollback(update::Rollback),
}

/// Progress of a long command (0..1), published as `executing` steps by the dispatcher.
#[derive(Clone)]
pub(crate) struct Progress(mpsc::Sender<f64>);

impl Progress {
    /// Reports a fraction done; dropped when the publisher is behind (the next one says more).
    pub(crate) fn report(&self, fraction: f64) {
        let _ = self.0.try_send(fraction.clamp(0.0, 1.0));
    }
}

impl Command {
    /// Parses a request into a command with typed arguments.
    pub fn parse(request: &Request) -> Result<Command, String> {
        let args = Args(&request.args);
        Ok(match request.name.as_str() {
            "ping" => Command::Ping(ping::Ping::parse(args)?),
            "status" => Command::Status(status::Status::parse(args)?),
            "config/get" => Command::ConfigGet(config::Get::parse(args)?),
            "config/set" => Command::ConfigSet(config::Set::parse(args)?),
            "alert/ack" => Command::AlertAck(alert::Ack::parse(args)?),
            "alert/clear" => Command::AlertClear(alert::Clear::parse(args)?),
            "press" => Command::Press(press::Press::parse(args)?),
            "logs" => Command::Logs(logs::Logs::parse(args)?),
            "restart" => Command::Restart(restart::Restart::parse(args)?),
            "face/enroll" => Command::FaceEnroll(face::Enroll::parse(args)?),
            "face/remove" => Command::FaceRemove(face::Remove::parse(args)?),
            "face/list" => Command::FaceList(face::ListPeople::parse(args)?),
            "face/feedback" => Command::FaceFeedback(face::Feedback::parse(args)?),
            "face/export" => Command::FaceExport(face::Export::parse(args)?),
            "face/import" => Command::FaceImport(face::Import::parse(args)?),
            "update" => Command::Update(update::Update::parse(&request.id, args)?),
            "rollback" => Command::Rollback(update::Rollback::parse(&request.id, args)?),
            name => return Err(format!("unknown command `{name}`")),
        })
    }

    /// Commands that must be signed when `mqtt.command_key` is set: all that change the
    /// device or read biometric data (the gallery, and the names of the people who rang in
    /// `status`, `logs` and a `press`'s ring). Only `ping` and `config/get` (whose password
    /// is redacted) are not.
    pub fn needs_signature(&self) -> bool {
        !matches!(self, Command::Ping(_) | Command::ConfigGet(_))
    }

    /// Commands whose success ends this run (exit 75); the next run answers them.
    pub fn finishes_after_restart(&self) -> bool {
        matches!(self, Command::Restart(_) | Command::Update(_) | Command::Rollback(_))
    }

    /// Runs the command; the value is the response's `result`.
    pub(crate) async fn apply(self, ctx: &Context, progress: Progress) -> Result<Value, String> {
        match self {
            Command::Ping(c) => c.apply(ctx),
            Command::Status(c) => c.apply(ctx),
            Command::ConfigGet(c) => c.apply(ctx),
            Command::ConfigSet(c) => c.apply(ctx).await,
            Command::AlertAck(c) => c.apply(ctx).await,
            Command::AlertClear(c) => c.apply(ctx).await,
            Command::Press(c) => c.apply(ctx).await,
            Command::Logs(c) => c.apply(ctx),
            Command::Restart(c) => c.apply(ctx).await,
            Command::FaceEnroll(c) => c.apply(ctx).await,
            Command::FaceRemove(c) => c.apply(ctx).await,
            Command::FaceList(c) => c.apply(ctx).await,
            Command::FaceFeedback(c) => c.apply(ctx).await,
            Command::FaceExport(c) => c.apply(ctx).await,
            Command::FaceImport(c) => c.apply(ctx).await,
            Command::Update(c) => c.apply(ctx, progress).await,
            Command::Rollback(c) => c.apply(ctx).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(payload: &str) -> Result<Request, String> {
        Request::parse("ping", false, payload.as_bytes(), 1024)
    }

    #[test]
    fn malformed_requests_get_a_reason() {
        assert!(parse("{nope").unwrap_err().starts_with("malformed JSON"));
        assert!(parse("[1]").unwrap_err().starts_with("malformed request"));
        assert_eq!(parse("{}").unwrap_err(), "bad arguments: missing `id`");
        assert!(parse(r#"{"id": 7}"#).unwrap_err().contains("`id` must be a string"));
        assert!(parse(r#"{"id": ""}"#).unwrap_err().contains("`id` must be a string"));
        assert!(parse(r#"{"id": "a", "sig": "AAAA"}"#).unwrap_err().contains("do not go beside the arguments"));
        assert!(parse(r#"{"signed": "{}", "sig": 1}"#).unwrap_err().contains("`sig` must be a string"));
        assert!(parse(r#"{"signed": "{}", "sig": "AAAA", "id": "a"}"#).unwrap_err().contains("unknown field `id`"));
        assert!(parse(r#"{"signed": "[]", "sig": "AAAA"}"#).unwrap_err().contains("a signed command is"));
        let inner = r#"{\"id\": \"a\", \"name\": \"restart\", \"target\": \"d\", \"expires\": \"x\"}"#;
        let misdirected = parse(&format!(r#"{{"signed": "{inner}", "sig": "AAAA"}}"#)).unwrap_err();
        assert!(misdirected.contains("the signed command is `restart`, sent to the topic of `ping`"), "{misdirected}");
        let big = format!(r#"{{"id": "a", "x": "{}"}}"#, "y".repeat(2000));
        assert!(parse(&big).unwrap_err().starts_with("too large"));
    }

    #[test]
    fn commands_parse_with_typed_arguments() {
        let req = |name: &str, payload: &str| Request::parse(name, false, payload.as_bytes(), 1024).unwrap();
        assert!(matches!(Command::parse(&req("ping", r#"{"id":"1"}"#)), Ok(Command::Ping(_))));
        assert!(Command::parse(&req("ping", r#"{"id":"1","x":1}"#)).unwrap_err().contains("takes none"));
        assert_eq!(Command::parse(&req("frob", r#"{"id":"1"}"#)).unwrap_err(), "unknown command `frob`");
        assert!(Command::parse(&req("update", r#"{"id":"1"}"#)).unwrap_err().contains("exactly one of"));
        assert!(matches!(Command::parse(&req("rollback", r#"{"id":"1"}"#)), Ok(Command::Rollback(_))));
        assert!(Command::parse(&req("logs", r#"{"id":"1","lines":"many"}"#)).unwrap_err().contains("`lines` must be a whole number"));
        assert!(Command::parse(&req("alert/ack", r#"{"id":"1"}"#)).unwrap_err().contains("missing `alert`"));
        assert!(Command::parse(&req("config/set", r#"{"id":"1"}"#)).unwrap_err().contains("at least one"));
        assert!(matches!(Command::parse(&req("face/enroll", r#"{"id":"1","name":"ann","jpeg":"/9j/"}"#)), Ok(Command::FaceEnroll(_))));
        assert!(Command::parse(&req("face/enroll", r#"{"id":"1","name":"ann"}"#)).unwrap_err().contains("exactly one of"));
        assert!(Command::parse(&req("face/enroll", r#"{"id":"1","name":"a","ring":"r","list":"vip"}"#)).unwrap_err().contains("`list`"));
        assert!(Command::parse(&req("face/enroll", r#"{"id":"1","name":"a","jpeg":"%%"}"#)).unwrap_err().contains("not base64"));
        assert!(Command::parse(&req("face/feedback", r#"{"id":"1","ring":"r","correct":"yes"}"#)).unwrap_err().contains("true or false"));
        assert!(matches!(Command::parse(&req("face/list", r#"{"id":"1"}"#)), Ok(Command::FaceList(_))));
    }

    #[test]
    fn local_lines_carry_the_name_and_the_arguments_apart() {
        let ok = Request::parse_local(br#"{"id":"l1","name":"face/remove","args":{"name":"ann"}}"#).unwrap();
        assert_eq!((ok.id.as_str(), ok.name.as_str(), ok.args["name"].as_str()), ("l1", "face/remove", Some("ann")));
        assert!(!ok.broadcast && ok.signed.is_none());
        assert!(Request::parse_local(br#"{"id":"l2","name":"ping"}"#).unwrap().args.is_empty(), "args are optional");
        let err = |line: &str| Request::parse_local(line.as_bytes()).unwrap_err();
        assert!(err("{nope").starts_with("malformed JSON"));
        assert!(err("[1]").starts_with("malformed request"));
        assert_eq!(err(r#"{"id":"x"}"#), "bad arguments: missing `name`");
        assert!(err(r#"{"id":"x","name":"ping","args":[1]}"#).contains("`args` must be a JSON object"));
        assert!(err(r#"{"id":"x","name":"ping","extra":1}"#).contains("unknown field `extra`"));
        assert!(err(r#"{"id":"x","name":"ping","args":{"id":"y"}}"#).contains("not in `args`"));
        assert_eq!(err(r#"{"name":"ping"}"#), "bad arguments: missing `id`");
        let refused = Response::rejected_local(br#"{"id":"x","name":"face/list","args":7}"#, "bad");
        assert_eq!((refused.id.as_deref(), refused.name.as_str()), (Some("x"), "face/list"));
    }

    #[test]
    fn gallery_backup_commands_parse_and_import_changes_the_device() {
        let req = |name: &str, payload: &str| Request::parse(name, false, payload.as_bytes(), 1024).unwrap();
        assert!(matches!(Command::parse(&req("face/export", r#"{"id":"1"}"#)), Ok(Command::FaceExport(_))));
        assert!(Command::parse(&req("face/export", r#"{"id":"1","x":1}"#)).unwrap_err().contains("takes none"));
        let import = Command::parse(&req("face/import", r#"{"id":"1","file":"AAAA"}"#)).unwrap();
        assert!(import.needs_signature(), "an import must be signed when mqtt.command_key is set");
        let export = Command::parse(&req("face/export", r#"{"id":"1"}"#)).unwrap();
        assert!(export.needs_signature(), "the gallery is biometric data");
        assert!(Command::parse(&req("face/import", r#"{"id":"1"}"#)).unwrap_err().contains("missing `file`"));
        assert!(Command::parse(&req("face/import", r#"{"id":"1","file":"%%"}"#)).unwrap_err().contains("not base64"));
        assert!(matches!(Command::parse(&req("face/feedback", r#"{"id":"1","ring":3,"correct":true}"#)), Ok(Command::FaceFeedback(_))));
        assert!(Command::parse(&req("face/feedback", r#"{"id":"1","ring":0,"correct":true}"#)).unwrap_err().contains("sequence number"));
        assert!(matches!(Command::parse(&req("face/enroll", r#"{"id":"1","name":"a","ring":12}"#)), Ok(Command::FaceEnroll(_))));
    }

    #[test]
    fn response_payload_has_the_contract_fields() {
        let mut r = Response::new("c1", "ping", Status::Successful);
        r.result = Some(serde_json::json!({"pong": true}));
        let v = r.to_json();
        assert_eq!((v["id"].as_str(), v["name"].as_str(), v["status"].as_str()), (Some("c1"), Some("ping"), Some("successful")));
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert!(v.get("reason").is_none());
        let rejected = Response::rejected("ping", br#"{"id":"x","n":[}"#, "malformed JSON");
        assert_eq!(rejected.id, None, "an id inside broken JSON cannot be trusted");
        assert_eq!(Response::rejected("ping", br#"{"id":"x"}"#, "busy").id.as_deref(), Some("x"));
    }
}
