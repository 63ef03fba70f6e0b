//! Generates the tonic/prost code for every `.proto` under `proto/`.
//! protoc comes from `protoc-bin-vendored`, so no system package is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let files = [
        "proto/common.proto",
        "proto/meta.proto",
        "proto/metashard.proto",
        "proto/pd.proto",
        "proto/datanode.proto",
    ];
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&files, &["proto"])?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
