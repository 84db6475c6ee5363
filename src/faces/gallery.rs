//! The gallery: enrolled people (known list and blocklist) with their descriptors, in the
//! store's `faces` tree, plus the versioned, checksummed export file.
//!
//! Only descriptors are stored, never images. Each person keeps up to
//! `faces.max_samples_per_person` descriptors; matching uses their unit-length mean. Every
//! descriptor belongs to one embedder (`embedder` id): a gallery made by another model is
//! meaningless and is refused on import.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::matcher::{self, Candidate};
use crate::pipeline::control::{ControlError, Imported, List, Person};
use crate::store::{self, DecodeError, Store};

/// Values of the `faces` tree. Append variants only; never reorder or edit one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FaceRecord {
    /// An enrolled person, first version.
    PersonV1(PersonV1),
    /// An operator's verdict on a ring, first version.
    FeedbackV1(FeedbackV1),
}

/// A person as stored (version 1; frozen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonV1 {
    /// Unique name.
    pub name: String,
    /// Known or blocked.
    pub list: List,
    /// The embedder the descriptors come from.
    pub embedder: String,
    /// Unit-length descriptors, oldest first.
    pub samples: Vec<Vec<f32>>,
    /// First enrolled, Unix ms.
    pub enrolled_ms: u64,
    /// Last changed, Unix ms.
    pub updated_ms: u64,
}

/// Operator feedback as stored (version 1; frozen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackV1 {
    /// The ring.
    pub ring_id: String,
    /// Was its result right?
    pub correct: bool,
    /// When, Unix ms.
    pub ts_ms: u64,
}

/// The export file. Append variants only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GalleryFile {
    /// First version.
    V1 {
        /// Always `MAGIC`, so another envelope is not mistaken for a gallery.
        magic: String,
        /// Exporting device.
        device_id: String,
        /// When, Unix ms.
        exported_ms: u64,
        /// Embedder id of every descriptor.
        embedder: String,
        /// Everyone.
        people: Vec<PersonV1>,
    },
}

/// First field of every gallery file.
pub const MAGIC: &str = "doorbell-agent gallery";
const PERSON_PREFIX: &[u8] = b"p/";

struct Entry {
    record: PersonV1,
    aggregate: Vec<f32>,
}

/// The people, in memory, backed by the `faces` tree.
pub struct Gallery {
    store: Store,
    embedder: String,
    dims: usize,
    max_samples: usize,
    max_people: usize,
    people: BTreeMap<String, Entry>,
}

impl Gallery {
    /// Loads everyone from `tree` (none without one: a store that could not open). People
    /// enrolled with another embedder are kept on disk but not matched (counted in the
    /// returned number).
    pub fn open(
        store: Store,
        tree: Option<&sled::Tree>,
        embedder: String,
        dims: usize,
        max_samples: usize,
        max_people: usize,
    ) -> (Gallery, usize) {
        let mut people = BTreeMap::new();
        let mut foreign = 0;
        for (_, v) in tree.into_iter().flat_map(|t| t.scan_prefix(PERSON_PREFIX)).filter_map(Result::ok) {
            match store::decode::<FaceRecord>(&v) {
                Ok(FaceRecord::PersonV1(p)) if p.embedder == embedder => {
                    people.insert(p.name.clone(), Entry { aggregate: matcher::aggregate(&p.samples), record: p });
                }
                Ok(_) => foreign += 1,
                Err(e) => log::warn!("skipping a gallery record: {e}"),
            }
        }
        (Gallery { store, embedder, dims, max_samples, max_people, people }, foreign)
    }

    /// The `faces` tree, for one write.
    fn tree(&self) -> Result<sled::Tree, ControlError> {
        self.store.tree(super::TREE).map_err(|e| ControlError::Store(e.to_string()))
    }

    /// The embedder id descriptors must come from.
    pub fn embedder(&self) -> &str {
        &self.embedder
    }

