//! Enrollment and recognition through the pipeline owner's typed control API, with the
//! real ring thread (`RingFlow`), the real `pipeline-worker` process of this build, the
//! real models and a real store: enroll from one photo, recognise the same person in a
//! different photo, a blocked person raises the critical alert, feedback moves the
//! accuracy gauge, export/import round-trips the gallery.
//!
//! The transport that will carry these requests (fleet commands, the local control socket)
//! is not part of this crate yet; this test drives the same `FacesHandle` it will use.
#![cfg(feature = "faces")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use doorbell_agent::alerts::Input as AlertInput;
use doorbell_agent::config::{Config, Severity};
use doorbell_agent::faces::{Parts, Recognition};
use doorbell_agent::gpio::{Press, Trigger};
use doorbell_agent::health::Board;
use doorbell_agent::metrics::Metrics;
use doorbell_agent::pipeline::control::{ControlError, EnrollFrom, FacesHandle, List};
use doorbell_agent::pipeline::{RingFlow, RingStats};
use doorbell_agent::store::{RingResult, Store};
use tokio::sync::{mpsc, watch};

struct Rig {
    runtime: tokio::runtime::Runtime,
    faces: FacesHandle,
    presses: mpsc::Sender<Press>,
    alerts: mpsc::Receiver<AlertInput>,
    stats: watch::Receiver<RingStats>,
    metrics: Arc<Metrics>,
    frames: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn rig(snapshots: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let mut cfg = Config { data_dir: dir.path().join("data"), ..Config::default() };
    cfg.faces = common::faces_config();
    cfg.capture.source = doorbell_agent::config::CaptureSource::Files;
    cfg.capture.path = Some(frames.clone());
    cfg.capture.frames = 3;
    cfg.snapshots.keep = snapshots;
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();

    let metrics = Arc::new(Metrics::default());
    let (store, _) = Store::open(&cfg.data_dir, &cfg.store, metrics.clone()).unwrap();
    let (alerts_tx, alerts) = mpsc::channel(256);
    let worker = (common::BIN.into(), vec!["-c".into(), cfg_path.into_os_string(), "pipeline-worker".into()]);
    let parts = Parts { store: store.clone(), metrics: metrics.clone(), health: Board::default(), alerts: alerts_tx.clone(), worker };
    let recognizer = Box::new(Recognition::new(&cfg, parts).unwrap());
    let (stats_tx, stats) = watch::channel(RingStats::default());
    let flow = RingFlow {
        store,
        announce: None,
        metrics: metrics.clone(),
        recognizer,
        alerts: alerts_tx,
        stats: stats_tx,
        budget: Duration::from_secs(5),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (presses, press_rx) = mpsc::channel(4);
    let (faces, control_rx) = FacesHandle::channel();
    let handle = runtime.handle().clone();
    std::thread::spawn(move || flow.run(handle, press_rx, control_rx));
    Rig { runtime, faces, presses, alerts, stats, metrics, frames, _dir: dir }
}

impl Rig {
    /// Shows `photo` to the camera and rings; returns the stored ring.
    fn ring(&mut self, photo: &str) -> doorbell_agent::store::RingV1 {
        for f in common::jpegs(&self.frames) {
            std::fs::remove_file(f).unwrap();
        }
        std::fs::copy(common::testset().join(photo), self.frames.join("frame.jpg")).unwrap();
        let before = self.stats.borrow().rings;
        self.presses.blocking_send(Press { trigger: Trigger::Simulated, at: Instant::now(), ts_ms: 1 }).unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while self.stats.borrow().rings == before {
            assert!(Instant::now() < end, "no ring decided");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stats.borrow().last.clone().unwrap()
    }

    fn photo(name: &str) -> Vec<u8> {
        std::fs::read(common::testset().join(name)).unwrap()
    }

    fn events(&mut self) -> Vec<(&'static str, Severity, String)> {
        let mut out = Vec::new();
        while let Ok(input) = self.alerts.try_recv() {
            if let AlertInput::Event { key, severity, message } = input {
                out.push((key, severity, message));
            }
        }
        out
    }
}

#[test]
fn enrolled_people_are_recognised_in_other_photos_and_the_blocked_raise_a_critical_alert() {
    let mut rig = rig(true);
    let f = rig.faces.clone();
    let obama =
        rig.runtime.block_on(f.enroll("Barack".into(), List::Known, EnrollFrom::Jpegs(vec![Rig::photo("person/obama/1.jpg")]))).unwrap();
    assert_eq!((obama.samples, obama.list), (1, List::Known));

    let r = rig.ring("person/obama/2.jpg");
    assert_eq!((r.result, r.name.as_deref()), (RingResult::Known, Some("Barack")), "{r:?}");
    assert!(r.confidence.unwrap() > 0.5);
    let r = rig.ring("person/obama/3.jpg");
    assert_eq!((r.result, r.name.as_deref()), (RingResult::Known, Some("Barack")), "{r:?}");

    // Biden is not enrolled yet: a stranger, whose frames are kept (snapshots.keep).
    let stranger = rig.ring("person/biden/1.jpg");
    assert_eq!(stranger.result, RingResult::Unknown, "{stranger:?}");
    let blocked = rig
        .runtime
        .block_on(f.enroll("Joe".into(), List::Blocked, EnrollFrom::Ring(stranger.id.clone())))
        .expect("enroll from the kept ring");
    assert_eq!(blocked.samples, 3, "one sample per kept frame of the burst");
    rig.events();
    let r = rig.ring("person/biden/1.jpg");
    assert_eq!((r.result, r.name.as_deref()), (RingResult::Blocked, Some("Joe")), "{r:?}");
    let events = rig.events();
    let alert = events.iter().find(|e| e.0 == "blocked_person").expect("blocked_person alert");
    assert_eq!(alert.1, Severity::Critical);
    assert!(alert.2.contains("Joe") && alert.2.contains(&r.id), "{}", alert.2);

    // Strangers stay unknown with people enrolled.
    for s in ["stranger/sample1-3.jpg", "stranger/sample4-2.jpg", "stranger/sample6-1.jpg"] {
        assert_eq!(rig.ring(s).result, RingResult::Unknown, "{s}");
    }
    assert_eq!(rig.metrics.gallery_size.get(&["known"]), 1.0);
    assert_eq!(rig.metrics.gallery_size.get(&["blocked"]), 1.0);

    // Wrong inputs get reasons, not crashes.
    let no_face = rig.runtime.block_on(f.enroll("x".into(), List::Known, EnrollFrom::Jpegs(vec![Rig::photo("noface/sample5-1.jpg")])));
    assert!(matches!(&no_face, Err(ControlError::BadRequest(r)) if r.contains("no usable face")), "{no_face:?}");
    let garbage = rig.runtime.block_on(f.enroll("x".into(), List::Known, EnrollFrom::Jpegs(vec![b"not a jpeg".to_vec()])));
    assert!(matches!(&garbage, Err(ControlError::BadRequest(r)) if r.contains("JPEG")), "{garbage:?}");
    let moved = rig.runtime.block_on(f.enroll("Joe".into(), List::Known, EnrollFrom::Jpegs(vec![Rig::photo("person/biden/1.jpg")])));
    assert!(matches!(moved, Err(ControlError::BadRequest(_))));
    let unknown_ring = rig.runtime.block_on(f.enroll("x".into(), List::Known, EnrollFrom::Ring("nope".into())));
    assert!(matches!(unknown_ring, Err(ControlError::NotFound(_))));

    // Backup and restore.
    let exported = rig.runtime.block_on(f.export()).unwrap();
    assert_eq!(exported.people, 2);
    rig.runtime.block_on(f.remove("Barack".into())).unwrap();
    assert_eq!(rig.ring("person/obama/2.jpg").result, RingResult::Unknown, "removed people are strangers");
    let imported = rig.runtime.block_on(f.import(exported.file)).unwrap();
    assert_eq!((imported.added, imported.replaced), (1, 1));
    assert_eq!(rig.ring("person/obama/2.jpg").result, RingResult::Known);
    assert_eq!(rig.runtime.block_on(f.list()).unwrap().len(), 2);
}

#[test]
fn operator_feedback_feeds_the_accuracy_gauge() {
    let mut rig = rig(false);
    let f = rig.faces.clone();
    let ring = rig.ring("stranger/sample2-2.jpg");
    let mut last = None;
    for i in 0..10 {
        last = Some(rig.runtime.block_on(f.feedback(ring.id.clone(), i % 5 != 0)).unwrap());
    }
    let acc = last.unwrap();
    assert_eq!((acc.samples, acc.accuracy), (10, Some(0.8)));
    assert_eq!(rig.metrics.face_accuracy.get(&[]), 0.8);
    let missing = rig.runtime.block_on(f.feedback("no-such-ring".into(), true));
    assert!(matches!(missing, Err(ControlError::NotFound(_))));
    let enroll = rig.runtime.block_on(f.enroll("a".into(), List::Known, EnrollFrom::Ring(ring.id)));
    assert!(matches!(enroll, Err(ControlError::NotFound(r)) if r.contains("snapshots.keep")));
}
