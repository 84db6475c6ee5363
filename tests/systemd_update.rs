//! A/B self-update under a real systemd: `tests/systemd_update.sh` in systemd-nspawn, with
//! the real units, the real `doorbell-slotctl` and agent binaries carrying injected faults.
//!
//! This file builds the artifacts the scenario installs: the test build of the agent,
//! stripped, is slot A's 0.1.0; every other "version" is the same binary with a trailer
//! (`src/fault.rs`) that makes it distinct and, for the fault cases, makes it misbehave.
//! Each is zstd-compressed and signed like a release; the bad artifacts are broken in every
//! way the device must refuse. Needs root and `--features fault-injection` (scripts/test.sh
//! passes it); `DOORBELL_SKIP_SYSTEMD=1` skips it explicitly.
//!
//!     cargo test --features fault-injection --test systemd_update -- --nocapture
#![cfg(feature = "fault-injection")]

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use doorbell_artifact::{self as artifact, Manifest, SecretKey, TARGET};

const DEADLINE: Duration = Duration::from_secs(1200);

fn with_trailer(base: &[u8], line: &str) -> Vec<u8> {
    let mut b = base.to_vec();
    b.extend_from_slice(line.as_bytes());
    b
}

/// An artifact whose manifest is exactly `m` (signed by `key`), with `payload` after it.
fn signed(key: &SecretKey, m: &Manifest, payload: &[u8]) -> Vec<u8> {
    let bytes = serde_json::to_vec(m).unwrap();
    let mut out = artifact::header_bytes(&bytes, &key.sign(&bytes));
    out.extend_from_slice(payload);
    out
}

