//! Download → verify → stage, in the agent's own state directory and as the unprivileged
//! agent user. Every refusal happens before anything the device runs is touched; the staged
//! result appears atomically (`staging.tmp` renamed to `staged`) and is then installed by
//! `doorbell-slotctl pre-start` at the agent's next start, after it verified it all again.
//!
//! This is the API the fleet `update` command (`crate::cmd`) calls as well: progress arrives as
//! typed `Progress` events, the result is a typed `Staged` or `Refusal`.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fetch;
use doorbell_artifact::{self as artifact, Manifest, PublicKey, Refusal};
use doorbell_base::durable;
use doorbell_slotctl::ctl::{check_version, staged, Requests, StagedOptions};
use doorbell_slotctl::{Layout, State};

/// Where an artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// An `http://` URL.
    Url(String),
}

impl Source {
    /// A URL when it looks like one, else a path.
    pub fn parse(s: &str) -> Source {
        if s.contains("://") {
            Source::Url(s.to_string())
        } else {
            Source::File(PathBuf::from(s))
        }
    }
}

/// Progress of a staging, for a CLI bar or fleet progress replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes downloaded so far, of the total when the server said it.
    Downloading {
        /// Bytes so far.
        got: u64,
        /// Content-Length, if any.
        total: Option<u64>,
    },
    /// Checking signature, key, target, version, sizes.
    Verifying,
    /// Decompressing and checking the binary.
    Unpacking,
    /// Writing the staged files.
    Staging,
}

/// What staging needs to know about the device.
#[derive(Debug, Clone)]
pub struct Context {
    /// The agent's data directory (its `update/` request dir is inside).
    pub data_dir: PathBuf,
    /// Slot layout (state file for the committed version and a running trial).
    pub layout: Layout,
    /// The trusted signing key.
    pub key: Option<PublicKey>,
    /// Largest binary accepted.
    pub max_size: u64,
    /// Whole-download time limit.
    pub download_timeout: Duration,
    /// CA certificates of an `https://` artifact server (absent: the system's roots).
    pub ca_file: Option<PathBuf>,
}

impl Context {
    /// The device's context from the agent's configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Context, String> {
        let key = cfg.update.public_key.as_deref().map(PublicKey::parse).transpose().map_err(|e| format!("update.public_key {e}"))?;
        Ok(Context {
            data_dir: cfg.data_dir.clone(),
            layout: Layout::from_config(&cfg.update),
            key,
            max_size: cfg.update.max_size(),
            download_timeout: cfg.update.download_timeout,
            ca_file: cfg.update.ca_file.clone(),
        })
    }
}

/// A verified artifact, staged for slotctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// Its manifest.
    pub manifest: Manifest,
    /// The committed version it will replace.
    pub from_version: String,
    /// The staged directory.
    pub dir: PathBuf,
}

/// Space kept free beyond what is written.
const SPACE_MARGIN: u64 = 1024 * 1024;

