//! The `pipeline-worker` process: loads the models, then answers the agent's requests on
//! stdin/stdout until stdin closes. Capture, decoding and inference all happen here, so a
//! crash, a hang or a memory blow-up costs one ring, never the agent.

use std::io::{self, BufReader, BufWriter};
use std::time::Instant;

use super::protocol::{self, Burst, FrameReport, Reply, Request, StageTimes};
use crate::capture::{self, Capture};
use crate::config::Config;
use crate::vision::Vision;

/// Serves until the agent closes stdin. Model problems are reported (`Unavailable`), then
/// the worker exits; only a broken pipe is an error.
pub fn serve(cfg: &Config) -> io::Result<()> {
    crate::memory::map_large_allocations();
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let started = Instant::now();
    let max_pixels = (cfg.capture.max_megapixels * 1e6) as u64;
    let vision = match Vision::load(&cfg.faces, max_pixels) {
        Ok(v) => v,
        Err(e) => {
            log::error!("pipeline worker cannot start: {e}");
            return protocol::write(&mut output, &Reply::Unavailable(e.to_string()));
        }
    };
    crate::memory::release_free_heap();
    let load_ms = started.elapsed().as_secs_f32() * 1000.0;
    log::info!("pipeline worker ready: models loaded in {load_ms:.0} ms");
    protocol::write(&mut output, &Reply::Ready { load_ms })?;
    let mut camera = capture::from_config(&cfg.capture);
    while let Some(request) = protocol::read::<Request>(&mut input)? {
        let reply = match request {
            Request::Ring { seq, keep_frames } => Reply::Ring(Ok(burst(&vision, camera.as_mut(), cfg.capture.frames, seq, keep_frames))),
            Request::Embed { jpeg } => {
                let mut times = StageTimes::default();
                Reply::Embedded(vision.frame(&jpeg, &mut times).map(report).map_err(|e| e.to_string()))
            }
            Request::Ping => Reply::Pong,
        };
        protocol::write(&mut output, &reply)?;
        drop(reply);
        crate::memory::release_free_heap();
    }
    Ok(())
}

/// Captures and embeds one burst; a frame that fails is reported, not fatal.
fn burst(vision: &Vision, camera: &mut dyn Capture, frames: usize, seq: u64, keep: bool) -> Burst {
    let mut out = Burst::default();
    for index in 0..frames {
        let t = Instant::now();
        let grabbed = camera.grab(seq, index);
        out.times.capture_ms += t.elapsed().as_secs_f32() * 1000.0;
        let jpeg = match grabbed {
            Ok(j) => j,
            Err(e) => {
                out.frames.push(FrameReport { error: Some(e.to_string()), ..FrameReport::default() });
                continue;
            }
        };
        let report = match vision.frame(&jpeg, &mut out.times) {
            Ok(faces) => report(faces),
            Err(e) => FrameReport { error: Some(format!("frame {}: {e}", index + 1)), ..FrameReport::default() },
        };
        out.frames.push(report);
        if keep {
            out.kept.push(jpeg);
        }
    }
    out
}

fn report(f: crate::vision::FrameFaces) -> FrameReport {
    FrameReport { faces: f.faces, detected: f.detected as u32, blurred: f.blurred as u32, error: None }
}
