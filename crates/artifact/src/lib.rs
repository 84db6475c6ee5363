//! The update artifact: a signed manifest plus the zstd-compressed agent binary, and every
//! check that decides whether a device may install it.
//!
//! ```text
//! "DBAGENT1" | manifest length (u32 LE) | manifest JSON | ed25519 signature (64) | zstd payload
//! ```
//!
//! The signature covers `SIGNING_CONTEXT || manifest JSON`; the manifest pins the payload
//! (`compressed_sha256`, `compressed_size`) and the binary it decompresses to (`sha256`,
//! `size`). So nothing unsigned is ever decompressed, and the decompressed bytes are checked
//! again. This module is shared by the agent (staging), `doorbell-slotctl` (re-verifying
//! before it installs: it never trusts the agent) and `doorbell-release` (signing).
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::cmp::Ordering;
use std::fmt;
use std::io::Read;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// First bytes of every artifact.
pub const MAGIC: &[u8; 8] = b"DBAGENT1";
/// Domain separation: a signature over a manifest is never valid for anything else.
pub const SIGNING_CONTEXT: &[u8] = b"doorbell-agent update manifest v1\n";
/// Largest manifest accepted (it is a few hundred bytes).
pub const MAX_MANIFEST: usize = 4096;
/// The only manifest format this build understands.
pub const MANIFEST_FORMAT: u32 = 1;
/// The target triple this binary was built for; artifacts must name the same one.
pub const TARGET: &str = env!("DOORBELL_TARGET");
/// Size of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The signed description of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format (1).
    pub format: u32,
    /// Agent version, `MAJOR.MINOR.PATCH[-pre]`.
    pub version: String,
    /// Rust target triple the binary was built for.
    pub target: String,
    /// sha256 (hex) of the decompressed binary.
    pub sha256: String,
    /// Size in bytes of the decompressed binary.
    pub size: u64,
    /// sha256 (hex) of the zstd payload as shipped.
    pub compressed_sha256: String,
    /// Size in bytes of the zstd payload as shipped.
    pub compressed_size: u64,
    /// Id of the signing key (`PublicKey::id`), to tell "wrong key" from "bad signature".
    pub key_id: String,
}

