//! Update artifacts, as the agent stages them and slotctl re-verifies them (a download, or
//! a file an operator names): the header (magic, manifest length, manifest, signature),
//! the signature check with a configured key, then the manifest JSON, its version and
//! target, and the ELF header of the binary.
//!
//! Forged signatures never pass, so the fuzzer would never get past them: every manifest is
//! also signed here with the harness's own key and verified again, which reaches the
//! manifest parser as an artifact signed by the fleet's real key would. Nothing behind the
//! manifest (the zstd payload) is reached without a signature over its sha256.
//!
//! Input: a whole artifact; one without the magic is taken as a bare manifest.

use doorbell_artifact::{self as artifact, SecretKey, MAGIC, MAX_MANIFEST};

fn main() {
    let key = SecretKey::from_seed([7; 32]);
    let public = key.public();
    afl::fuzz!(|data: &[u8]| {
        let manifest = match artifact::read_header(&mut &data[..]) {
            Ok(header) => {
                if let Err(e) = artifact::verify_manifest(&header.manifest_bytes, &header.signature, Some(&public)) {
                    let _ = (e.code(), e.to_string());
                }
                let _ = artifact::check_elf(data.get(header.payload_offset as usize..).unwrap_or_default());
                header.manifest_bytes
            }
            Err(e) => {
                let _ = (e.code(), e.to_string());
                if data.starts_with(MAGIC) {
                    return;
                }
                data.to_vec()
            }
        };
        if manifest.is_empty() || manifest.len() > MAX_MANIFEST {
            return;
        }
        match artifact::verify_manifest(&manifest, &key.sign(&manifest), Some(&public)) {
            Ok(m) => {
                let _ = artifact::compare_versions(&m.version, doorbell_agent::VERSION);
            }
            Err(e) => {
                let _ = (e.code(), e.to_string());
            }
        }
    });
}
