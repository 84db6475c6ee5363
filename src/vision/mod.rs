//! The worker's eyes: JPEG frames in, face descriptors out. Decoding, detection (BlazeFace),
//! alignment and embedding (dlib ResNet), each timed. Only the `pipeline-worker` process
//! uses this module; the agent never loads a model.

pub mod detect;
pub mod embed;
pub mod image;
pub mod model;

use std::path::PathBuf;
use std::time::Instant;

use crate::config::FacesConfig;
use crate::worker::protocol::{Face, StageTimes};
use detect::{Detector, DetectorConfig};
use embed::Embedder;

/// Why a frame could not be turned into faces.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VisionError {
    /// A model file is missing, damaged or not what was pinned.
    #[error("{what} model {path}: {reason}")]
    Model {
        /// `detector` or `embedder`.
        what: &'static str,
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The frame is not a usable image.
    #[error("{0}")]
    Image(String),
    /// The model failed on this input.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// What one frame showed.
#[derive(Debug, Default)]
pub struct FrameFaces {
    /// Faces that passed the gates, embedded.
    pub faces: Vec<Face>,
    /// Faces found by the detector, before the blur gate and the per-frame cap.
    pub detected: usize,
    /// Faces dropped by the blur gate.
    pub blurred: usize,
}

/// Both models, loaded once per worker process.
pub struct Vision {
    detector: Detector,
    embedder: Embedder,
    max_pixels: u64,
    min_sharpness: f32,
    max_faces: usize,
}

impl Vision {
    /// Loads and checks both models.
    pub fn load(cfg: &FacesConfig, max_pixels: u64) -> Result<Vision, VisionError> {
        let detector = model::load("detector", &cfg.detector_model, &cfg.detector_sha256)?;
        let embedder = model::load("embedder", &cfg.embedder_model, &cfg.embedder_sha256)?;
        let det_cfg = DetectorConfig { threshold: cfg.detect_threshold, nms_iou: cfg.nms_iou, min_face_px: cfg.min_face_px as f32 };
        Ok(Vision {
            detector: Detector::new(detector, det_cfg),
            embedder: Embedder::new(embedder),
            max_pixels,
            min_sharpness: cfg.min_sharpness,
            max_faces: cfg.max_faces_per_frame,
        })
    }

    /// Decodes one JPEG frame and embeds the faces in it, adding stage times to `times`.
    pub fn frame(&self, jpeg: &[u8], times: &mut StageTimes) -> Result<FrameFaces, VisionError> {
        let t = Instant::now();
        let img = image::decode(jpeg, self.max_pixels);
        times.decode_ms += ms(t);
        self.faces(&img?, times)
    }

    /// Detects, aligns and embeds the faces of a decoded frame.
    pub fn faces(&self, img: &image::Rgb, times: &mut StageTimes) -> Result<FrameFaces, VisionError> {
        let frame_area = (img.width * img.height) as f32;

        let t = Instant::now();
        let detections = self.detector.detect(img);
        times.detect_ms += ms(t);
        let detections = detections?;

        let mut out = FrameFaces { detected: detections.len(), ..FrameFaces::default() };
        for d in detections.into_iter().take(self.max_faces) {
            let t = Instant::now();
            let chip = embed::align(img, &d);
            times.align_ms += ms(t);
            if chip.sharpness < self.min_sharpness {
                out.blurred += 1;
                continue;
            }
            let t = Instant::now();
            let embedding = self.embedder.embed(&chip);
            times.embed_ms += ms(t);
            out.faces.push(Face {
                embedding: embedding?,
                score: d.score,
                area: (d.bbox[2] * d.bbox[3] / frame_area).clamp(0.0, 1.0),
                sharpness: chip.sharpness,
                bbox: d.bbox,
            });
        }
        Ok(out)
    }
}

fn ms(since: Instant) -> f32 {
    since.elapsed().as_secs_f32() * 1000.0
}