    /// Everyone, for the matcher.
    pub fn candidates(&self) -> Vec<Candidate<'_>> {
        self.people.values().map(|e| Candidate { name: &e.record.name, list: e.record.list, aggregate: &e.aggregate }).collect()
    }

    /// People per list.
    pub fn size(&self, list: List) -> usize {
        self.people.values().filter(|e| e.record.list == list).count()
    }

    /// Everyone, by name.
    pub fn list(&self) -> Vec<Person> {
        self.people.values().map(|e| summary(&e.record)).collect()
    }

    /// Adds `descriptor` to `name` on `list` (creating them), durably.
    pub fn enroll(&mut self, name: &str, list: List, descriptor: Vec<f32>) -> Result<Person, ControlError> {
        validate_name(name)?;
        self.check_descriptor(&descriptor).map_err(ControlError::BadRequest)?;
        let now = doorbell_base::time::now_ms();
        let mut record = match self.people.get(name) {
            Some(e) if e.record.list != list => {
                return Err(ControlError::BadRequest(format!(
                    "{name} is on the {} list; remove them first to move them to the {} list",
                    e.record.list.as_str(),
                    list.as_str()
                )))
            }
            Some(e) => e.record.clone(),
            None if self.people.len() >= self.max_people => {
                return Err(ControlError::BadRequest(format!("the gallery is full ({} people, faces.max_people)", self.max_people)))
            }
            None => PersonV1 {
                name: name.into(),
                list,
                embedder: self.embedder.clone(),
                samples: Vec::new(),
                enrolled_ms: now,
                updated_ms: now,
            },
        };
        record.samples.push(descriptor);
        let excess = record.samples.len().saturating_sub(self.max_samples);
        record.samples.drain(..excess);
        record.updated_ms = now;
        self.save(&record)?;
        let person = summary(&record);
        self.people.insert(name.into(), Entry { aggregate: matcher::aggregate(&record.samples), record });
        Ok(person)
    }

    /// Removes `name` durably.
    pub fn remove(&mut self, name: &str) -> Result<Person, ControlError> {
        let Some(entry) = self.people.get(name) else { return Err(ControlError::NotFound(format!("nobody named {name:?} is enrolled"))) };
        let person = summary(&entry.record);
        let key = person_key(name);
        let tree = self.tree()?;
        self.store
            .write(move || {
                tree.remove(key)?;
                tree.flush().map(drop)
            })
            .map_err(|e| ControlError::Store(e.to_string()))?;
        self.people.remove(name);
        Ok(person)
    }

    /// The export file: every person, in a CRC'd, versioned envelope.
    pub fn export(&self, device_id: &str) -> Vec<u8> {
        store::encode(&GalleryFile::V1 {
            magic: MAGIC.into(),
            device_id: device_id.into(),
            exported_ms: doorbell_base::time::now_ms(),
            embedder: self.embedder.clone(),
            people: self.people.values().map(|e| e.record.clone()).collect(),
        })
    }

    /// Restores an export file: checks it whole first, then writes everyone (same-named
    /// people are replaced) and flushes once.
    pub fn import(&mut self, bytes: &[u8]) -> Result<Imported, ControlError> {
        let bad = |r: String| ControlError::BadRequest(format!("not a usable gallery file: {r}"));
        let file = store::decode::<GalleryFile>(bytes).map_err(|e| match e {
            DecodeError::Corrupt(why) => bad(format!("damaged ({why})")),
            DecodeError::NewerVersion => bad("written by a newer doorbell-agent, or not a gallery file".into()),
        })?;
        let GalleryFile::V1 { magic, device_id, embedder, people, .. } = file;
        if magic != MAGIC {
            return Err(bad("wrong magic".into()));
        }
        if embedder != self.embedder {
            return Err(bad(format!("its descriptors come from embedder {embedder}, this agent uses {}", self.embedder)));
        }
        let new = people.iter().filter(|p| !self.people.contains_key(&p.name)).count();
        if self.people.len() + new > self.max_people {
            return Err(bad(format!("{} people would exceed faces.max_people ({})", self.people.len() + new, self.max_people)));
        }
        for p in &people {
            validate_name(&p.name)?;
            if p.embedder != embedder || p.samples.is_empty() || p.samples.len() > self.max_samples {
                return Err(bad(format!("person {:?} has {} samples from embedder {}", p.name, p.samples.len(), p.embedder)));
            }
            for s in &p.samples {
                self.check_descriptor(s).map_err(|r| bad(format!("person {:?}: {r}", p.name)))?;
            }
        }
        let tree = self.tree()?;
        let records: Vec<_> = people.iter().map(|p| (person_key(&p.name), store::encode(&FaceRecord::PersonV1(p.clone())))).collect();
        self.store
            .write(move || {
                for (key, record) in records {
                    tree.insert(key, record)?;
                }
                tree.flush().map(drop)
            })
            .map_err(|e| ControlError::Store(e.to_string()))?;
        let replaced = people.len() - new;
        for p in people {
            self.people.insert(p.name.clone(), Entry { aggregate: matcher::aggregate(&p.samples), record: p });
        }
        Ok(Imported { added: new, replaced, from_device: device_id })
    }

    fn save(&self, record: &PersonV1) -> Result<(), ControlError> {
        let value = store::encode(&FaceRecord::PersonV1(record.clone()));
        let (tree, key) = (self.tree()?, person_key(&record.name));
        self.store
            .write(move || {
                tree.insert(key, value)?;
                tree.flush().map(drop)
            })
            .map_err(|e| ControlError::Store(e.to_string()))
    }

    fn check_descriptor(&self, d: &[f32]) -> Result<(), String> {
        let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
        if d.len() != self.dims || !d.iter().all(|v| v.is_finite()) || (norm - 1.0).abs() > 1e-3 {
            return Err(format!("a descriptor must be {} finite values of unit length", self.dims));
        }
        Ok(())
    }
}

