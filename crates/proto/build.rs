//! Generates the tonic services and prost messages from proto/*.proto. Needs `protoc`
//! (Debian's protobuf-compiler, installed by scripts/test and scripts/demo).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/common.proto",
        "proto/pubapi.proto",
        "proto/vpnapi.proto",
        "proto/adminapi.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    Ok(())
}
