//! Camera frames as the pipeline worker decodes them (a `files`, `command` or `http`
//! capture source, or a JPEG an operator enrolls): zune-jpeg with the size limit checked
//! before any pixel memory is allocated, the truncation check, then the detector's
//! letterbox of the decoded image.

use doorbell_agent::vision::image;

/// Far below `capture.max_megapixels`' default (16): the code paths are the same, and AFL
/// counts a frame that takes long to decode as a hang.
const MAX_PIXELS: u64 = 1 << 20;
/// The detector's input size (src/vision/detect.rs).
const DETECTOR_INPUT: usize = 128;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        match image::decode(data, MAX_PIXELS) {
            Ok(rgb) => {
                let _ = image::letterbox(&rgb, DETECTOR_INPUT);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
}