/// Downloads (if needed), verifies and stages an artifact. Nothing is left behind on a
/// refusal but the (removed) temporary files.
pub fn stage(ctx: &Context, source: &Source, options: &StagedOptions, progress: &mut dyn FnMut(Progress)) -> Result<Staged, Refusal> {
    let force = options.force;
    let state = State::load(&ctx.layout.state_file()).map_err(|e| {
        Refusal::Io(format!(
            "this device has no usable A/B slot state ({}: {e}); install with the slot layout and start doorbell-agent.service once",
            ctx.layout.state_file().display()
        ))
    })?;
    if let Some(t) = &state.trial {
        return Err(Refusal::TrialRunning { version: t.version.clone(), slot: t.slot.to_string() });
    }
    let requests = Requests::new(&ctx.data_dir);
    if let Ok(m) = durable::read_limited(&requests.staged().join(staged::MANIFEST), artifact::MAX_MANIFEST as u64) {
        let version = serde_json::from_slice::<Manifest>(&m).map(|m| m.version).unwrap_or_else(|_| "?".into());
        return Err(Refusal::TrialRunning {
            version: format!("{version} (staged, waiting for the agent to restart)"),
            slot: state.committed.other().to_string(),
        });
    }
    fs::create_dir_all(&requests.dir).map_err(|e| Refusal::io(requests.dir.display(), e))?;
    let download = requests.dir.join("download.part");
    let tmp = requests.dir.join("staging.tmp");
    let result = (|| {
        let _ = fs::remove_dir_all(&tmp);
        let path = match source {
            Source::File(p) => p.clone(),
            Source::Url(url) => {
                let max = ctx.max_size + artifact::MAX_MANIFEST as u64 + 1024;
                let free = durable::free_space(&requests.dir).map_err(|e| Refusal::io(requests.dir.display(), e))?;
                let max = max.min(free.saturating_sub(SPACE_MARGIN));
                fetch::download(url, &download, max, ctx.download_timeout, ctx.ca_file.as_deref(), &mut |got, total| {
                    progress(Progress::Downloading { got, total })
                })?;
                download.clone()
            }
        };
        progress(Progress::Verifying);
        let (manifest, header, payload) = verify_file(ctx, &state, &path, force)?;
        progress(Progress::Unpacking);
        let binary = artifact::decompress(payload.as_slice(), manifest.size)?;
        drop(payload);
        artifact::check_binary(&manifest, &binary)?;
        progress(Progress::Staging);
        write_staged(ctx, &tmp, &manifest, &header, &binary, options)?;
        durable::rename(&tmp, &requests.staged()).map_err(|e| Refusal::io("staging", e))?;
        Ok(Staged { manifest, from_version: state.committed_version(), dir: requests.staged() })
    })();
    let _ = fs::remove_file(&download);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Every check that needs no decompression, in the order that gives the clearest reason:
/// header, signature and key, target, version rules, sizes, payload hash, free space.
fn verify_file(ctx: &Context, state: &State, path: &Path, force: bool) -> Result<(Manifest, artifact::Header, Vec<u8>), Refusal> {
    let mut file = fs::File::open(path).map_err(|e| Refusal::io(path.display(), e))?;
    let len = file.metadata().map_err(|e| Refusal::io(path.display(), e))?.len();
    let header = artifact::read_header(&mut file)?;
    let manifest = artifact::verify_manifest(&header.manifest_bytes, &header.signature, ctx.key.as_ref())?;
    check_version(state, &manifest, force)?;
    if manifest.size > ctx.max_size {
        return Err(Refusal::TooLarge { size: manifest.size, max: ctx.max_size });
    }
    let payload_len = len - header.payload_offset;
    if payload_len < manifest.compressed_size {
        return Err(Refusal::Truncated { got: payload_len, expected: manifest.compressed_size });
    }
    if payload_len > manifest.compressed_size {
        return Err(Refusal::SizeMismatch { what: "payload", expected: manifest.compressed_size, got: payload_len });
    }
    let requests = Requests::new(&ctx.data_dir);
    let free = durable::free_space(&requests.dir).map_err(|e| Refusal::io(requests.dir.display(), e))?;
    let need = manifest.size + SPACE_MARGIN;
    if free < need {
        return Err(Refusal::NoSpace { path: requests.dir.display().to_string(), need, free });
    }
    file.seek(SeekFrom::Start(header.payload_offset)).map_err(|e| Refusal::io(path.display(), e))?;
    let mut payload = Vec::with_capacity(payload_len as usize);
    file.take(payload_len).read_to_end(&mut payload).map_err(|e| Refusal::io(path.display(), e))?;
    let got = artifact::sha256_hex(&payload);
    if got != manifest.compressed_sha256 {
        return Err(Refusal::HashMismatch { what: "payload", expected: manifest.compressed_sha256.clone(), got });
    }
    Ok((manifest, header, payload))
}

fn write_staged(
    ctx: &Context,
    dir: &Path,
    manifest: &Manifest,
    header: &artifact::Header,
    binary: &[u8],
    options: &StagedOptions,
) -> Result<(), Refusal> {
    let io = |e| Refusal::io(format!("writing {}", dir.display()), e);
    fs::create_dir(dir).map_err(io)?;
    durable::write_file(&dir.join(staged::BINARY), binary, 0o640).map_err(io)?;
    durable::write_file(&dir.join(staged::MANIFEST), &header.manifest_bytes, 0o640).map_err(io)?;
    durable::write_file(&dir.join(staged::SIGNATURE), &header.signature, 0o640).map_err(io)?;
    durable::write_file(&dir.join(staged::OPTIONS), &serde_json::to_vec(options).unwrap_or_default(), 0o640).map_err(io)?;
    let files: Vec<PathBuf> = [staged::BINARY, staged::MANIFEST, staged::SIGNATURE, staged::OPTIONS].iter().map(|f| dir.join(f)).collect();
    let mut paths: Vec<&Path> = vec![dir.parent().unwrap_or(dir), dir];
    paths.extend(files.iter().map(PathBuf::as_path));
    hand_to_owner(&ctx.data_dir, &paths).map_err(io)?;
    log::info!("verified {} ({} bytes, sha256 {}), staged in {}", manifest.version, manifest.size, manifest.sha256, dir.display());
    Ok(())
}

/// When root runs `update …`, what it creates in the data directory goes to the
/// directory's owner, so the agent (which runs as that user) can clean up and write its own
/// requests later.
pub fn hand_to_owner(data_dir: &Path, paths: &[&Path]) -> std::io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let owner = fs::metadata(data_dir)?;
    for path in paths {
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))?;
    }
    Ok(())
}
