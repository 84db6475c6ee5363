//! Face alignment and embedding: a detected face is cut out as a 150×150 chip whose eyes,
//! nose and mouth sit where dlib's face recognition ResNet expects them, and turned into a
//! unit-length 128-d descriptor.

use super::detect::Detection;
use super::image::{self, Rgb, Similarity};
use super::model::{self, Plan};
use super::VisionError;

/// Side of the chip the embedder takes.
pub const CHIP: usize = 150;
/// Length of a descriptor.
pub const DIMS: usize = 128;

/// Where dlib's `get_face_chip_details(shape, 150, 0.25)` puts the eye centres, the nose tip
/// and the mouth centre: its mean face shape (points 36-41, 42-47, 30, 48-67) with the 0.25
/// padding, in chip pixels. BlazeFace keypoints 0-3 are mapped onto these.
const TEMPLATE: [(f32, f32); 4] = [(47.549, 46.599), (100.476, 46.599), (74.013, 76.563), (74.013, 105.422)];

/// An aligned face chip.
pub struct Chip {
    /// NCHW RGB 0..255.
    pub pixels: Vec<f32>,
    /// Variance of the Laplacian of the chip's grey levels (blur gate).
    pub sharpness: f32,
}

/// Cuts the aligned chip of `face` out of `img`.
pub fn align(img: &Rgb, face: &Detection) -> Chip {
    let from: Vec<(f32, f32)> = TEMPLATE.to_vec();
    let to: Vec<(f32, f32)> = face.keypoints[..4].to_vec();
    let transform = Similarity::fit(&from, &to);
    let (pixels, grey) = image::warp(img, &transform, CHIP);
    Chip { pixels, sharpness: image::sharpness(&grey, CHIP) }
}

/// The loaded embedder.
pub struct Embedder {
    plan: Plan,
}

impl Embedder {
    /// Wraps a loaded dlib ResNet plan.
    pub fn new(plan: Plan) -> Embedder {
        Embedder { plan }
    }

    /// The unit-length descriptor of an aligned chip.
    pub fn embed(&self, chip: &Chip) -> Result<Vec<f32>, VisionError> {
        let mut out = model::run(&self.plan, &[1, 3, CHIP, CHIP], chip.pixels.clone())?;
        let descriptor =
            out.pop().filter(|d| d.len() == DIMS).ok_or_else(|| VisionError::Inference("embedder output is not 128 values".into()))?;
        let norm = descriptor.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(VisionError::Inference("embedder produced a zero or non-finite descriptor".into()));
        }
        Ok(descriptor.into_iter().map(|v| v / norm).collect())
    }
}
