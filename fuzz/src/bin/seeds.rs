//! Not a fuzz target: writes the seeds that are made rather than copied from the repository
//! (signed artifacts, postcard records, worker frames) into the corpus directories given
//! (default fuzz/corpus). Deterministic: the same build writes the same bytes.
//!
//!     fuzz/target/release/seeds [CORPUS_DIR]

use std::path::{Path, PathBuf};

use doorbell_agent::config::Severity;
use doorbell_agent::store::{self, AlertState, AlertV1, OutboxV1, Record, RingResult, RingV1, StageMs};
use doorbell_agent::update::history::{EntryV1, UpdateRecord};
use doorbell_artifact::{self as artifact, SecretKey, TARGET};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

/// The first 64 bytes of an ELF executable for this build's target.
fn elf_head() -> Vec<u8> {
    let kind = artifact::elf_kind_for(TARGET);
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = if kind.bits == 32 { 1 } else { 2 };
    h[5] = 1;
    h[18..20].copy_from_slice(&kind.machine.to_le_bytes());
    if kind.hard_float {
        h[36..40].copy_from_slice(&0x0500_0400u32.to_le_bytes());
    }
    h
}

fn artifacts(dir: &Path) {
    // The key the harness verifies with (update_artifact.rs), and another one.
    let key = SecretKey::from_seed([7; 32]);
    let other = SecretKey::from_seed([8; 32]);
    let binary = elf_head();
    // The payload is not decompressed by the harness: a few bytes of zstd frame magic do.
    let payload = [0x28, 0xb5, 0x2f, 0xfd, 0, 0x58, 0, 0];
    let (_, bytes) = artifact::build(&key, "1.2.3", TARGET, &binary, &payload);
    write(dir, "signed", &bytes);
    // The manifest alone: the harness signs an input without the magic itself.
    let header = artifact::read_header(&mut bytes.as_slice()).expect("a header just built");
    write(dir, "manifest.json", &header.manifest_bytes);
    let (_, pre) = artifact::build(&key, "2.0.0-rc.10+build.5", TARGET, &binary, &payload);
    write(dir, "signed-prerelease", &pre);
    let (_, foreign) = artifact::build(&other, "1.2.4", TARGET, &binary, &payload);
    write(dir, "other-key", &foreign);
    let (_, arm) = artifact::build(&key, "1.2.5", "armv7-unknown-linux-gnueabihf", &binary, &payload);
    write(dir, "other-target", &arm);
    let unsigned = artifact::header_bytes(b"{\"format\":1}", &[0; artifact::SIGNATURE_LEN]);
    write(dir, "unsigned", &unsigned);
}

