//! Stored values (sled trees, and the exported gallery file an operator imports): the
//! envelope `[format][crc32 LE][postcard]`, then postcard into every record enum, then what
//! the agent renders from a decoded value.
//!
//! Input: tried twice. As a whole envelope (the format byte and checksum checks), and as the
//! postcard payload of an envelope with a correct checksum, so the fuzzer reaches the
//! decoders behind the checksum.

use doorbell_agent::store::{self, Record};
use doorbell_agent::update::history::UpdateRecord;

fn envelope(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(1);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode_all(bytes: &[u8]) {
    match store::decode::<Record>(bytes) {
        Ok(Record::RingV1(ring)) => drop(ring.to_json()),
        Ok(Record::AlertV1(alert)) => drop(alert.to_json()),
        Ok(_) => {}
        Err(e) => drop(e.to_string()),
    }
    if let Ok(UpdateRecord::EntryV1(entry)) = store::decode::<UpdateRecord>(bytes) {
        let _ = entry.to_json();
    }
    #[cfg(feature = "faces")]
    {
        use doorbell_agent::faces::gallery::{FaceRecord, GalleryFile};
        let _ = store::decode::<FaceRecord>(bytes);
        let _ = store::decode::<GalleryFile>(bytes);
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        decode_all(data);
        decode_all(&envelope(data));
    });
}
