//! Kubernetes core kinds. The API server has validated objects that come from it; these
//! checks matter for the file source, where a test bed writes Pods by hand.

use super::Report;
use super::names::validate_port;
use crate::config::kinds::{ConfigObject, Pod};
use std::net::IpAddr;

pub(super) fn validate_pod(pod: &Pod, r: &mut Report) {
    if let Some(ip) = &pod.status.pod_ip
        && !ip.is_empty()
        && ip.parse::<IpAddr>().is_err()
    {
        r.error("status.podIP", format!("{ip:?} is not an IP address"));
    }
    for (i, p) in pod.status.pod_ips.iter().enumerate() {
        if p.ip.parse::<IpAddr>().is_err() {
            r.error(format!("status.podIPs[{i}].ip"), format!("{:?} is not an IP address", p.ip));
        }
    }
    for (i, c) in pod.spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().enumerate() {
            r.check(
                format!("spec.containers[{i}].ports[{j}].containerPort"),
                validate_port(i64::from(p.container_port)),
            );
        }
    }
}

pub(super) fn validate_other(object: &ConfigObject, r: &mut Report) {
    if let ConfigObject::Service(svc) = object {
        for (i, p) in svc.spec.ports.iter().enumerate() {
            r.check(format!("spec.ports[{i}].port"), validate_port(i64::from(p.port)));
        }
    }
}
