//! Compiles `proto/rankline/v1/rankline.proto` with protox (pure Rust), so no
//! system `protoc` is needed to build rankline.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/rankline/v1/rankline.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
