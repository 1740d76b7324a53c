//! Generates the envd types from `descriptors/envd.fds` (extracted from
//! the published e2b SDK by `descriptors/extract.py`): prost for the
//! binary encoding, pbjson for the proto3 JSON mapping Connect's JSON
//! codec uses. No protoc: the descriptors are already compiled.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = "descriptors/envd.fds";
    println!("cargo:rerun-if-changed={path}");
    let bytes = std::fs::read(path)?;
    let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    prost_build::Config::new()
        .out_dir(&out)
        // Timestamps as pbjson's (they have the JSON mapping).
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    // prost writes `google.protobuf.rs` for the imported descriptor too;
    // the types come from pbjson_types.
    pbjson_build::Builder::new()
        .out_dir(&out)
        .register_descriptors(&bytes)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".process", ".filesystem"])?;
    Ok(())
}