/// Why an artifact is refused. Every message says what was wrong; nothing has changed on
/// the device when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The device has no key to check signatures with.
    #[error("no update public key is configured (update.public_key): every update is refused")]
    NoKey,
    /// Not in the artifact format at all.
    #[error("not a doorbell-agent update artifact: {0}")]
    NotAnArtifact(String),
    /// The signature field is empty.
    #[error("artifact is not signed")]
    Unsigned,
    /// Signed by a key this device does not trust.
    #[error("signed with key {signed_by}, but this device trusts only key {trusted}")]
    WrongKey {
        /// Key id named by the manifest.
        signed_by: String,
        /// Key id of the configured key.
        trusted: String,
    },
    /// The signature does not match the manifest.
    #[error("bad signature: the manifest was altered or the signature is corrupt")]
    BadSignature,
    /// The manifest cannot be read.
    #[error("bad manifest: {0}")]
    BadManifest(String),
    /// Built for another device.
    #[error("built for {artifact}, this device runs {device}")]
    WrongTarget {
        /// Target named by the manifest.
        artifact: String,
        /// This build's target.
        device: String,
    },
    /// Fewer bytes than the manifest promises.
    #[error("truncated download: {got} of {expected} bytes")]
    Truncated {
        /// Bytes present.
        got: u64,
        /// Bytes promised.
        expected: u64,
    },
    /// A size differs from the manifest.
    #[error("{what} size mismatch: manifest says {expected} bytes, got {got}")]
    SizeMismatch {
        /// Which part (`payload`, `binary`).
        what: &'static str,
        /// Manifest value.
        expected: u64,
        /// Actual value.
        got: u64,
    },
    /// A hash differs from the manifest.
    #[error("{what} sha256 mismatch: manifest says {expected}, got {got}")]
    HashMismatch {
        /// Which part (`payload`, `binary`).
        what: &'static str,
        /// Manifest value.
        expected: String,
        /// Actual value.
        got: String,
    },
    /// The payload does not decompress.
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    /// The binary is not an ELF executable for this device.
    #[error("binary is {found}, this device needs {needed}")]
    WrongArch {
        /// What the ELF header says.
        found: String,
        /// What this device runs.
        needed: String,
    },
    /// Bigger than the configured limit.
    #[error("binary of {size} bytes exceeds the limit of {max} bytes (update.max_size_mib)")]
    TooLarge {
        /// Binary size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// Not enough free space where it would be written.
    #[error("not enough free space in {path}: {need} bytes needed, {free} free")]
    NoSpace {
        /// Directory checked.
        path: String,
        /// Bytes needed.
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// Older than the committed version.
    #[error("version {version} is lower than the committed {committed} (use --force to downgrade)")]
    Downgrade {
        /// Artifact version.
        version: String,
        /// Committed version.
        committed: String,
    },
    /// The same version is already committed.
    #[error("version {version} is already installed and committed (use --force to reinstall)")]
    AlreadyInstalled {
        /// Artifact version.
        version: String,
    },
    /// This very binary failed a trial on this device before.
    #[error("version {version} (sha256 {sha256}) failed its trial on this device before (use --force to retry)")]
    KnownBad {
        /// Artifact version.
        version: String,
        /// Binary hash.
        sha256: String,
    },
    /// A trial is in progress.
    #[error("an update is already on trial ({version} in slot {slot}); wait for its commit or rollback")]
    TrialRunning {
        /// Version on trial.
        version: String,
        /// Its slot.
        slot: String,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
}

impl Refusal {
    /// A stable one-word code for metrics, history and fleet replies.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoKey => "no_key",
            Refusal::NotAnArtifact(_) => "not_an_artifact",
            Refusal::Unsigned => "unsigned",
            Refusal::WrongKey { .. } => "wrong_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::BadManifest(_) => "bad_manifest",
            Refusal::WrongTarget { .. } => "wrong_target",
            Refusal::Truncated { .. } => "truncated",
            Refusal::SizeMismatch { .. } => "size_mismatch",
            Refusal::HashMismatch { .. } => "hash_mismatch",
            Refusal::Decompress(_) => "decompress",
            Refusal::WrongArch { .. } => "wrong_arch",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::NoSpace { .. } => "no_space",
            Refusal::Downgrade { .. } => "downgrade",
            Refusal::AlreadyInstalled { .. } => "already_installed",
            Refusal::KnownBad { .. } => "known_bad",
            Refusal::TrialRunning { .. } => "trial_running",
            Refusal::Io(_) => "io",
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl fmt::Display, e: std::io::Error) -> Refusal {
        Refusal::Io(format!("{context}: {e}"))
    }
}

/// An ed25519 public key that update manifests must be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `update.public_key`: the 32-byte ed25519 key in base64 (like `mqtt.command_key`)
    /// or as 64 hex digits.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        use base64::Engine;
        let text = text.trim();
        let bytes = if text.len() == 64 { hex_decode(text) } else { base64::engine::general_purpose::STANDARD.decode(text).ok() };
        let bytes: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
            "must be an ed25519 public key: 32 bytes in base64, or 64 hex digits (see `doorbell-release keygen`)".to_string()
        })?;
        VerifyingKey::from_bytes(&bytes).map(PublicKey).map_err(|_| "is not a valid ed25519 public key".to_string())
    }

    /// The base64 form, as written into the config.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0.as_bytes())
    }

    /// Short id (first 8 bytes of the key's sha256, hex) named in manifests and errors.
    pub fn id(&self) -> String {
        hex(Sha256::digest(self.0.as_bytes()).get(..8).unwrap_or_default())
    }
}

/// A signing key (build host only; `doorbell-release`).
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from 32 random bytes.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// Parses the 64-hex-digit secret key file content.
    pub fn from_hex(text: &str) -> Result<SecretKey, String> {
        let seed: [u8; 32] =
            hex_decode(text.trim()).and_then(|b| b.try_into().ok()).ok_or_else(|| "a secret key is 64 hex digits".to_string())?;
        Ok(SecretKey::from_seed(seed))
    }

    /// The hex form of the secret seed.
    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs manifest bytes (with the signing context).
    pub fn sign(&self, manifest: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(&signed_message(manifest)).to_bytes()
    }
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(manifest);
    m
}

/// The part of an artifact before its payload.
#[derive(Debug, Clone)]
pub struct Header {
    /// The manifest exactly as signed.
    pub manifest_bytes: Vec<u8>,
    /// The signature over it.
    pub signature: [u8; SIGNATURE_LEN],
    /// Where the payload starts in the artifact.
    pub payload_offset: u64,
}

