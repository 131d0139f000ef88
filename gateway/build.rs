//! Generate the gRPC server code of the native API from `proto/roster/v1/*.proto`, with the
//! vendored `protoc` (no system protoc needed), and a file descriptor set for server reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "../proto/roster/v1/lease.proto",
    "../proto/roster/v1/registry.proto",
    "../proto/roster/v1/config.proto",
    "../proto/roster/v1/lock.proto",
    "../proto/roster/v1/watch.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .btree_map(".")
        .file_descriptor_set_path(out.join("roster_v1_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["../proto"])?;
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
