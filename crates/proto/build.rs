//! Generates the tonic services and prost messages from proto/*.proto. Needs `protoc`
//! (Debian's protobuf-compiler, installed by scripts/test and scripts/demo).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mesh.proto",
        "proto/pubapi.proto",
        "proto/vpnapi.proto",
        "proto/adminapi.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    // Files travel to every node of a run: `Bytes` lets one buffer serve them all.
    tonic_prost_build::configure()
        .bytes(".")
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
