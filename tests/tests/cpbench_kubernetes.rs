//! The control plane benchmark's harness at a small scale, both modes, so a broken harness
//! fails here rather than in a long benchmark run: the in-process side and the weftd binary
//! on the fake API server serve every address to every subscriber, and every endpoint
//! change reaches all of them. Nothing is timed. Loopback only, no root.

use std::time::Duration;
use weft_tests::{
    bins,
    cpbench::{self, MeshSpec, Settings},
};

#[test]
fn both_modes_serve_the_mesh_and_every_change_to_every_subscriber() {
    let mesh =
        MeshSpec { services: 20, endpoints: 3, nodes: 5, namespaces: 4, ambient_namespaces: 2, routed: 4 };
    let settings = Settings {
        mesh: mesh.clone(),
        subscribers: vec![5],
        changes: 3,
        debounce: Duration::from_millis(10),
        connect_batch: 5,
        mem_reserve_mib: 0,
        connect_budget: Duration::from_secs(150),
        no_shrink: true,
        exe: bins::path("weft-cp-bench"),
        weftd: Some(bins::path("weftd")),
    };
    let report = cpbench::run(&settings).expect("the benchmark harness runs");

    let kube = report.kubernetes.as_ref().expect("the Kubernetes mode ran");
    assert_eq!(kube.ready.addresses, mesh.addresses(), "weftd served the whole mesh from the API server");
    assert_eq!(kube.ready.objects, cpbench::mesh(&mesh).len());
    for (mode, phase) in [("in process", &report.phases[0]), ("Kubernetes", &kube.phases[0])] {
        assert_eq!(phase.connected, 5, "{mode}: every subscriber connected");
        assert_eq!(phase.addresses, mesh.addresses(), "{mode}: every subscriber holds every address");
        assert_eq!(phase.missed, 0, "{mode}: every change reached every subscriber");
        assert_eq!(phase.end_to_end_ms.len(), 5 * 3, "{mode}: one latency per subscriber and change");
        assert!(phase.connected_usage.peak_rss_mib > 0.0, "{mode}: weftd's memory was read");
    }
    let table = report.table();
    assert!(table.contains("| metric | in process | Kubernetes mode | ratio |"), "{table}");
    assert!(table.contains("the fake API server alone"), "{table}");
}
