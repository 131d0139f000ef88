//! Generate gRPC *client* stubs of the native API from `proto/roster/v1/*.proto` with the
//! vendored `protoc` (as `gateway/build.rs` generates the server): the bench speaks the wire
//! contract, never the gateway's code.

const PROTOS: &[&str] = &[
    "../proto/roster/v1/lease.proto",
    "../proto/roster/v1/registry.proto",
    "../proto/roster/v1/config.proto",
    "../proto/roster/v1/lock.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_with_config(config, PROTOS, &["../proto"])?;
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
