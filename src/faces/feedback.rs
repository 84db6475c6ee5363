//! Operator feedback on ring results and the rolling recognition accuracy it gives, kept in
//! the `faces` tree so the accuracy survives restarts.

use std::collections::VecDeque;

use super::gallery::{FaceRecord, FeedbackV1};
use crate::pipeline::control::{Accuracy, ControlError};
use crate::store::{self, Store};

const PREFIX: &[u8] = b"f/";

/// The last `window` feedbacks.
pub struct Feedback {
    store: Store,
    window: usize,
    recent: VecDeque<(Vec<u8>, FeedbackV1)>,
}

impl Feedback {
    /// Loads the stored window.
    pub fn open(store: Store, tree: Option<&sled::Tree>, window: usize) -> Feedback {
        let recent = tree
            .into_iter()
            .flat_map(|t| t.scan_prefix(PREFIX))
            .filter_map(Result::ok)
            .filter_map(|(k, v)| match store::decode::<FaceRecord>(&v) {
                Ok(FaceRecord::FeedbackV1(f)) => Some((k.to_vec(), f)),
                _ => None,
            })
            .collect::<VecDeque<_>>();
        let mut feedback = Feedback { store, window, recent };
        while feedback.recent.len() > window {
            feedback.recent.pop_front();
        }
        feedback
    }

    /// Records a verdict on `ring_id` durably, dropping the oldest beyond the window.
    pub fn record(&mut self, ring_id: &str, correct: bool) -> Result<Accuracy, ControlError> {
        if !self.store.rings(usize::MAX).iter().any(|r| r.id == ring_id) {
            return Err(ControlError::NotFound(format!("no stored ring with id {ring_id:?}")));
        }
        let entry = FeedbackV1 { ring_id: ring_id.into(), correct, ts_ms: doorbell_base::time::now_ms() };
        let seq = self.recent.back().map_or(0, |(k, _)| key_seq(k) + 1);
        let key = [PREFIX, &seq.to_be_bytes()].concat();
        let drop_keys: Vec<Vec<u8>> =
            self.recent.iter().take((self.recent.len() + 1).saturating_sub(self.window)).map(|(k, _)| k.clone()).collect();
        let tree = self.store.tree(super::TREE).map_err(|e| ControlError::Store(e.to_string()))?;
        let (record, written_key, dropped) = (store::encode(&FaceRecord::FeedbackV1(entry.clone())), key.clone(), drop_keys.clone());
        self.store
            .write(move || {
                tree.insert(written_key, record)?;
                for k in dropped {
                    tree.remove(k)?;
                }
                tree.flush().map(drop)
            })
            .map_err(|e| ControlError::Store(e.to_string()))?;
        self.recent.drain(..drop_keys.len());
        self.recent.push_back((key, entry));
        Ok(self.accuracy())
    }

    /// Share of correct verdicts in the window.
    pub fn accuracy(&self) -> Accuracy {
        let samples = self.recent.len();
        let correct = self.recent.iter().filter(|(_, f)| f.correct).count();
        Accuracy { accuracy: (samples > 0).then(|| correct as f64 / samples as f64), samples }
    }
}

fn key_seq(key: &[u8]) -> u64 {
    key.get(PREFIX.len()..).and_then(|k| k.try_into().ok()).map_or(0, u64::from_be_bytes)
}