/// Reads the header (magic, manifest, signature) from the start of an artifact.
pub fn read_header(r: &mut impl Read) -> Result<Header, Refusal> {
    let mut magic = [0u8; 8];
    read_exact_or(r, &mut magic, "no artifact header (is this a bare binary or an unsigned file?)")?;
    if &magic != MAGIC {
        return Err(Refusal::NotAnArtifact("no artifact header (is this a bare binary or an unsigned file?)".into()));
    }
    let mut len = [0u8; 4];
    read_exact_or(r, &mut len, "header cut short")?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_MANIFEST {
        return Err(Refusal::NotAnArtifact(format!("manifest length {len} out of range 1..={MAX_MANIFEST}")));
    }
    let mut manifest_bytes = vec![0u8; len];
    read_exact_or(r, &mut manifest_bytes, "manifest cut short")?;
    let mut signature = [0u8; SIGNATURE_LEN];
    read_exact_or(r, &mut signature, "signature cut short")?;
    Ok(Header { manifest_bytes, signature, payload_offset: (8 + 4 + len + SIGNATURE_LEN) as u64 })
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), Refusal> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Refusal::NotAnArtifact(what.into()),
        _ => Refusal::io("reading the artifact", e),
    })
}

/// Writes the header of an artifact (the payload follows).
pub fn header_bytes(manifest: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 + manifest.len() + SIGNATURE_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(manifest);
    out.extend_from_slice(signature);
    out
}

/// Checks the signature and the key, then parses the manifest. Nothing else in an artifact
/// is looked at before this passes.
pub fn verify_manifest(manifest_bytes: &[u8], signature: &[u8; SIGNATURE_LEN], key: Option<&PublicKey>) -> Result<Manifest, Refusal> {
    let key = key.ok_or(Refusal::NoKey)?;
    if signature.iter().all(|&b| b == 0) {
        return Err(Refusal::Unsigned);
    }
    // The key id is read before the signature is checked only to name the right error;
    // nothing from an unverified manifest is used beyond that.
    let named = serde_json::from_slice::<serde_json::Value>(manifest_bytes)
        .ok()
        .and_then(|v| v.get("key_id").and_then(|k| k.as_str()).map(String::from));
    if let Some(named) = named.filter(|n| *n != key.id()) {
        return Err(Refusal::WrongKey { signed_by: named, trusted: key.id() });
    }
    key.0.verify(&signed_message(manifest_bytes), &Signature::from_bytes(signature)).map_err(|_| Refusal::BadSignature)?;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes).map_err(|e| Refusal::BadManifest(e.to_string()))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(Refusal::BadManifest(format!("format {} (this agent reads format {MANIFEST_FORMAT})", manifest.format)));
    }
    parse_version(&manifest.version)
        .ok_or_else(|| Refusal::BadManifest(format!("version `{}` is not MAJOR.MINOR.PATCH", manifest.version)))?;
    if manifest.target != TARGET {
        return Err(Refusal::WrongTarget { artifact: manifest.target.clone(), device: TARGET.into() });
    }
    Ok(manifest)
}

/// Checks a binary (its first bytes) is an ELF executable for this device's architecture.
pub fn check_elf(head: &[u8]) -> Result<(), Refusal> {
    let needed = elf_kind_for(TARGET);
    let found = elf_kind(head).ok_or_else(|| Refusal::WrongArch { found: "not an ELF file".into(), needed: needed.to_string() })?;
    if found != needed {
        return Err(Refusal::WrongArch { found: found.to_string(), needed: needed.to_string() });
    }
    Ok(())
}

/// What an ELF header says about the machine a binary runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfKind {
    /// 32 or 64.
    pub bits: u8,
    /// e_machine.
    pub machine: u16,
    /// ARM hard-float ABI flag (armv7 gnueabihf); false elsewhere.
    pub hard_float: bool,
}

impl fmt::Display for ElfKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.machine {
            3 => "i386",
            40 => "arm",
            62 => "x86_64",
            183 => "aarch64",
            243 => "riscv",
            m => return write!(f, "ELF{} machine {m}", self.bits),
        };
        write!(f, "ELF{} {name}{}", self.bits, if self.hard_float { " hard-float" } else { "" })
    }
}

const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;