fn person_key(name: &str) -> Vec<u8> {
    [PERSON_PREFIX, name.as_bytes()].concat()
}

fn summary(p: &PersonV1) -> Person {
    Person { name: p.name.clone(), list: p.list, samples: p.samples.len(), enrolled_ms: p.enrolled_ms, updated_ms: p.updated_ms }
}

/// A name is 1-64 characters, no control characters, not blank.
pub fn validate_name(name: &str) -> Result<(), ControlError> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ControlError::BadRequest(format!("name {name:?} must be 1 to 64 printable characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn open(dir: &std::path::Path) -> Gallery {
        let (store, _) = Store::open(dir, &crate::config::StoreConfig::default(), Arc::new(crate::metrics::Metrics::default())).unwrap();
        let tree = store.tree(super::super::TREE).unwrap();
        Gallery::open(store, Some(&tree), "test-embedder".into(), 3, 2, 3).0
    }

    fn d(v: [f32; 3]) -> Vec<f32> {
        matcher::aggregate(&[v.to_vec()])
    }

    #[test]
    fn enroll_persists_caps_samples_and_refuses_list_moves() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut g = open(dir.path());
            g.enroll("ann", List::Known, d([1.0, 0.0, 0.0])).unwrap();
            g.enroll("ann", List::Known, d([0.0, 1.0, 0.0])).unwrap();
            assert_eq!(g.enroll("ann", List::Known, d([0.0, 0.0, 1.0])).unwrap().samples, 2, "oldest sample dropped");
            assert!(matches!(g.enroll("ann", List::Blocked, d([1.0, 0.0, 0.0])), Err(ControlError::BadRequest(_))));
            assert!(matches!(g.enroll("bad", List::Known, vec![1.0, 0.0]), Err(ControlError::BadRequest(_))));
            assert!(matches!(g.enroll("", List::Known, d([1.0, 0.0, 0.0])), Err(ControlError::BadRequest(_))));
        }
        let g = open(dir.path());
        assert_eq!(g.list().len(), 1);
        assert_eq!(g.size(List::Known), 1);
    }

    #[test]
    fn export_import_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = open(dir.path());
        g.enroll("ann", List::Known, d([1.0, 0.0, 0.0])).unwrap();
        g.enroll("bob", List::Blocked, d([0.0, 1.0, 0.0])).unwrap();
        let file = g.export("door-1");
        g.remove("ann").unwrap();
        let imported = g.import(&file).unwrap();
        assert_eq!((imported.added, imported.replaced, imported.from_device.as_str()), (1, 1, "door-1"));
        assert_eq!(g.list().len(), 2);
        let mut damaged = file.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(g.import(&damaged).unwrap_err().to_string().contains("damaged"));
        assert!(g.import(b"").is_err());
        let other = store::encode(&GalleryFile::V1 {
            magic: MAGIC.into(),
            device_id: "x".into(),
            exported_ms: 0,
            embedder: "other".into(),
            people: vec![],
        });
        assert!(g.import(&other).unwrap_err().to_string().contains("embedder other"));
    }
}