fn records(dir: &Path) {
    let ring = RingV1 {
        id: "r-0001".into(),
        seq: 12,
        trigger: "button".into(),
        result: RingResult::Known,
        name: Some("ann".into()),
        confidence: Some(0.93),
        stage_ms: StageMs { capture: 40.0, detect: 12.5, embed: 30.0, matching: 0.1 },
        reason: None,
        ts_ms: 1_800_000_000_000,
    };
    let alert = AlertV1 {
        id: "a-1".into(),
        key: "cpu_high".into(),
        rule: "cpu_high".into(),
        severity: Severity::Major,
        state: AlertState::Acknowledged,
        message: "cpu 93% > 80% for 2m".into(),
        value: Some(93.0),
        threshold: Some(80.0),
        raised_ms: 1_800_000_000_000,
        updated_ms: 1_800_000_060_000,
    };
    let outbox = OutboxV1 {
        topic: "doorbell/door-1/events/ring".into(),
        payload: b"{\"id\":\"r-0001\"}".to_vec(),
        qos: 1,
        retain: false,
        created_ms: 1_800_000_000_000,
        severity: Severity::Warning,
    };
    let entry = EntryV1 {
        outcome: "rolled_back".into(),
        version: "1.2.3".into(),
        from_version: "1.2.2".into(),
        slot: "b".into(),
        reason: "trial: not ready within 60s".into(),
        ts_ms: 1_800_000_000_000,
        trial_ms: Some(60_000),
        decided_by: "slotctl".into(),
        request_id: Some("c7".into()),
    };
    let mut envelopes = vec![
        ("ring", store::encode(&Record::RingV1(ring))),
        ("alert", store::encode(&Record::AlertV1(alert))),
        ("counter", store::encode(&Record::CounterV1(41))),
        ("outbox", store::encode(&Record::OutboxV1(outbox))),
        ("update-entry", store::encode(&UpdateRecord::EntryV1(entry))),
        ("update-imported", store::encode(&UpdateRecord::ImportedV1(9))),
    ];
    #[cfg(feature = "faces")]
    {
        use doorbell_agent::faces::gallery::{FaceRecord, FeedbackV1, GalleryFile, PersonV1, MAGIC};
        use doorbell_agent::pipeline::control::List;
        let person = PersonV1 {
            name: "ann".into(),
            list: List::Known,
            embedder: "dlib-resnet-v1".into(),
            samples: vec![vec![0.6, 0.8, 0.0, 0.0], vec![0.0, 1.0, 0.0, 0.0]],
            enrolled_ms: 1_800_000_000_000,
            updated_ms: 1_800_000_000_000,
        };
        let feedback = FeedbackV1 { ring_id: "r-0001".into(), correct: false, ts_ms: 1_800_000_000_000 };
        let gallery = GalleryFile::V1 {
            magic: MAGIC.into(),
            device_id: "door-1".into(),
            exported_ms: 1_800_000_000_000,
            embedder: "dlib-resnet-v1".into(),
            people: vec![person.clone()],
        };
        envelopes.push(("face-person", store::encode(&FaceRecord::PersonV1(person))));
        envelopes.push(("face-feedback", store::encode(&FaceRecord::FeedbackV1(feedback))));
        envelopes.push(("gallery-file", store::encode(&gallery)));
    }
    for (name, bytes) in envelopes {
        // The harness tries each input as an envelope and as the postcard inside one.
        write(dir, &format!("{name}.env"), &bytes);
        write(dir, &format!("{name}.postcard"), &bytes[5..]);
    }
}

#[cfg(feature = "faces")]
fn frames(dir: &Path, jpeg: &[u8]) {
    use doorbell_agent::worker::protocol::{self, Burst, Face, FrameReport, Reply, Request, StageTimes};
    let mut requests = Vec::new();
    for request in [Request::Ping, Request::Ring { seq: 3, keep_frames: true }, Request::Embed { jpeg: jpeg.to_vec() }] {
        protocol::write(&mut requests, &request).expect("framing a request");
    }
    write(dir, "requests", &requests);
    let face = Face { embedding: vec![0.6, 0.8, 0.0, 0.0], score: 0.9, area: 0.2, sharpness: 150.0, bbox: [10.0, 20.0, 64.0, 80.0] };
    let burst = Burst {
        frames: vec![
            FrameReport { faces: vec![face.clone()], detected: 1, blurred: 0, error: None },
            FrameReport { faces: vec![], detected: 1, blurred: 1, error: Some("capture: timeout".into()) },
        ],
        times: StageTimes { capture_ms: 40.0, decode_ms: 9.0, detect_ms: 12.0, align_ms: 1.0, embed_ms: 30.0 },
        kept: vec![jpeg.to_vec()],
    };
    let mut replies = Vec::new();
    for reply in [
        Reply::Ready { load_ms: 850.0 },
        Reply::Ring(Ok(burst)),
        Reply::Embedded(Ok(FrameReport { faces: vec![face], detected: 1, blurred: 0, error: None })),
        Reply::Pong,
        Reply::Ring(Err("camera gone".into())),
        Reply::Unavailable("model missing".into()),
    ] {
        protocol::write(&mut replies, &reply).expect("framing a reply");
    }
    write(dir, "replies", &replies);
}

fn main() {
    let root = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("fuzz/corpus"));
    artifacts(&root.join("update_artifact"));
    records(&root.join("store_record"));
    #[cfg(feature = "faces")]
    {
        // The smallest JPEG seed, if the JPEG corpus has been made already.
        let jpeg = std::fs::read_dir(root.join("jpeg_frame"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .min_by_key(Vec::len)
            .unwrap_or_default();
        frames(&root.join("worker_frame"), &jpeg);
    }
    println!("seeds written under {}", root.display());
}
