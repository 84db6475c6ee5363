//! Frames between the agent and its `pipeline-worker` (a separate process that decodes
//! camera JPEGs, so each side treats what the other says as outside bytes): a 4-byte
//! little-endian length, then postcard, refused above `MAX_FRAME`. A burst the agent reads
//! goes on to the matcher and the vote, as a ring's does.
//!
//! Input: a stream of frames, read as the worker reads requests and again as the agent
//! reads replies, until the end or the first error.

use doorbell_agent::faces::matcher::{self, Candidate, Thresholds};
use doorbell_agent::pipeline::control::List;
use doorbell_agent::worker::protocol::{self, Reply, Request};

fn main() {
    let (ann, bob) = (vec![0.6f32, 0.8, 0.0, 0.0], vec![0.0f32, 0.0, 1.0, 0.0]);
    let people =
        [Candidate { name: "ann", list: List::Known, aggregate: &ann }, Candidate { name: "bob", list: List::Blocked, aggregate: &bob }];
    let thresholds = Thresholds { known: 0.9, blocked: 0.85 };
    afl::fuzz!(|data: &[u8]| {
        let mut stream = data;
        while let Ok(Some(request)) = protocol::read::<Request>(&mut stream) {
            drop(request);
        }
        let mut stream = data;
        while let Ok(Some(reply)) = protocol::read::<Reply>(&mut stream) {
            if let Reply::Ring(Ok(burst)) = reply {
                let faces: Vec<_> = burst
                    .frames
                    .iter()
                    .flat_map(|f| &f.faces)
                    .map(|face| (face, matcher::classify(&face.embedding, &people, thresholds)))
                    .collect();
                let _ = matcher::vote(&faces);
            }
        }
    });
}
