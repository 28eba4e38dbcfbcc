//! typed_per_filter_config: the per-route settings of the HTTP filters weft-waypoint runs
//! (fault injection and RBAC), decoded into typed fields. A config for another filter is
//! refused unless it is marked optional (FilterConfig.is_optional), as Envoy refuses a
//! per-route config for a filter it does not know.

use super::{
    error::{FieldError, FieldResult},
    matcher::{Fraction, HeaderMatch},
};
use envoy_types::pb::{
    envoy::{
        config::route::v3::FilterConfig,
        extensions::filters::{
            common::fault::v3::fault_delay,
            http::{
                fault::v3::{HttpFault, fault_abort},
                rbac::v3::RbacPerRoute,
            },
        },
    },
    google::protobuf::Any,
};
use prost::{Message, Name};
use std::{collections::HashMap, sync::Arc, time::Duration};

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const RBAC_FILTER: &str = "envoy.filters.http.rbac";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAbortKind {
    Http(http::StatusCode),
    /// A gRPC status, answered as HTTP 200 with grpc-status.
    Grpc(u32),
}

#[derive(Debug, Clone)]
pub struct Fault {
    /// Fixed delay and the share of requests it applies to (none when unset).
    pub delay: Option<(Duration, Fraction)>,
    pub abort: Option<(FaultAbortKind, Fraction)>,
    /// Faults apply only to requests matching all of these.
    pub headers: Box<[HeaderMatch]>,
    /// At most this many requests faulted at once (None: no limit).
    pub max_active_faults: Option<u32>,
}

/// The RBAC filter's per-route setting.
#[derive(Debug, Clone)]
pub enum RouteRbac {
    /// RBACPerRoute without `rbac`: the filter is off on this route.
    Disabled,
    /// The policy that replaces the listener's for this route: every RBAC filter of the
    /// chain (they share the filter name the config is keyed by) evaluates it instead.
    Override(Arc<crate::rbac::Rbac>),
}

/// The decoded per-filter configs of one level (route or virtual host).
#[derive(Debug, Clone, Default)]
pub struct FilterConfigs {
    pub fault: Option<Arc<Fault>>,
    pub rbac: Option<RouteRbac>,
    /// FilterConfig.disabled for a filter: off on this route.
    pub fault_disabled: bool,
}

fn fraction(
    p: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>,
    field: &str,
) -> FieldResult<Fraction> {
    // No percentage: Envoy's default FractionalPercent, 0 — the fault never fires.
    Fraction::compile(&p.copied().unwrap_or_default()).map_err(|e| e.within(field))
}

fn compile_fault(f: &HttpFault) -> FieldResult<Fault> {
    if f.response_rate_limit.is_some() {
        return Err(FieldError::unsupported("response_rate_limit"));
    }
    if !f.upstream_cluster.is_empty() {
        return Err(FieldError::unsupported("upstream_cluster"));
    }
    if !f.downstream_nodes.is_empty() {
        return Err(FieldError::unsupported("downstream_nodes"));
    }
    let delay = match &f.delay {
        None => None,
        Some(d) => match &d.fault_delay_secifier {
            Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)) => Some((
                super::retry::opt_duration(Some(fixed), "delay.fixed_delay")?.unwrap_or_default(),
                fraction(d.percentage.as_ref(), "delay.percentage")?,
            )),
            Some(fault_delay::FaultDelaySecifier::HeaderDelay(_)) => {
                return Err(FieldError::unsupported("delay.header_delay"));
            }
            None => return Err(FieldError::invalid("delay", "fixed_delay is required")),
        },
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let kind = match &a.error_type {
                Some(fault_abort::ErrorType::HttpStatus(s)) => FaultAbortKind::Http(
                    u16::try_from(*s)
                        .ok()
                        .filter(|s| (200..600).contains(s))
                        .and_then(|s| http::StatusCode::from_u16(s).ok())
                        .ok_or_else(|| {
                            FieldError::invalid("abort.http_status", format!("{s} is not in [200, 600)"))
                        })?,
                ),
                Some(fault_abort::ErrorType::GrpcStatus(s)) => FaultAbortKind::Grpc(*s),
                Some(fault_abort::ErrorType::HeaderAbort(_)) => {
                    return Err(FieldError::unsupported("abort.header_abort"));
                }
                None => return Err(FieldError::invalid("abort", "http_status or grpc_status is required")),
            };
            Some((kind, fraction(a.percentage.as_ref(), "abort.percentage")?))
        }
    };
    let headers = f
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| HeaderMatch::compile(h).map_err(|e| e.within(&format!("headers[{i}]"))))
        .collect::<FieldResult<_>>()?;
    Ok(Fault { delay, abort, headers, max_active_faults: f.max_active_faults.map(|m| m.value) })
}

fn decode<M: Message + Name + Default>(any: &Any, field: &str) -> FieldResult<M> {
    if any.type_url != M::type_url() {
        return Err(FieldError::invalid(
            field,
            format!("type {:?}, expected {:?}", any.type_url, M::type_url()),
        ));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| FieldError::invalid(field, format!("cannot decode {}: {e}", M::full_name())))
}

