//! Generates Rust types for Istio's workload API from our own `.proto` text (messages only:
//! the transport is Envoy's ADS, whose service definitions come from `envoy-types`), and
//! Istio's certificate service (messages, client and server).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/workload.proto", "proto/authorization.proto"];
    let services = ["proto/ca.proto"];
    for proto in protos.iter().chain(&services) {
        println!("cargo:rerun-if-changed={proto}");
    }

    let mut config = tonic_prost_build::Config::new();
    // `prost::Name` impls give every message its xDS type URL
    // ("type.googleapis.com/istio.workload.Address"), so callers can pack them into `Any`
    // without spelling the URL by hand.
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");

    tonic_prost_build::configure().build_client(false).build_server(false).compile_with_config(
        config,
        &protos,
        &["proto"],
    )?;
    // The CA is a plain unary gRPC service: tonic's generated client and server suit it.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&services, &["proto"])?;
    Ok(())
}
