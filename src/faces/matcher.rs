//! Matching and the burst vote: pure functions over descriptors, no I/O.
//!
//! Each face is compared with every person's aggregate descriptor (cosine similarity of
//! unit vectors). The blocklist is checked first, with its own threshold; then the known
//! list. A similarity becomes a calibrated confidence through a logistic curve centred on
//! the threshold. A burst is decided by a vote in which each face weighs its box area times
//! its detector score, so the visitor close to the camera outweighs a face in the street.

use crate::pipeline::control::List;
use crate::pipeline::Decision;
use crate::store::RingResult;
use crate::worker::protocol::Face;

/// Steepness of the similarity → confidence curve, set on the labelled set (tests/vision.rs):
/// a typical same-person pair (cosine 0.95) gets ~0.9 at the default 0.9 threshold and the
/// closest stranger (0.86) ~0.17. The set is separable, so a logistic fit has no finite
/// optimum; this slope keeps confidences graded rather than all 0 or 1.
pub const CONFIDENCE_SLOPE: f32 = 40.0;

/// A person as the matcher sees them.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Name.
    pub name: &'a str,
    /// List.
    pub list: List,
    /// Unit-length aggregate descriptor.
    pub aggregate: &'a [f32],
}

/// Thresholds of a match.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Known list.
    pub known: f32,
    /// Blocklist.
    pub blocked: f32,
}

/// What one face is.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A person of a list, with the calibrated confidence.
    Person {
        /// Name.
        name: String,
        /// List.
        list: List,
        /// 0..1.
        confidence: f32,
    },
    /// Nobody enrolled; confidence that it is nobody known.
    Unknown {
        /// 0..1.
        confidence: f32,
    },
}

/// Cosine similarity of two unit vectors.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Calibrated probability that a similarity `s` is a match at threshold `t`.
pub fn confidence(s: f32, t: f32) -> f32 {
    1.0 / (1.0 + (-CONFIDENCE_SLOPE * (s - t)).exp())
}

/// Classifies one face: blocklist first, then the known list.
pub fn classify(face: &[f32], people: &[Candidate<'_>], t: Thresholds) -> Verdict {
    let best = |list: List| {
        people.iter().filter(|p| p.list == list).map(|p| (p, similarity(face, p.aggregate))).max_by(|a, b| a.1.total_cmp(&b.1))
    };
    if let Some((p, s)) = best(List::Blocked).filter(|(_, s)| *s >= t.blocked) {
        return Verdict::Person { name: p.name.to_string(), list: List::Blocked, confidence: confidence(s, t.blocked) };
    }
    match best(List::Known) {
        Some((p, s)) if s >= t.known => Verdict::Person { name: p.name.to_string(), list: List::Known, confidence: confidence(s, t.known) },
        Some((_, s)) => Verdict::Unknown { confidence: 1.0 - confidence(s, t.known) },
        None => Verdict::Unknown { confidence: 1.0 },
    }
}

/// The burst's decision: the verdict with the most weight (area × score) wins; on a tie a
/// blocked person beats a known one, which beats unknown. `None` when no frame had a face.
pub fn vote(faces: &[(&Face, Verdict)]) -> Option<Decision> {
    // (result, name) → (total weight, weighted confidence sum)
    let mut tally: Vec<((RingResult, Option<String>), f32, f32)> = Vec::new();
    for (face, verdict) in faces {
        let weight = (face.area * face.score).max(1e-6);
        let (key, conf) = match verdict {
            Verdict::Person { name, list: List::Blocked, confidence } => ((RingResult::Blocked, Some(name.clone())), *confidence),
            Verdict::Person { name, list: List::Known, confidence } => ((RingResult::Known, Some(name.clone())), *confidence),
            Verdict::Unknown { confidence } => ((RingResult::Unknown, None), *confidence),
        };
        match tally.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) => {
                entry.1 += weight;
                entry.2 += weight * conf;
            }
            None => tally.push((key, weight, weight * conf)),
        }
    }
    let rank = |r: RingResult| match r {
        RingResult::Blocked => 2,
        RingResult::Known => 1,
        _ => 0,
    };
    tally
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(rank(a.0 .0).cmp(&rank(b.0 .0))))
        .map(|((result, name), weight, conf)| Decision { result, name, confidence: Some(conf / weight) })
}

/// Unit-length mean of descriptors (a person's aggregate).
pub fn aggregate(samples: &[Vec<f32>]) -> Vec<f32> {
    let dims = samples.first().map_or(0, Vec::len);
    let mut sum = vec![0.0f32; dims];
    for s in samples {
        for (acc, v) in sum.iter_mut().zip(s) {
            *acc += v;
        }
    }
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        sum.iter_mut().for_each(|v| *v /= norm);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        aggregate(&[v.to_vec()])
    }

    fn face(area: f32, score: f32) -> Face {
        Face { embedding: vec![], score, area, sharpness: 100.0, bbox: [0.0; 4] }
    }

    const T: Thresholds = Thresholds { known: 0.8, blocked: 0.75 };

    #[test]
    fn blocklist_is_checked_first_with_its_own_threshold() {
        let (a, b) = (unit(&[1.0, 0.0, 0.0]), unit(&[0.9, 0.436, 0.0]));
        let people =
            [Candidate { name: "ann", list: List::Known, aggregate: &a }, Candidate { name: "bob", list: List::Blocked, aggregate: &b }];
        // 0.9 to bob (blocked, ≥ 0.75) and 1.0 to ann (known): the blocklist wins.
        match classify(&a, &people, T) {
            Verdict::Person { name, list: List::Blocked, .. } => assert_eq!(name, "bob"),
            v => panic!("{v:?}"),
        }
        let stranger = unit(&[0.0, 0.0, 1.0]);
        assert!(matches!(classify(&stranger, &people, T), Verdict::Unknown { confidence } if confidence > 0.99));
    }

    #[test]
    fn confidence_is_half_at_the_threshold_and_monotonic() {
        assert!((confidence(0.8, 0.8) - 0.5).abs() < 1e-6);
        assert!(confidence(0.9, 0.8) > 0.9 && confidence(0.7, 0.8) < 0.1);
        assert!(confidence(0.81, 0.8) > 0.5 && confidence(0.81, 0.8) < confidence(0.82, 0.8));
    }

    #[test]
    fn vote_weighs_area_and_score() {
        let (near, far) = (face(0.2, 0.9), face(0.01, 0.9));
        let known = Verdict::Person { name: "ann".into(), list: List::Known, confidence: 0.9 };
        let stranger = Verdict::Unknown { confidence: 0.8 };
        let d = vote(&[(&near, known.clone()), (&far, stranger.clone()), (&far, stranger)]).unwrap();
        assert_eq!((d.result, d.name.as_deref()), (RingResult::Known, Some("ann")));
        assert!((d.confidence.unwrap() - 0.9).abs() < 1e-6);
        let blocked = Verdict::Person { name: "bob".into(), list: List::Blocked, confidence: 0.7 };
        let d = vote(&[(&near, known), (&near, blocked)]).unwrap();
        assert_eq!(d.result, RingResult::Blocked, "a tie goes to the blocklist");
        assert_eq!(vote(&[]), None);
    }
}
