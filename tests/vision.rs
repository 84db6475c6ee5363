//! The real models on the labelled photos of `scripts/fetch-models.sh`'s test set: faces are
//! found where they are and nowhere else, the same person in different photos matches at
//! the default threshold, strangers do not, and bad images are refused with a reason.
//!
//! The models and photos come from the cache the fetch script fills (`DOORBELL_MODELS` or
//! /var/cache/doorbell-agent/models-v1); `scripts/test.sh` runs the script first.
#![cfg(feature = "faces")]

mod common;

use doorbell_agent::config::{Config, FacesConfig};
use doorbell_agent::faces::matcher;
use doorbell_agent::vision::{Vision, VisionError};
use doorbell_agent::worker::protocol::StageTimes;

fn vision() -> Vision {
    let faces = common::faces_config();
    Vision::load(&faces, 16_000_000).unwrap_or_else(|e| panic!("{e} (run scripts/fetch-models.sh)"))
}

/// The single usable face of a labelled photo.
fn descriptor(v: &Vision, path: &std::path::Path) -> Vec<f32> {
    let jpeg = std::fs::read(path).unwrap();
    let faces = v.frame(&jpeg, &mut StageTimes::default()).unwrap().faces;
    assert!(!faces.is_empty(), "no face found in {}", path.display());
    faces.into_iter().max_by(|a, b| a.area.total_cmp(&b.area)).unwrap().embedding
}

#[test]
fn same_person_matches_strangers_do_not_and_empty_scenes_have_no_face() {
    let v = vision();
    let set = common::testset();
    let t = FacesConfig::default().match_threshold;
    let obama: Vec<_> = (1..=3).map(|i| descriptor(&v, &set.join(format!("person/obama/{i}.jpg")))).collect();
    let biden = descriptor(&v, &set.join("person/biden/1.jpg"));
    let strangers: Vec<_> = common::jpegs(&set.join("stranger")).iter().map(|p| descriptor(&v, p)).collect();
    assert_eq!(strangers.len(), 22, "every stranger crop has a face");

    let mut genuine = Vec::new();
    for i in 0..3 {
        for j in i + 1..3 {
            genuine.push(matcher::similarity(&obama[i], &obama[j]));
        }
    }
    let mut impostor: Vec<f32> = obama.iter().map(|o| matcher::similarity(o, &biden)).collect();
    for s in &strangers {
        impostor.push(matcher::similarity(s, &biden));
        impostor.extend(obama.iter().map(|o| matcher::similarity(s, o)));
    }
    let accepted = genuine.iter().filter(|s| **s >= t).count();
    let false_accepts = impostor.iter().filter(|s| **s >= t).count();
    println!("genuine pairs: {genuine:?}");
    println!(
        "at match_threshold {t}: true accepts {accepted}/{} ({:.0} %), false accepts {false_accepts}/{} ({:.1} %), impostor max {:.3}",
        genuine.len(),
        100.0 * accepted as f64 / genuine.len() as f64,
        impostor.len(),
        100.0 * false_accepts as f64 / impostor.len() as f64,
        impostor.iter().cloned().fold(f32::MIN, f32::max)
    );
    assert_eq!(accepted, genuine.len(), "the same person in different photos must match");
    assert_eq!(false_accepts, 0, "no stranger may pass for an enrolled person");

    for p in common::jpegs(&set.join("noface")) {
        let faces = v.frame(&std::fs::read(&p).unwrap(), &mut StageTimes::default()).unwrap();
        assert!(faces.faces.is_empty(), "{} has no face but {} were found", p.display(), faces.faces.len());
    }
}

#[test]
fn bad_images_are_errors_with_reasons() {
    let v = vision();
    let set = common::testset();
    let mut times = StageTimes::default();
    let reason = |bytes: &[u8]| match v.frame(bytes, &mut StageTimes::default()) {
        Err(VisionError::Image(r)) => r,
        other => panic!("expected an image error, got {other:?}"),
    };
    assert!(reason(&[]).contains("0 bytes"));
    let photo = std::fs::read(set.join("person/biden/1.jpg")).unwrap();
    assert!(reason(&photo[..photo.len() / 3]).contains("JPEG"), "truncated JPEG");
    assert!(reason(b"GIF89a not a jpeg at all").contains("JPEG"));
    let big = std::fs::read(set.join("big/50mp.jpg")).unwrap();
    let r = reason(&big);
    assert!(r.contains("8660x5774") && r.contains("50.0 megapixels"), "{r}");
    assert!(v.frame(&photo, &mut times).is_ok());
    assert!(times.decode_ms > 0.0 && times.detect_ms > 0.0 && times.embed_ms > 0.0);
}

#[test]
fn a_damaged_model_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let mut faces = common::faces_config();
    let copy = dir.path().join("detector.onnx");
    let mut bytes = std::fs::read(&faces.detector_model).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&copy, bytes).unwrap();
    faces.detector_model = copy;
    let e = Vision::load(&faces, 1).err().expect("a damaged model must be refused").to_string();
    assert!(e.contains("detector model") && e.contains("sha256"), "{e}");
    faces.detector_model = dir.path().join("missing.onnx");
    let e = Vision::load(&faces, 1).err().unwrap().to_string();
    assert!(e.contains("cannot read"), "{e}");
    let _ = Config::default();
}