/// Reads class, machine and ARM float ABI from an ELF header (little-endian only: every
/// Raspberry Pi target is).
pub fn elf_kind(head: &[u8]) -> Option<ElfKind> {
    let bytes = |at: usize, n: usize| head.get(at..at + n);
    if head.len() < 52 || !head.starts_with(b"\x7fELF") || head.get(5) != Some(&1) {
        return None;
    }
    let bits = match head.get(4)? {
        1 => 32,
        2 => 64,
        _ => return None,
    };
    let machine = u16::from_le_bytes(bytes(18, 2)?.try_into().ok()?);
    // e_flags sits at 36 (ELF32) or 48 (ELF64).
    let flags_at = if bits == 32 { 36 } else { 48 };
    let flags = u32::from_le_bytes(bytes(flags_at, 4)?.try_into().ok()?);
    Some(ElfKind { bits, machine, hard_float: machine == 40 && flags & EF_ARM_ABI_FLOAT_HARD != 0 })
}

/// The ELF kind a target triple's binaries have.
pub fn elf_kind_for(target: &str) -> ElfKind {
    let arch = target.split('-').next().unwrap_or("");
    let (bits, machine) = match arch {
        "x86_64" => (64, 62),
        "aarch64" => (64, 183),
        a if a.starts_with("arm") || a.starts_with("thumb") => (32, 40),
        "i686" | "i586" => (32, 3),
        "riscv64gc" => (64, 243),
        _ => (0, 0),
    };
    ElfKind { bits, machine, hard_float: machine == 40 && target.ends_with("hf") }
}

/// Decompresses a zstd payload, stopping one byte past `max` so a lying payload cannot fill
/// the disk.
pub fn decompress(payload: impl Read, max: u64) -> Result<Vec<u8>, Refusal> {
    let decoder = ruzstd::StreamingDecoder::new(payload).map_err(|e| Refusal::Decompress(e.to_string()))?;
    let mut out = Vec::new();
    decoder.take(max + 1).read_to_end(&mut out).map_err(|e| Refusal::Decompress(e.to_string()))?;
    Ok(out)
}

/// Checks decompressed bytes against the manifest: size, sha256, ELF architecture.
pub fn check_binary(manifest: &Manifest, binary: &[u8]) -> Result<(), Refusal> {
    if binary.len() as u64 != manifest.size {
        return Err(Refusal::SizeMismatch { what: "binary", expected: manifest.size, got: binary.len() as u64 });
    }
    let got = sha256_hex(binary);
    if !got.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(Refusal::HashMismatch { what: "binary", expected: manifest.sha256.clone(), got });
    }
    check_elf(binary)
}

/// sha256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// Parses `MAJOR.MINOR.PATCH[-pre][+build]`.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64, Option<&str>)> {
    let v = v.split('+').next()?;
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) if !p.is_empty() => (c, Some(p)),
        Some(_) => return None,
        None => (v, None),
    };
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let out = (parts.next()??, parts.next()??, parts.next()??, pre);
    parts.next().is_none().then_some(out)
}

/// Orders two versions (semver precedence: a pre-release sorts before its release).
/// Unparseable versions sort lowest.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (parse_version(a), parse_version(b)) {
        (Some(x), Some(y)) => (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2)).then(match (x.3, y.3) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(p), Some(q)) => compare_pre(p, q),
        }),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    }
}

