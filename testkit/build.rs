//! Builds the fake NVML library (c/fake_nvml.c) as a shared object with the system C
//! compiler, found through the `cc` crate, and tells the crate where it is.

#![allow(clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=c/fake_nvml.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let lib = out.join("libfake_nvml.so");
    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o"])
        .arg(&lib)
        .arg("c/fake_nvml.c")
        .arg("-ldl")
        .status()
        .expect("run the C compiler for the fake NVML library");
    assert!(status.success(), "the C compiler failed on c/fake_nvml.c");
    println!("cargo:rustc-env=FAKE_NVML_LIB={}", lib.display());
}
