//! Loading an ONNX model into tract: the file must exist and match its pinned sha256 before
//! a byte of it is parsed.

use std::path::Path;

use tract_onnx::prelude::*;

use super::VisionError;

/// A model ready to run (optimised plan, single-threaded).
pub type Plan = Arc<TypedRunnableModel<TypedModel>>;

/// Largest model file read (the embedder is ~22 MiB).
const MAX_MODEL: u64 = 256 * 1024 * 1024;

/// The bytes of the model file at `path` once they match `sha256`; `what` names it in errors.
pub fn verified(what: &'static str, path: &Path, sha256: &str) -> Result<Vec<u8>, VisionError> {
    let bad = |reason: String| VisionError::Model { what, path: path.to_path_buf(), reason };
    let bytes = doorbell_base::durable::read_limited(path, MAX_MODEL).map_err(|e| bad(format!("cannot read: {e}")))?;
    let digest = doorbell_artifact::sha256_hex(&bytes);
    if !digest.eq_ignore_ascii_case(sha256) {
        return Err(bad(format!("sha256 is {digest}, expected {sha256} (wrong or damaged file; run scripts/fetch-models.sh)")));
    }
    Ok(bytes)
}

/// Reads, checks and optimises the model at `path`; `what` names it in errors.
pub fn load(what: &'static str, path: &Path, sha256: &str) -> Result<Plan, VisionError> {
    let bad = |reason: String| VisionError::Model { what, path: path.to_path_buf(), reason };
    let bytes = verified(what, path, sha256)?;
    tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map(Arc::new)
        .map_err(|e| bad(format!("not a usable ONNX model: {e}")))
}

/// Runs a plan on one f32 input of `shape`, returning each output as a flat vector.
pub fn run(plan: &Plan, shape: &[usize], input: Vec<f32>) -> Result<Vec<Vec<f32>>, VisionError> {
    let tensor = Tensor::from_shape(shape, &input).map_err(|e| VisionError::Inference(e.to_string()))?;
    let outputs = plan.run(tvec!(tensor.into())).map_err(|e| VisionError::Inference(e.to_string()))?;
    outputs.iter().map(|o| o.as_slice::<f32>().map(<[f32]>::to_vec).map_err(|e| VisionError::Inference(e.to_string()))).collect()
}
