//! Packs the binaries' relocations and keeps the pipeline worker's code apart from the
//! agent's.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    // DT_RELR: the relative relocations of the position-independent binaries packed into a
    // bitmap, ~150 KiB less binary and fewer pages dirtied at start. Needs glibc >= 2.36 on
    // the device (Raspberry Pi OS bookworm, which install.sh checks for) and binutils >= 2.38
    // to link (older linkers ignore it with a warning). Link-time only: no dependency rebuilds.
    if target.ends_with("-linux-gnu") || target.ends_with("-linux-gnueabihf") {
        println!("cargo:rustc-link-arg=-Wl,-z,pack-relative-relocs");
    }
    // The worker's code in a section of its own, away from the agent's (see the script).
    if std::env::var_os("CARGO_FEATURE_FACES").is_some() && target.contains("-linux-") {
        // Read when the script runs, not baked in when it is compiled: a build script
        // compiled for one checkout must not point another checkout's link at the first.
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let script = std::path::Path::new(&dir).join("link/worker.ld");
        println!("cargo:rustc-link-arg=-Wl,-T,{}", script.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/worker.ld");
}
