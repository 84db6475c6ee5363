//! Face detection with MediaPipe's BlazeFace short-range model: a 128×128 letterboxed input,
//! 896 fixed anchors, sigmoid scores, a score threshold, non-maximum suppression and a
//! minimum face size. Each face comes with six keypoints (eyes, nose tip, mouth, ears).

use super::image::{letterbox, Letterbox, Rgb};
use super::model::{self, Plan};
use super::VisionError;

/// The model's input side.
const INPUT: usize = 128;
/// Anchors: stride 8 (16×16 cells, 2 each) then stride 16 (8×8 cells, 6 each).
const ANCHORS: usize = 896;
/// Values per anchor in `regressors`: box (cx, cy, w, h) then 6 keypoints (x, y).
const VALUES: usize = 16;

/// A detected face in source-image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Detector confidence 0..1.
    pub score: f32,
    /// Box: left, top, width, height.
    pub bbox: [f32; 4],
    /// Eye (image left), eye (image right), nose tip, mouth centre, ear, ear.
    pub keypoints: [(f32, f32); 6],
}

/// Detector settings.
#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// Minimum score.
    pub threshold: f32,
    /// Boxes overlapping a better one by more than this IoU are dropped.
    pub nms_iou: f32,
    /// Faces narrower than this many source pixels are ignored.
    pub min_face_px: f32,
}

/// The loaded detector.
pub struct Detector {
    plan: Plan,
    anchors: Vec<(f32, f32)>,
    cfg: DetectorConfig,
}

impl Detector {
    /// Wraps a loaded BlazeFace short-range plan.
    pub fn new(plan: Plan, cfg: DetectorConfig) -> Detector {
        Detector { plan, anchors: anchors(), cfg }
    }

    /// Faces in `img`, best first.
    pub fn detect(&self, img: &Rgb) -> Result<Vec<Detection>, VisionError> {
        let (input, lb) = letterbox(img, INPUT);
        let outputs = model::run(&self.plan, &[1, 3, INPUT, INPUT], input)?;
        let (regressors, scores) = match outputs.as_slice() {
            [r, s] if r.len() == ANCHORS * VALUES && s.len() == ANCHORS => (r, s),
            _ => {
                return Err(VisionError::Inference(format!(
                    "detector outputs have unexpected sizes: {:?}",
                    outputs.iter().map(Vec::len).collect::<Vec<_>>()
                )))
            }
        };
        Ok(self.decode(regressors, scores, &lb))
    }

    fn decode(&self, regressors: &[f32], scores: &[f32], lb: &Letterbox) -> Vec<Detection> {
        let mut found: Vec<Detection> = Vec::new();
        for (i, (&(ax, ay), &logit)) in self.anchors.iter().zip(scores).enumerate() {
            let score = 1.0 / (1.0 + (-logit.clamp(-100.0, 100.0)).exp());
            if score < self.cfg.threshold {
                continue;
            }
            let r = &regressors[i * VALUES..(i + 1) * VALUES];
            let point = |x: f32, y: f32| lb.to_source((x / INPUT as f32 + ax) * INPUT as f32, (y / INPUT as f32 + ay) * INPUT as f32);
            let (cx, cy) = point(r[0], r[1]);
            let (w, h) = (r[2] / lb.scale, r[3] / lb.scale);
            let mut keypoints = [(0.0, 0.0); 6];
            for (k, kp) in keypoints.iter_mut().enumerate() {
                *kp = point(r[4 + 2 * k], r[5 + 2 * k]);
            }
            if w < self.cfg.min_face_px || !w.is_finite() || !h.is_finite() {
                continue;
            }
            found.push(Detection { score, bbox: [cx - w / 2.0, cy - h / 2.0, w, h], keypoints });
        }
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Detection> = Vec::new();
        for d in found {
            if kept.iter().all(|k| iou(&k.bbox, &d.bbox) <= self.cfg.nms_iou) {
                kept.push(d);
            }
        }
        kept
    }
}

/// Anchor centres in 0..1 input coordinates, in the model's output order.
fn anchors() -> Vec<(f32, f32)> {
    let mut out = Vec::with_capacity(ANCHORS);
    for (cells, per_cell) in [(16usize, 2usize), (8, 6)] {
        for y in 0..cells {
            for x in 0..cells {
                for _ in 0..per_cell {
                    out.push(((x as f32 + 0.5) / cells as f32, (y as f32 + 0.5) / cells as f32));
                }
            }
        }
    }
    out
}

/// Intersection over union of two `[left, top, width, height]` boxes.
fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    let inter = w.max(0.0) * h.max(0.0);
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layout_matches_the_model() {
        let a = anchors();
        assert_eq!(a.len(), ANCHORS);
        assert_eq!(a[0], (1.0 / 32.0, 1.0 / 32.0));
        assert_eq!(a[1], a[0], "two anchors per stride-8 cell");
        assert_eq!(a[512], (1.0 / 16.0, 1.0 / 16.0), "stride-16 anchors start after 16*16*2");
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[2.0, 2.0, 2.0, 2.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 2.0, 2.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
