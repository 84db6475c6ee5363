//! Passes the target triple to the code (update artifacts name the target they were built
//! for, and the device refuses one built for another), and packs the binaries' relocations.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=DOORBELL_TARGET={target}");
    // DT_RELR: the relative relocations of the position-independent binaries packed into a
    // bitmap, ~150 KiB less binary and fewer pages dirtied at start. Needs glibc >= 2.36 on
    // the device (Raspberry Pi OS bookworm, which install.sh checks for) and binutils >= 2.38
    // to link (older linkers ignore it with a warning). Link-time only: no dependency rebuilds.
    if target.ends_with("-linux-gnu") || target.ends_with("-linux-gnueabihf") {
        println!("cargo:rustc-link-arg=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
