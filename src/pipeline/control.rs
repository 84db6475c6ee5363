//! The typed API of the pipeline's owner (the ring thread) for everything that is not a
//! ring: enrolling, removing and listing people, operator feedback, gallery export/import.
//!
//! Callers (fleet commands, the local control socket) hold a `FacesHandle`; each call is a
//! message on a bounded channel with a reply channel, answered between rings. The handle
//! is async so callers on the runtime never block.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Control messages waiting for the ring thread.
pub const QUEUE: usize = 8;

/// Which list a person is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    /// Family, friends: rings become `known`.
    Known,
    /// Rings become `blocked` and raise a critical alert.
    Blocked,
}

impl List {
    /// Name used in payloads and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            List::Known => "known",
            List::Blocked => "blocked",
        }
    }
}

/// A person in the gallery, as callers see them (no descriptors).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Person {
    /// Unique name.
    pub name: String,
    /// Their list.
    pub list: List,
    /// Descriptors kept for them.
    pub samples: usize,
    /// First enrolled, Unix ms.
    pub enrolled_ms: u64,
    /// Last changed, Unix ms.
    pub updated_ms: u64,
}

/// Where the face to enroll comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum EnrollFrom {
    /// JPEG images, each showing the person's face (the largest face is taken).
    Jpegs(Vec<Vec<u8>>),
    /// The kept frames of a ring (needs `snapshots.keep`).
    Ring(String),
}

/// Rolling recognition accuracy from operator feedback.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    /// Share of correct results over the window (None before any feedback).
    pub accuracy: Option<f64>,
    /// Feedbacks in the window.
    pub samples: usize,
}

/// An exported gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The versioned, checksummed file.
    pub file: Vec<u8>,
    /// People in it.
    pub people: usize,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Imported {
    /// People added.
    pub added: usize,
    /// People replaced by the file's version.
    pub replaced: usize,
    /// Device the file was exported from.
    pub from_device: String,
}

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request itself is wrong (name, image, file).
    #[error("{0}")]
    BadRequest(String),
    /// No such person or ring.
    #[error("{0}")]
    NotFound(String),
    /// Recognition cannot run now (worker down, models missing, not built in).
    #[error("{0}")]
    Unavailable(String),
    /// The store could not be written; nothing was changed.
    #[error("store: {0}")]
    Store(String),
    /// The pipeline is not taking requests (queue full or shutting down).
    #[error("the face pipeline is busy or stopping; try again")]
    Busy,
}

/// A reply channel.
pub type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// One request to the pipeline owner.
#[derive(Debug)]
pub enum Control {
    /// Adds a person, or another sample of them.
    Enroll {
        /// Their name (1-64 printable characters).
        name: String,
        /// Their list.
        list: List,
        /// The face.
        from: EnrollFrom,
        /// Answer.
        reply: Reply<Person>,
    },
    /// Removes a person and their descriptors.
    Remove {
        /// Their name.
        name: String,
        /// Answer.
        reply: Reply<Person>,
    },
    /// Everyone in the gallery.
    List {
        /// Answer.
        reply: Reply<Vec<Person>>,
    },
    /// An operator says a ring's result was right or wrong.
    Feedback {
        /// The ring's id.
        ring_id: String,
        /// Was it right?
        correct: bool,
        /// Answer: the accuracy after this feedback.
        reply: Reply<Accuracy>,
    },
    /// The whole gallery as a versioned, checksummed file.
    Export {
        /// Answer: the file.
        reply: Reply<Exported>,
    },
    /// Restores people from an exported file (same-named people are replaced).
    Import {
        /// The file's bytes.
        bytes: Vec<u8>,
        /// Answer.
        reply: Reply<Imported>,
    },
}

/// Cloneable async front of the control channel.
#[derive(Debug, Clone)]
pub struct FacesHandle(mpsc::Sender<Control>);

impl FacesHandle {
    /// A handle and the receiver the ring thread serves.
    pub fn channel() -> (FacesHandle, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (FacesHandle(tx), rx)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Control) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.0.try_send(make(tx)).map_err(|_| ControlError::Busy)?;
        rx.await.map_err(|_| ControlError::Busy)?
    }

    /// Enrolls `name` on `list` from `from`.
    pub async fn enroll(&self, name: String, list: List, from: EnrollFrom) -> Result<Person, ControlError> {
        self.call(|reply| Control::Enroll { name, list, from, reply }).await
    }

    /// Removes `name`.
    pub async fn remove(&self, name: String) -> Result<Person, ControlError> {
        self.call(|reply| Control::Remove { name, reply }).await
    }

    /// Lists the gallery.
    pub async fn list(&self) -> Result<Vec<Person>, ControlError> {
        self.call(|reply| Control::List { reply }).await
    }

    /// Records operator feedback on a ring.
    pub async fn feedback(&self, ring_id: String, correct: bool) -> Result<Accuracy, ControlError> {
        self.call(|reply| Control::Feedback { ring_id, correct, reply }).await
    }

    /// Exports the gallery.
    pub async fn export(&self) -> Result<Exported, ControlError> {
        self.call(|reply| Control::Export { reply }).await
    }

    /// Imports a gallery file.
    pub async fn import(&self, bytes: Vec<u8>) -> Result<Imported, ControlError> {
        self.call(|reply| Control::Import { bytes, reply }).await
    }
}
