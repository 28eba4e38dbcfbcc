//! Generates Rust types for Istio's workload API from our own `.proto` text (messages only:
//! the transport is Envoy's ADS, whose service definitions come from `envoy-types`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/workload.proto", "proto/authorization.proto"];
    for proto in protos {
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
    Ok(())
}