impl FilterConfigs {
    pub(crate) fn compile(configs: &HashMap<String, Any>) -> FieldResult<FilterConfigs> {
        let mut out = FilterConfigs::default();
        // Sorted, so that the error for a config with several bad entries is stable.
        let mut names: Vec<&String> = configs.keys().collect();
        names.sort();
        for name in names {
            let field = format!("typed_per_filter_config[{name:?}]");
            let mut any = configs[name].clone();
            let mut optional = false;
            if any.type_url == FilterConfig::type_url() {
                let wrapper: FilterConfig = decode(&any, &field)?;
                optional = wrapper.is_optional;
                if wrapper.disabled {
                    match name.as_str() {
                        FAULT_FILTER => out.fault_disabled = true,
                        RBAC_FILTER => out.rbac = Some(RouteRbac::Disabled),
                        _ if optional => {}
                        _ => return Err(FieldError::unsupported(field)),
                    }
                    continue;
                }
                match wrapper.config {
                    Some(c) => any = c,
                    None => return Err(FieldError::invalid(field, "FilterConfig without config")),
                }
            }
            match name.as_str() {
                FAULT_FILTER => {
                    let f: HttpFault = decode(&any, &field)?;
                    out.fault = Some(Arc::new(compile_fault(&f).map_err(|e| e.within(&field))?));
                }
                RBAC_FILTER => {
                    let r: RbacPerRoute = decode(&any, &field)?;
                    out.rbac = Some(match r.rbac {
                        None => RouteRbac::Disabled,
                        Some(rbac) => {
                            RouteRbac::Override(Arc::new(crate::rbac::Rbac::compile(&rbac).map_err(|e| {
                                FieldError::invalid(format!("{field}.rbac.{}", e.field), e.reason)
                            })?))
                        }
                    });
                }
                _ if optional => {}
                _ => return Err(FieldError::unsupported(field)),
            }
        }
        Ok(out)
    }

    /// The most specific settings: this level's, else the parent's (route over virtual
    /// host, as Envoy's `mostSpecificPerFilterConfig`).
    pub(crate) fn or(&self, parent: &FilterConfigs) -> FilterConfigs {
        FilterConfigs {
            fault: if self.fault_disabled {
                None
            } else {
                self.fault.clone().or_else(|| parent.fault.clone())
            },
            fault_disabled: self.fault_disabled || (self.fault.is_none() && parent.fault_disabled),
            rbac: self.rbac.clone().or_else(|| parent.rbac.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::{
        extensions::filters::{common::fault::v3::FaultDelay, http::fault::v3::FaultAbort},
        r#type::v3::{FractionalPercent, fractional_percent::DenominatorType},
    };

    fn pack<M: Message + Name>(m: &M) -> Any {
        Any { type_url: M::type_url(), value: m.encode_to_vec() }
    }

    /// HTTPFault: fixed delay and percentage, HTTP and gRPC aborts; an abort without a
    /// percentage never fires (FractionalPercent's default is 0).
    #[test]
    fn fault_compiles_to_typed_fields() {
        let fault = HttpFault {
            delay: Some(FaultDelay {
                percentage: Some(FractionalPercent {
                    numerator: 50,
                    denominator: DenominatorType::Hundred as i32,
                }),
                fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(
                    envoy_types::pb::google::protobuf::Duration { seconds: 2, nanos: 0 },
                )),
            }),
            abort: Some(FaultAbort {
                error_type: Some(fault_abort::ErrorType::GrpcStatus(14)),
                ..Default::default()
            }),
            max_active_faults: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 3 }),
            ..Default::default()
        };
        let cfg = FilterConfigs::compile(&HashMap::from([(FAULT_FILTER.to_owned(), pack(&fault))])).unwrap();
        let f = cfg.fault.unwrap();
        assert_eq!(f.delay, Some((Duration::from_secs(2), Fraction { numerator: 50, denominator: 100 })));
        let (kind, pct) = f.abort.unwrap();
        assert_eq!(kind, FaultAbortKind::Grpc(14));
        assert!(!pct.sample(0), "no percentage: never");
        assert_eq!(f.max_active_faults, Some(3));
    }

    /// RBACPerRoute without rbac disables the filter; unknown filters are refused unless
    /// FilterConfig.is_optional.
    #[test]
    fn rbac_and_unknown_filters() {
        let cfg = FilterConfigs::compile(&HashMap::from([(
            RBAC_FILTER.to_owned(),
            pack(&RbacPerRoute::default()),
        )]))
        .unwrap();
        assert!(matches!(cfg.rbac, Some(RouteRbac::Disabled)));
        let other = Any { type_url: "type.googleapis.com/x.Y".into(), value: vec![] };
        let err =
            FilterConfigs::compile(&HashMap::from([("envoy.filters.http.cors".to_owned(), other.clone())]))
                .unwrap_err();
        assert!(err.field.contains("envoy.filters.http.cors"));
        let optional = FilterConfig { config: Some(other), is_optional: true, disabled: false };
        FilterConfigs::compile(&HashMap::from([("envoy.filters.http.cors".to_owned(), pack(&optional))]))
            .unwrap();
    }
}
