//! End-to-end: labelling a namespace enrolls its pods live, unlabelling releases them,
//! and the applications keep running throughout.

use anyhow::Result;
use std::time::Duration;
use weft_tests::{
    agent::Agent,
    scenario::{self, Scenario},
};

const APP_PORT: u16 = 9080;

#[test]
fn labelling_and_unlabelling_a_namespace_enrolls_and_unenrolls_live() -> Result<()> {
    let mut s = Scenario::new("enroll_live")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "shop", "client")?;
    let server = s.bed.pod(&n2, "shop", "server")?;
    s.config.namespace("shop", false).pod(&client, "shop", &[], &[]).pod(&server, "shop", &[], &[APP_PORT]);
    s.config.write()?;
    let a1 = s.agent(&n1)?;
    let a2 = s.agent(&n2)?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let to = format!("{}:{APP_PORT}", server.ip());
    let opened = |a: &Agent| a.metric("istio_tcp_connections_opened_total", &[("source_workload", "client")]);

    let r = scenario::echo(&client, &to, 65536)?;
    assert!(r.ok(), "{r:?}");
    assert_eq!((opened(&a1)?, opened(&a2)?), (0, 0), "not enrolled yet: direct");

    s.config.namespace("shop", true).write()?;
    a1.wait_enrolled(&["client"], Duration::from_secs(5))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(5))?;
    let r = scenario::echo(&client, &to, 65536)?;
    assert!(r.ok(), "{r:?}");
    assert_eq!((opened(&a1)?, opened(&a2)?), (1, 1), "enrolled: through both agents");

    s.config.namespace("shop", false).write()?;
    a1.wait_enrolled(&[], Duration::from_secs(5))?;
    a2.wait_enrolled(&[], Duration::from_secs(5))?;
    let r = scenario::echo(&client, &to, 65536)?;
    assert!(r.ok(), "unenrolled pods must talk directly again, never into a black hole: {r:?}");
    assert_eq!((opened(&a1)?, opened(&a2)?), (1, 1), "unenrolled: direct again");

    assert_eq!(scenario::accepts(&srv), 3, "the same server process saw all three connections");
    Ok(())
}

#[test]
fn a_pod_can_opt_out_of_an_enrolled_namespace() -> Result<()> {
    let mut s = Scenario::new("enroll_opt_out")?;
    let n1 = s.bed.node("n1")?;
    let inside = s.bed.pod(&n1, "shop", "inside")?;
    let outside = s.bed.pod(&n1, "shop", "outside")?;
    s.config.namespace("shop", true).pod(&inside, "shop", &[], &[APP_PORT]).pod(
        &outside,
        "shop",
        &[("istio.io/dataplane-mode", "none")],
        &[APP_PORT],
    );
    s.config.write()?;
    let a1 = s.agent(&n1)?;
    a1.wait_enrolled(&["inside"], Duration::from_secs(10))?;
    Ok(())
}
