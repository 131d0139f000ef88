//! Generate the gRPC server code of the native API from `proto/roster/v1/*.proto`, with the
//! vendored `protoc` (no system protoc needed), and a file descriptor set for server reflection;
//! and the Nacos 2.x `Request` / `BiRequestStream` services from `proto/nacos/`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "../proto/roster/v1/lease.proto",
    "../proto/roster/v1/registry.proto",
    "../proto/roster/v1/config.proto",
    "../proto/roster/v1/lock.proto",
    "../proto/roster/v1/watch.proto",
];

const NACOS_PROTO: &str = "../proto/nacos/nacos_grpc_service.proto";

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

    // Nacos 2.x: no package (the service paths are the wire), compiled apart from roster.v1.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &[NACOS_PROTO], &["../proto"])?;
    println!("cargo:rerun-if-changed={NACOS_PROTO}");
    Ok(())
}
