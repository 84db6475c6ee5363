//! doorbell-release: build-host tool for update artifacts (never installed on a device).
//!
//! ```text
//! doorbell-release keygen --out PREFIX          PREFIX.key (secret, 0600) + PREFIX.pub
//! doorbell-release sign --key FILE --version V [--target TRIPLE] --binary BIN --zstd BIN.zst --out FILE
//! doorbell-release inspect FILE [--public-key KEY]
//! ```
//! `scripts/sign-release.sh` compresses with the zstd tool and calls `sign`.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use doorbell_artifact::{self as artifact, PublicKey, SecretKey};

fn main() -> ExitCode {
    doorbell_base::die_on_broken_pipe();
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorbell-release: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn need(args: &[String], name: &str) -> anyhow::Result<String> {
    flag(args, name).with_context(|| format!("missing {name}"))
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("keygen") => {
            let prefix = PathBuf::from(need(&args, "--out")?);
            let mut seed = [0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut seed).context("reading /dev/urandom")?;
            let key = SecretKey::from_seed(seed);
            let secret = prefix.with_extension("key");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&secret)
                .with_context(|| format!("creating {} (an existing key is never overwritten)", secret.display()))?;
            std::io::Write::write_all(&mut f, format!("{}\n", key.to_hex()).as_bytes())?;
            std::fs::write(prefix.with_extension("pub"), format!("{}\n", key.public().to_base64()))?;
            println!("secret key: {} (keep it off the devices)", secret.display());
            println!("config:     [update] public_key = \"{}\"   # key id {}", key.public().to_base64(), key.public().id());
            Ok(())
        }
        Some("sign") => {
            let key_file = need(&args, "--key")?;
            let key = SecretKey::from_hex(&std::fs::read_to_string(&key_file).with_context(|| format!("reading {key_file}"))?)
                .map_err(|e| anyhow::anyhow!("{key_file}: {e}"))?;
            let version = need(&args, "--version")?;
            artifact::parse_version(&version).with_context(|| format!("version `{version}` is not MAJOR.MINOR.PATCH"))?;
            let target = flag(&args, "--target").unwrap_or_else(|| artifact::TARGET.to_string());
            let binary = std::fs::read(need(&args, "--binary")?).context("reading --binary")?;
            let payload = std::fs::read(need(&args, "--zstd")?).context("reading --zstd")?;
            let kind = artifact::elf_kind(&binary).context("--binary is not an ELF executable")?;
            if kind != artifact::elf_kind_for(&target) {
                bail!("--binary is {kind}, but --target {target} needs {}", artifact::elf_kind_for(&target));
            }
            let unpacked = artifact::decompress(payload.as_slice(), binary.len() as u64).map_err(|e| anyhow::anyhow!("--zstd: {e}"))?;
            if unpacked != binary {
                bail!("--zstd does not decompress to --binary");
            }
            let (manifest, bytes) = artifact::build(&key, &version, &target, &binary, &payload);
            let out = need(&args, "--out")?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {out}"))?;
            println!("{out}: {} {} ({} -> {} bytes), key {}", manifest.version, manifest.target, manifest.size, bytes.len(), manifest.key_id);
            Ok(())
        }
        Some("inspect") => {
            let path = args.get(1).context("inspect needs a FILE")?;
            let mut f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
            let header = artifact::read_header(&mut f)?;
            println!("{}", String::from_utf8_lossy(&header.manifest_bytes));
            if let Some(hex) = flag(&args, "--public-key") {
                let key = PublicKey::parse(&hex).map_err(|e| anyhow::anyhow!("--public-key {e}"))?;
                artifact::verify_manifest(&header.manifest_bytes, &header.signature, Some(&key))?;
                println!("signature: good (key {})", key.id());
            }
            Ok(())
        }
        _ => bail!("usage: doorbell-release keygen --out PREFIX | sign --key FILE --version V [--target T] --binary BIN --zstd BIN.zst --out FILE | inspect FILE [--public-key KEY]"),
    }
}
