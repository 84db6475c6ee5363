//! `face/enroll`, `face/remove`, `face/list`, `face/feedback`, `face/export`, `face/import`:
//! the gallery, its backup and the accuracy feedback, through the pipeline owner's typed
//! control API (`FacesHandle`). The ring thread answers between rings, so a reply can wait for
//! a ring in progress.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::{Args, Context};
use crate::pipeline::control::{ControlError, EnrollFrom, List};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A control request waits this long for the ring thread (an enrollment embeds an image).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// `name`, `list` (`known`, default, or `blocked`), and exactly one of `jpeg` (base64) or
/// `ring` (a ring whose frames were kept: its id, or its sequence number).
#[derive(Debug)]
pub struct Enroll {
    name: String,
    list: List,
    from: Source,
}

/// Where an enrollment's face comes from, as the request names it.
#[derive(Debug)]
enum Source {
    Jpeg(Vec<u8>),
    Ring(RingRef),
}

/// A ring as a request names it: its id (string) or its sequence number (what `status`
/// and the ring events show as `seq`).
#[derive(Debug)]
enum RingRef {
    Id(String),
    Seq(u64),
}

/// `name`.
#[derive(Debug)]
pub struct Remove {
    name: String,
}

/// No arguments.
#[derive(Debug)]
pub struct ListPeople;

/// `ring` (id or sequence number) and `correct` (true when the ring's result was right).
#[derive(Debug)]
pub struct Feedback {
    ring: RingRef,
    correct: bool,
}

/// No arguments.
#[derive(Debug)]
pub struct Export;

/// `file`: a gallery file from `face/export`, base64.
#[derive(Debug)]
pub struct Import {
    file: Vec<u8>,
}

/// Waits for the pipeline owner's answer.
async fn call<T>(request: impl std::future::Future<Output = Result<T, ControlError>>) -> Result<T, String> {
    tokio::time::timeout(ANSWER_TIMEOUT, request)
        .await
        .map_err(|_| format!("the face pipeline did not answer within {} s", ANSWER_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())
}

/// The answer as the response's `result`.
async fn answer<T: serde::Serialize>(request: impl std::future::Future<Output = Result<T, ControlError>>) -> Result<Value, String> {
    serde_json::to_value(call(request).await?).map_err(|e| e.to_string())
}

impl RingRef {
    fn parse(args: &Args, key: &str) -> Result<Option<RingRef>, String> {
        match args.0.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|&seq| seq > 0)
                .map(|seq| Some(RingRef::Seq(seq)))
                .ok_or_else(|| format!("bad arguments: `{key}` must be a ring id or a ring sequence number (a whole number from 1)")),
            Some(_) => Ok(Some(RingRef::Id(args.string(key)?.to_string()))),
        }
    }

    /// The ring's id.
    async fn resolve(self, ctx: &Context) -> Result<String, String> {
        match self {
            RingRef::Id(id) => Ok(id),
            RingRef::Seq(seq) => {
                let store = ctx.view.store.clone();
                let ring = tokio::task::spawn_blocking(move || store.ring(seq)).await.map_err(|e| format!("reading ring #{seq}: {e}"))?;
                ring.map(|r| r.id).ok_or_else(|| format!("no stored ring #{seq} (old rings are pruned, see store.max_rings)"))
            }
        }
    }
}

impl Enroll {
    pub(super) fn parse(args: Args) -> Result<Enroll, String> {
        args.only(&["name", "list", "jpeg", "ring"])?;
        let name = args.string("name")?.to_string();
        let list = match args.optional_string("list")? {
            None | Some("known") => List::Known,
            Some("blocked") => List::Blocked,
            Some(other) => return Err(format!("bad arguments: `list` must be \"known\" or \"blocked\", not {other:?}")),
        };
        let from = match (args.optional_string("jpeg")?, RingRef::parse(&args, "ring")?) {
            (Some(b64), None) => Source::Jpeg(BASE64.decode(b64).map_err(|e| format!("bad arguments: `jpeg` is not base64: {e}"))?),
            (None, Some(ring)) => Source::Ring(ring),
            _ => return Err("bad arguments: give exactly one of `jpeg` (base64 JPEG) or `ring` (a ring id or sequence number)".into()),
        };
        Ok(Enroll { name, list, from })
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        let from = match self.from {
            Source::Jpeg(jpeg) => EnrollFrom::Jpegs(vec![jpeg]),
            Source::Ring(ring) => EnrollFrom::Ring(ring.resolve(ctx).await?),
        };
        answer(ctx.faces.enroll(self.name, self.list, from)).await
    }
}

impl Remove {
    pub(super) fn parse(args: Args) -> Result<Remove, String> {
        args.only(&["name"])?;
        Ok(Remove { name: args.string("name")?.to_string() })
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        answer(ctx.faces.remove(self.name)).await
    }
}

impl ListPeople {
    pub(super) fn parse(args: Args) -> Result<ListPeople, String> {
        args.only(&[])?;
        Ok(ListPeople)
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        answer(ctx.faces.list()).await.map(|people| serde_json::json!({ "people": people }))
    }
}

impl Feedback {
    pub(super) fn parse(args: Args) -> Result<Feedback, String> {
        args.only(&["ring", "correct"])?;
        let ring = RingRef::parse(&args, "ring")?.ok_or("bad arguments: missing `ring`")?;
        let correct = args.boolean("correct")?;
        Ok(Feedback { ring, correct })
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        let ring = self.ring.resolve(ctx).await?;
        answer(ctx.faces.feedback(ring, self.correct)).await
    }
}

impl Export {
    pub(super) fn parse(args: Args) -> Result<Export, String> {
        args.only(&[])?;
        Ok(Export)
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        let exported = call(ctx.faces.export()).await?;
        Ok(serde_json::json!({
            "people": exported.people,
            "bytes": exported.file.len(),
            "file": BASE64.encode(&exported.file),
        }))
    }
}

impl Import {
    pub(super) fn parse(args: Args) -> Result<Import, String> {
        args.only(&["file"])?;
        let file = BASE64.decode(args.string("file")?).map_err(|e| format!("bad arguments: `file` is not base64: {e}"))?;
        Ok(Import { file })
    }

    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        answer(ctx.faces.import(self.file)).await
    }
}