/// A minimal ELF header for another machine than this one.
fn foreign_elf() -> Vec<u8> {
    let mut h = vec![0u8; 4096];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    let machine: u16 = if TARGET.starts_with("aarch64") { 62 } else { 183 };
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

fn build_artifacts(dir: &Path, base: &[u8]) {
    let key = SecretKey::from_seed([42; 32]);
    let other = SecretKey::from_seed([43; 32]);
    fs::write(dir.join("public_key"), key.public().to_base64()).unwrap();
    let write = |name: &str, bytes: &[u8]| fs::write(dir.join(name), bytes).unwrap();
    let art = |version: &str, binary: &[u8]| artifact::build(&key, version, TARGET, binary, &common::zstd(binary));

    // Good versions (distinct binaries) and faulty ones.
    for (name, version, line) in [
        ("v0.2.0.dbu", "0.2.0", "\nDOORBELL-BUILD:0.2.0\n"),
        ("v0.6.0.dbu", "0.6.0", "\nDOORBELL-BUILD:0.6.0\n"),
        ("v0.7.0.dbu", "0.7.0", "\nDOORBELL-BUILD:0.7.0\n"),
        ("crash.dbu", "0.5.1", "\nDOORBELL-FAULT:crash-at-start\n"),
        ("hang-before-ready.dbu", "0.5.2", "\nDOORBELL-FAULT:hang-before-ready\n"),
        ("hang-after-ready.dbu", "0.5.3", "\nDOORBELL-FAULT:hang-after-ready\n"),
        ("unhealthy.dbu", "0.5.4", "\nDOORBELL-FAULT:unhealthy\n"),
        ("no-commit.dbu", "0.5.5", "\nDOORBELL-FAULT:no-commit\n"),
        ("crash-limit.dbu", "0.5.6", "\nDOORBELL-BUILD:0.5.6\nDOORBELL-FAULT:crash-at-start\n"),
        ("unhealthy-mqtt.dbu", "0.5.7", "\nDOORBELL-BUILD:0.5.7\nDOORBELL-FAULT:unhealthy\n"),
        ("no-broker.dbu", "0.5.8", "\nDOORBELL-BUILD:0.5.8\nDOORBELL-FAULT:no-broker\n"),
        ("bloat.dbu", "0.5.9", "\nDOORBELL-BUILD:0.5.9\nDOORBELL-FAULT:bloat\n"),
    ] {
        write(name, &art(version, &with_trailer(base, line)).1);
    }

    // Bad artifacts: file, the refusal code the CLI must print.
    let good_binary = with_trailer(base, "\nDOORBELL-BUILD:0.9.0\n");
    let payload = common::zstd(&good_binary);
    let (manifest, good) = artifact::build(&key, "0.9.0", TARGET, &good_binary, &payload);
    let header_len = good.len() - payload.len();
    let mut cases = Vec::new();
    let mut case = |name: &str, code: &str, bytes: Vec<u8>| {
        write(name, &bytes);
        cases.push(format!("{name} {code}"));
    };
    let mut unsigned = good.clone();
    unsigned[header_len - 64..header_len].fill(0);
    case("bad-unsigned.dbu", "unsigned", unsigned);
    let tampered = String::from_utf8_lossy(&good[12..header_len - 64]).replace("0.9.0", "9.9.0");
    let mut t = artifact::header_bytes(tampered.as_bytes(), good[header_len - 64..header_len].try_into().unwrap());
    t.extend_from_slice(&payload);
    case("bad-signature.dbu", "bad_signature", t);
    case("bad-wrong-key.dbu", "wrong_key", artifact::build(&other, "0.9.0", TARGET, &good_binary, &payload).1);
    case("bad-truncated.dbu", "truncated", good[..header_len + payload.len() / 2].to_vec());
    let mut longer = good.clone();
    longer.extend_from_slice(b"trailing junk");
    case("bad-payload-size.dbu", "size_mismatch", longer);
    let mut flipped = good.clone();
    let mid = header_len + payload.len() / 2;
    flipped[mid] ^= 0x55;
    case("bad-payload-hash.dbu", "hash_mismatch", flipped);
    let lying = Manifest { sha256: artifact::sha256_hex(b"something else"), ..manifest.clone() };
    case("bad-binary-hash.dbu", "hash_mismatch", signed(&key, &lying, &payload));
    let elf = foreign_elf();
    case("bad-arch.dbu", "wrong_arch", artifact::build(&key, "0.9.0", TARGET, &elf, &common::zstd(&elf)).1);
    let script = b"#!/bin/sh\necho not an agent\n".to_vec();
    case("bad-not-elf.dbu", "wrong_arch", artifact::build(&key, "0.9.0", TARGET, &script, &common::zstd(&script)).1);
    let armv7 = Manifest { target: "armv7-unknown-linux-gnueabihf".into(), ..manifest.clone() };
    case("bad-target.dbu", "wrong_target", signed(&key, &armv7, &payload));
    case("bad-bare-binary.dbu", "not_an_artifact", good_binary.clone());
    case("bad-downgrade.dbu", "downgrade", art("0.0.9", &with_trailer(base, "\nDOORBELL-BUILD:0.0.9\n")).1);
    case("bad-same-version.dbu", "already_installed", art("0.1.0", &with_trailer(base, "\nDOORBELL-BUILD:0.1.0\n")).1);
    write("bad.cases", (cases.join("\n") + "\n").as_bytes());
}

#[test]
fn updates_under_real_systemd() {
    if std::env::var("DOORBELL_SKIP_SYSTEMD").as_deref() == Ok("1") {
        println!("SKIPPED: systemd update test (DOORBELL_SKIP_SYSTEMD=1)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the systemd update test needs root; set DOORBELL_SKIP_SYSTEMD=1 to skip it explicitly");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::Builder::new().prefix("doorbell-update-test.").tempdir().unwrap();
    let (bin, art) = (tmp.path().join("bin"), tmp.path().join("artifacts"));
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&art).unwrap();
    let binaries = [
        ("doorbell-agent", PathBuf::from(common::BIN)),
        ("doorbell-slotctl", common::slotctl_bin()),
        // The operator's tool, run on the host in the container's network namespace.
        ("doorbell-fleet", common::fleet_bin()),
    ];
    for (name, src) in binaries {
        let dst = bin.join(name);
        fs::copy(src, &dst).unwrap();
        assert!(Command::new("strip").arg(&dst).status().expect("strip (binutils)").success());
    }
    let base = fs::read(bin.join("doorbell-agent")).unwrap();
    build_artifacts(&art, &base);
    for d in [tmp.path(), bin.as_path(), art.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for entry in fs::read_dir(&art).unwrap() {
        fs::set_permissions(entry.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
    }

    let mut child = Command::new("bash")
        .arg("-c")
        .arg(r#"exec bash "$0" "$@" 2>&1"#)
        .arg(repo.join("tests/systemd_update.sh"))
        .arg(&bin)
        .arg(&art)
        .current_dir(repo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the scenario");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > DEADLINE {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(30));
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = reader.join().unwrap_or_default();
    println!("{output}");
    assert!(started.elapsed() <= DEADLINE, "scenario did not finish within {DEADLINE:?}");
    assert_eq!(
        status.code(),
        Some(0),
        "systemd update scenario failed; FAIL lines:\n{}",
        output.lines().filter(|l| l.starts_with("FAIL") || l.contains("ERROR")).collect::<Vec<_>>().join("\n")
    );
}
