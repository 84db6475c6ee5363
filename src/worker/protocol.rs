//! What the agent and its `pipeline-worker` say to each other over the worker's stdin and
//! stdout: postcard messages, each framed by a 4-byte little-endian length.
//!
//! The worker speaks first (`Ready` or `Unavailable`), then answers each request with
//! exactly one reply, in order. Both sides refuse frames above `MAX_FRAME`.
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest frame either side accepts (a burst of kept JPEG frames fits).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Agent → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Capture a burst for ring `seq` and embed every face in it.
    Ring {
        /// Ring sequence number (the `files` source replays by it).
        seq: u64,
        /// Return the captured JPEGs too (snapshots are configured).
        keep_frames: bool,
    },
    /// Embed the faces of one JPEG (enrollment).
    Embed {
        /// The image.
        jpeg: Vec<u8>,
    },
    /// Health check.
    Ping,
}

/// Worker → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Models loaded; the worker takes requests.
    Ready {
        /// Time spent loading both models.
        load_ms: f32,
    },
    /// The models cannot be used; the worker exits after saying why.
    Unavailable(String),
    /// Answer to `Ring`.
    Ring(Result<Burst, String>),
    /// Answer to `Embed`.
    Embedded(Result<FrameReport, String>),
    /// Answer to `Ping`.
    Pong,
}

/// One face found in a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// Unit-length descriptor.
    pub embedding: Vec<f32>,
    /// Detector score 0..1.
    pub score: f32,
    /// Box area as a fraction of the frame.
    pub area: f32,
    /// Blur measure of the aligned face.
    pub sharpness: f32,
    /// Box in frame pixels: left, top, width, height.
    pub bbox: [f32; 4],
}

/// What one frame of a burst showed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameReport {
    /// Faces that passed the gates.
    pub faces: Vec<Face>,
    /// Faces the detector found.
    pub detected: u32,
    /// Faces dropped by the blur gate.
    pub blurred: u32,
    /// Why this frame could not be used (capture or decode failure).
    pub error: Option<String>,
}

/// Milliseconds per worker stage, summed over a burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    /// Grabbing frames.
    pub capture_ms: f32,
    /// JPEG decoding.
    pub decode_ms: f32,
    /// Face detection.
    pub detect_ms: f32,
    /// Alignment (warp + blur measure).
    pub align_ms: f32,
    /// Embedding.
    pub embed_ms: f32,
}

/// The worker's answer for a ring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    /// One report per frame, in capture order.
    pub frames: Vec<FrameReport>,
    /// Stage timings.
    pub times: StageTimes,
    /// The captured JPEGs, when asked for.
    pub kept: Vec<Vec<u8>>,
}

/// Writes one framed message.
pub fn write<T: Serialize>(w: &mut impl Write, message: &T) -> io::Result<()> {
    let bytes = postcard::to_stdvec(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if bytes.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {} bytes is above the {MAX_FRAME}-byte frame limit", bytes.len()),
        ));
    }
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(&bytes)?;
    w.flush()
}

/// Reads one framed message; `None` at a clean end of stream.
pub fn read<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes is above the {MAX_FRAME}-byte limit")));
    }
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    postcard::from_bytes(&bytes).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable frame: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        write(&mut buf, &Request::Ring { seq: 7, keep_frames: true }).unwrap();
        write(&mut buf, &Request::Ping).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read::<Request>(&mut r).unwrap(), Some(Request::Ring { seq: 7, keep_frames: true }));
        assert_eq!(read::<Request>(&mut r).unwrap(), Some(Request::Ping));
        assert_eq!(read::<Request>(&mut r).unwrap(), None);
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let huge = (MAX_FRAME as u32 + 1).to_le_bytes();
        assert!(read::<Request>(&mut huge.as_slice()).is_err());
        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(read::<Request>(&mut garbage.as_slice()).is_err());
    }
}
