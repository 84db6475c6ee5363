//! Passes the target triple to the code: an artifact names the target it was built for, and
//! a device refuses one built for another.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=DOORBELL_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
