//! Per-frame cost of the face pipeline with the real models on real photos, single thread:
//! decode, then detect + align + embed (`Vision::frame`), then matching against a gallery
//! of 100 people. Models and photos come from `scripts/fetch-models.sh`
//! (`DOORBELL_MODELS`, default /var/cache/doorbell-agent/models-v1).
//!
//!     cargo bench --bench pipeline
//!
//! `scripts/face-bench.sh` runs this and the end-to-end numbers (ring latency, RSS).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use doorbell_agent::config::FacesConfig;
use doorbell_agent::faces::matcher::{self, Candidate, Thresholds};
use doorbell_agent::pipeline::control::List;
use doorbell_agent::vision::{image, Vision};
use doorbell_agent::worker::protocol::StageTimes;

fn models() -> PathBuf {
    std::env::var_os("DOORBELL_MODELS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/doorbell-agent/models-v1"))
}

fn bench(c: &mut Criterion) {
    let dir = models();
    let cfg = FacesConfig {
        detector_model: dir.join("face_detection_short_range.onnx"),
        embedder_model: dir.join("dlib_face_recognition_resnet_v1.onnx"),
        ..FacesConfig::default()
    };
    let vision = Vision::load(&cfg, 16_000_000).expect("models (run scripts/fetch-models.sh)");
    // A doorbell-like frame: one person, head and shoulders, 640x480-ish.
    let jpeg = std::fs::read(dir.join("testset/stranger/sample3-2.jpg")).expect("test photo");
    let decoded = image::decode(&jpeg, 16_000_000).unwrap();
    println!("frame: {}x{} JPEG, {} bytes", decoded.width, decoded.height, jpeg.len());

    let gallery: Vec<(String, Vec<f32>)> = (0..100)
        .map(|i| {
            let v: Vec<f32> = (0..128).map(|j| ((i * 131 + j * 17) % 97) as f32 - 48.0).collect();
            (format!("person-{i}"), matcher::aggregate(&[v]))
        })
        .collect();
    let people: Vec<Candidate<'_>> = gallery.iter().map(|(n, a)| Candidate { name: n, list: List::Known, aggregate: a }).collect();
    let t = Thresholds { known: cfg.match_threshold, blocked: cfg.block_threshold };

    c.bench_function("decode", |b| b.iter(|| image::decode(&jpeg, 16_000_000).unwrap()));
    c.bench_function("frame: detect+align+embed+match", |b| {
        b.iter(|| {
            let faces = vision.faces(&decoded, &mut StageTimes::default()).unwrap();
            assert_eq!(faces.faces.len(), 1);
            faces.faces.iter().map(|f| matcher::classify(&f.embedding, &people, t)).collect::<Vec<_>>()
        })
    });
    // The labelled set, as the peer (scripts/models/peer.py) is timed on it: per image,
    // decode + detect + align + embed of every face.
    let mut set: Vec<Vec<u8>> = Vec::new();
    for sub in ["person/obama", "person/biden", "stranger", "noface"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("testset").join(sub)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        set.extend(files.iter().map(|f| std::fs::read(f).unwrap()));
    }
    println!("labelled set: {} images", set.len());
    c.bench_function("labelled set, all images (divide by the count for per image)", |b| {
        b.iter(|| set.iter().map(|j| vision.frame(j, &mut StageTimes::default()).unwrap().faces.len()).sum::<usize>())
    });
    let face = vision.frame(&jpeg, &mut StageTimes::default()).unwrap().faces.remove(0);
    c.bench_function("match against 100 people", |b| b.iter(|| matcher::classify(&face.embedding, &people, t)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
