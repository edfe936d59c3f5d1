//! Compiles `proto/medusa.proto` (the package-less `Medusa` service) and `proto/medusa_rs.proto`
//! (the `medusa_rs.v1` extensions) with protox (no protoc needed) into tonic servers and clients.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let protos = [proto_dir.join("medusa.proto"), proto_dir.join("medusa_rs.proto")];
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let fds = protox::compile(&protos, [&proto_dir])?;
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