/// Orders two pre-release tags by semver precedence: dot-separated identifiers in turn,
/// numeric ones by value and below alphanumeric ones, alphanumeric ones in ASCII order, and
/// a tag that is a prefix of the other first (`rc.2` < `rc.10`, `alpha` < `alpha.1`).
fn compare_pre(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        let order = match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => match (p.parse::<u64>(), q.parse::<u64>()) {
                (Ok(m), Ok(n)) => m.cmp(&n),
                (Ok(_), Err(_)) => Ordering::Less,
                (Err(_), Ok(_)) => Ordering::Greater,
                (Err(_), Err(_)) => p.cmp(q),
            },
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// Builds a complete signed artifact (used by `doorbell-release` and the tests).
pub fn build(key: &SecretKey, version: &str, target: &str, binary: &[u8], payload: &[u8]) -> (Manifest, Vec<u8>) {
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        version: version.into(),
        target: target.into(),
        sha256: sha256_hex(binary),
        size: binary.len() as u64,
        compressed_sha256: sha256_hex(payload),
        compressed_size: payload.len() as u64,
        key_id: key.public().id(),
    };
    // Serializing a plain struct to JSON cannot fail.
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let mut out = header_bytes(&bytes, &key.sign(&bytes));
    out.extend_from_slice(payload);
    (manifest, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(bits: u8, machine: u16, flags: u32) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = if bits == 32 { 1 } else { 2 };
        h[5] = 1;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        let at = if bits == 32 { 36 } else { 48 };
        h[at..at + 4].copy_from_slice(&flags.to_le_bytes());
        h
    }

    #[test]
    fn elf_kinds_of_the_pi_targets() {
        assert_eq!(elf_kind(&elf(64, 183, 0)), Some(elf_kind_for("aarch64-unknown-linux-gnu")));
        assert_eq!(elf_kind(&elf(32, 40, 0x0500_0400)), Some(elf_kind_for("armv7-unknown-linux-gnueabihf")));
        assert_ne!(elf_kind(&elf(32, 40, 0x0500_0000)), Some(elf_kind_for("armv7-unknown-linux-gnueabihf")), "soft-float");
        assert_eq!(elf_kind(&elf(64, 62, 0)), Some(elf_kind_for("x86_64-unknown-linux-gnu")));
        assert_eq!(elf_kind(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn versions_order_like_semver() {
        assert_eq!(compare_versions("0.10.0", "0.9.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0.0-rc.1", "1.0.0"), Ordering::Less);
        assert_eq!(compare_versions("1.0.0+build5", "1.0.0"), Ordering::Equal);
        // Pre-releases by semver precedence, not lexically.
        assert_eq!(compare_versions("1.0.0-rc.10", "1.0.0-rc.2"), Ordering::Greater);
        let ordered =
            ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"];
        for pair in ordered.windows(2) {
            assert_eq!(compare_versions(pair[0], pair[1]), Ordering::Less, "{} < {}", pair[0], pair[1]);
            assert_eq!(compare_versions(pair[1], pair[0]), Ordering::Greater, "{} > {}", pair[1], pair[0]);
        }
        assert!(parse_version("1.0").is_none() && parse_version("1.0.0.0").is_none() && parse_version("1.0.0-").is_none());
    }

    #[test]
    fn signature_key_and_tampering() {
        let key = SecretKey::from_seed([7; 32]);
        let other = SecretKey::from_seed([8; 32]);
        let binary = elf(64, 62, 0);
        let (_, art) = build(&key, "0.2.0", TARGET, &binary, b"payload");
        let h = read_header(&mut art.as_slice()).unwrap();
        let m = verify_manifest(&h.manifest_bytes, &h.signature, Some(&key.public())).unwrap();
        assert_eq!(m.version, "0.2.0");
        assert_eq!(verify_manifest(&h.manifest_bytes, &h.signature, None), Err(Refusal::NoKey));
        assert!(matches!(verify_manifest(&h.manifest_bytes, &h.signature, Some(&other.public())), Err(Refusal::WrongKey { .. })));
        assert_eq!(verify_manifest(&h.manifest_bytes, &[0; 64], Some(&key.public())), Err(Refusal::Unsigned));
        let tampered = String::from_utf8(h.manifest_bytes.clone()).unwrap().replace("0.2.0", "9.2.0");
        assert_eq!(verify_manifest(tampered.as_bytes(), &h.signature, Some(&key.public())), Err(Refusal::BadSignature));
        let (_, foreign) = build(&key, "0.2.0", "aarch64-unknown-linux-gnu", &binary, b"p");
        let h = read_header(&mut foreign.as_slice()).unwrap();
        if TARGET != "aarch64-unknown-linux-gnu" {
            assert!(matches!(verify_manifest(&h.manifest_bytes, &h.signature, Some(&key.public())), Err(Refusal::WrongTarget { .. })));
        }
        assert!(matches!(read_header(&mut &b"\x7fELF\x02\x01"[..]), Err(Refusal::NotAnArtifact(_))));
    }

    #[test]
    fn keys_roundtrip_through_hex() {
        let key = SecretKey::from_seed([3; 32]);
        assert_eq!(SecretKey::from_hex(&key.to_hex()).unwrap().public(), key.public());
        assert_eq!(PublicKey::parse(&key.public().to_base64()).unwrap(), key.public());
        assert_eq!(PublicKey::parse(&hex(key.public().0.as_bytes())).unwrap(), key.public());
        assert!(PublicKey::parse("abc").is_err());
        // y = 2 is not on the curve.
        assert!(PublicKey::parse(&format!("02{}", "00".repeat(31))).is_err());
    }
}
