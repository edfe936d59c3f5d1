//! Compiles `proto/medusa.proto` with protox (no protoc needed) into the tonic server and client.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let proto = proto_dir.join("medusa.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&proto_dir])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("medusa_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Written by hand so that the server encodes it one summary at a time (see the module).
        .extern_path(".GetBackupsResponse", "crate::service::reply::GetBackupsResponse")
        .compile_fds(fds)?;
    Ok(())
}
