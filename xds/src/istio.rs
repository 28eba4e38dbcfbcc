//! Istio's workload discovery API, generated at build time from `xds/proto/*.proto`.
//!
//! The messages implement [`prost::Name`], so `Any` envelopes can be built with
//! [`pack`] and opened with [`unpack`] without spelling type URLs by hand.

/// `istio.workload`: [`workload::Address`] (a [`workload::Workload`] or a
/// [`workload::Service`]) and the messages they are made of.
pub mod workload {
    include!(concat!(env!("OUT_DIR"), "/istio.workload.rs"));
}

/// `istio.security`: [`security::Authorization`], the L4 subset of an AuthorizationPolicy.
pub mod security {
    include!(concat!(env!("OUT_DIR"), "/istio.security.rs"));
}

use crate::Any;

/// Wraps a message in an xDS `Any` with its type URL.
pub fn pack<M: prost::Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

/// Opens an xDS `Any`, checking that it holds an `M`.
pub fn unpack<M: prost::Name + Default>(any: &Any) -> Result<M, UnpackError> {
    let expected = M::type_url();
    if any.type_url != expected {
        return Err(UnpackError::WrongType { expected, found: any.type_url.clone() });
    }
    M::decode(any.value.as_slice()).map_err(|source| UnpackError::Decode { type_url: expected, source })
}

/// Why an `Any` could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The envelope holds another message type than the caller asked for.
    #[error("resource has type {found}, expected {expected}: is it listed under the right type URL?")]
    WrongType {
        /// The type URL the caller asked for.
        expected: String,
        /// The type URL in the envelope.
        found: String,
    },
    /// The bytes are not a valid encoding of the message.
    #[error("cannot decode {type_url}: {source}")]
    Decode {
        /// The message type being decoded.
        type_url: String,
        /// The protobuf decoding error.
        #[source]
        source: prost::DecodeError,
    },
}

/// Name of the `istio.workload.Extension` on a Workload that carries the pod's
/// Kubernetes `metadata.uid` (as a `google.protobuf.StringValue`). Istio's workload `uid`
/// field is a different thing (`cluster//Pod/namespace/name`); the agent needs the
/// Kubernetes UID to bind the pod to its network namespace (CNI handover, kubelet cgroup).
pub const POD_UID_EXTENSION: &str = "weft.io/pod-uid";

/// The extension weftd puts on a pod's Workload: [`POD_UID_EXTENSION`] holding `uid`.
pub fn pod_uid_extension(uid: &str) -> workload::Extension {
    workload::Extension {
        name: POD_UID_EXTENSION.to_owned(),
        config: Some(prost_types::Any {
            type_url: <String as prost::Name>::type_url(),
            value: prost::Message::encode_to_vec(&uid.to_owned()),
        }),
    }
}

/// The pod's Kubernetes UID from a Workload's [`POD_UID_EXTENSION`], or `None` when the
/// Workload carries none (a control plane that does not send it, or a workload that is
/// not a pod). A malformed extension is an error, not `None`: the caller NACKs rather than
/// silently losing the binding key.
pub fn pod_uid(w: &workload::Workload) -> Result<Option<String>, PodUidError> {
    let mut found = w.extensions.iter().filter(|e| e.name == POD_UID_EXTENSION);
    let Some(ext) = found.next() else { return Ok(None) };
    let extra = found.count();
    if extra > 0 {
        return Err(PodUidError::Repeated { workload: w.uid.clone(), count: extra + 1 });
    }
    let any = ext.config.as_ref().ok_or_else(|| PodUidError::NoConfig { workload: w.uid.clone() })?;
    let expected = <String as prost::Name>::type_url();
    if any.type_url != expected {
        let source = UnpackError::WrongType { expected, found: any.type_url.clone() };
        return Err(PodUidError::Unpack { workload: w.uid.clone(), source });
    }
    <String as prost::Message>::decode(any.value.as_slice()).map(Some).map_err(|source| PodUidError::Unpack {
        workload: w.uid.clone(),
        source: UnpackError::Decode { type_url: expected, source },
    })
}

/// Weft's extension on a pod's Workload with the pod's labels (a `google.protobuf.Struct`
/// of strings): a waypoint matches VirtualService `sourceLabels` against the client's
/// workload, found by its address. Agents and ztunnel ignore it.
pub const POD_LABELS_EXTENSION: &str = "weft.io/pod-labels";

const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

/// The extension weftd puts on a pod's Workload: [`POD_LABELS_EXTENSION`] holding `labels`.
pub fn pod_labels_extension<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> workload::Extension {
    let fields = labels
        .into_iter()
        .map(|(k, v)| {
            (k.clone(), prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(v.clone())) })
        })
        .collect();
    workload::Extension {
        name: POD_LABELS_EXTENSION.to_owned(),
        config: Some(prost_types::Any {
            type_url: STRUCT_TYPE_URL.to_owned(),
            value: prost::Message::encode_to_vec(&prost_types::Struct { fields }),
        }),
    }
}

/// The pod's labels from a Workload's [`POD_LABELS_EXTENSION`], or `None` when it carries
/// none; an extension that is not a Struct of strings is an error naming why.
pub fn pod_labels(
    w: &workload::Workload,
) -> Result<Option<std::collections::BTreeMap<String, String>>, String> {
    let Some(ext) = w.extensions.iter().find(|e| e.name == POD_LABELS_EXTENSION) else { return Ok(None) };
    let any = ext.config.as_ref().ok_or_else(|| format!("extension {POD_LABELS_EXTENSION} has no config"))?;
    let expected = STRUCT_TYPE_URL;
    if any.type_url != expected {
        return Err(format!(
            "extension {POD_LABELS_EXTENSION}: type {:?}, expected {expected:?}",
            any.type_url
        ));
    }
    let s = <prost_types::Struct as prost::Message>::decode(any.value.as_slice())
        .map_err(|e| format!("extension {POD_LABELS_EXTENSION}: {e}"))?;
    s.fields
        .into_iter()
        .map(|(k, v)| match v.kind {
            Some(prost_types::value::Kind::StringValue(v)) => Ok((k, v)),
            _ => Err(format!("extension {POD_LABELS_EXTENSION}: label {k:?} is not a string")),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Why a Workload's [`POD_UID_EXTENSION`] could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodUidError {
    /// The extension is listed more than once, so which UID holds is unclear.
    #[error("workload {workload}: extension {POD_UID_EXTENSION} is listed {count} times; expected once")]
    Repeated {
        /// The Workload's `uid` field.
        workload: String,
        /// How many times it is listed.
        count: usize,
    },
    /// The extension has no `config`.
    #[error("workload {workload}: extension {POD_UID_EXTENSION} has no config (expected a StringValue)")]
    NoConfig {
        /// The Workload's `uid` field.
        workload: String,
    },
    /// The config is not a `google.protobuf.StringValue`.
    #[error("workload {workload}: extension {POD_UID_EXTENSION}: {source}")]
    Unpack {
        /// The Workload's `uid` field.
        workload: String,
        /// What was wrong with the envelope.
        #[source]
        source: UnpackError,
    },
}

#[cfg(test)]
mod tests {
    //! Field numbers are the contract with istiod and ztunnel: these tests decode bytes built
    //! by hand from the numbers in ztunnel's `workload.proto` and `authorization.proto`, so a
    //! renumbering in our `.proto` text fails here.

    use super::security::{self, Authorization, Clause, Match, Rule, StringMatch, string_match};
    use super::workload::{self, Address, GatewayAddress, NetworkAddress, PortList, Workload, address};
    use super::*;
    use prost::Message;

    /// Weft's labels extension survives the wire and is found among the others; a workload
    /// without it has no labels, a malformed one is an error.
    #[test]
    fn pod_labels_round_trip() {
        let labels = std::collections::BTreeMap::from([("app".to_owned(), "productpage".to_owned())]);
        let w = Workload {
            extensions: vec![pod_uid_extension("u-1"), pod_labels_extension(&labels)],
            ..Default::default()
        };
        let w = Workload::decode(w.encode_to_vec().as_slice()).unwrap();
        assert_eq!(pod_labels(&w).unwrap(), Some(labels));
        assert_eq!(pod_uid(&w).unwrap().as_deref(), Some("u-1"));
        assert_eq!(pod_labels(&Workload::default()).unwrap(), None);
        let bad = Workload {
            extensions: vec![workload::Extension { name: POD_LABELS_EXTENSION.into(), config: None }],
            ..Default::default()
        };
        assert!(pod_labels(&bad).unwrap_err().contains("no config"));
    }

    /// Protobuf key byte for a length-delimited field (wire type 2), field numbers < 16.
    fn key_len(field: u32) -> u8 {
        u8::try_from((field << 3) | 2).expect("small field number")
    }

    /// Appends a length-delimited field whose number may need a two-byte varint key.
    fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, out);
        prost::encoding::encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    #[test]
    fn workload_field_numbers_match_istio() {
        // uid = 20, name = 1, namespace = 2, addresses = 3, node = 9, service_account = 7,
        // tunnel_protocol = 5 (varint), hostname = 21.
        let mut bytes = Vec::new();
        put_len(&mut bytes, 20, b"Kubernetes//Pod/ns1/pod-a");
        put_len(&mut bytes, 1, b"pod-a");
        put_len(&mut bytes, 2, b"ns1");
        put_len(&mut bytes, 3, &[10, 0, 0, 7]);
        put_len(&mut bytes, 9, b"node-1");
        put_len(&mut bytes, 7, b"reviews");
        bytes.extend_from_slice(&[5 << 3, 1]); // tunnel_protocol = HBONE
        let wl = Workload::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(wl.uid, "Kubernetes//Pod/ns1/pod-a");
        assert_eq!(wl.name, "pod-a");
        assert_eq!(wl.namespace, "ns1");
        assert_eq!(wl.addresses, vec![vec![10, 0, 0, 7]]);
        assert_eq!(wl.node, "node-1");
        assert_eq!(wl.service_account, "reviews");
        assert_eq!(wl.tunnel_protocol(), workload::TunnelProtocol::Hbone);

        // Address.workload = 1, Address.service = 2.
        let mut addr = Vec::new();
        put_len(&mut addr, 1, &bytes);
        match Address::decode(addr.as_slice()).expect("decodes").r#type {
            Some(address::Type::Workload(w)) => assert_eq!(w, wl),
            other => panic!("expected a workload, got {other:?}"),
        }
    }

    #[test]
    fn service_and_gateway_field_numbers_match_istio() {
        // NetworkAddress { network = 1, address = 2 }
        let mut net_addr = Vec::new();
        put_len(&mut net_addr, 1, b"net1");
        put_len(&mut net_addr, 2, &[10, 96, 0, 1]);
        // GatewayAddress { address = 2, hbone_mtls_port = 3 }
        let mut gw = Vec::new();
        put_len(&mut gw, 2, &net_addr);
        gw.extend_from_slice(&[3 << 3]);
        prost::encoding::encode_varint(15008, &mut gw);
        // Service { name = 1, hostname = 3, addresses = 4, waypoint = 7 }
        let mut svc = Vec::new();
        put_len(&mut svc, 1, b"reviews");
        put_len(&mut svc, 3, b"reviews.bookinfo.svc.cluster.local");
        put_len(&mut svc, 4, &net_addr);
        put_len(&mut svc, 7, &gw);
        let mut addr = vec![key_len(2)];
        prost::encoding::encode_varint(svc.len() as u64, &mut addr);
        addr.extend_from_slice(&svc);

        let Some(address::Type::Service(svc)) = Address::decode(addr.as_slice()).expect("decodes").r#type
        else {
            panic!("expected a service");
        };
        let expected_addr =
            NetworkAddress { network: "net1".into(), address: vec![10, 96, 0, 1], length: None };
        assert_eq!(svc.name, "reviews");
        assert_eq!(svc.hostname, "reviews.bookinfo.svc.cluster.local");
        assert_eq!(svc.addresses, vec![expected_addr.clone()]);
        assert_eq!(
            svc.waypoint,
            Some(GatewayAddress {
                destination: Some(workload::gateway_address::Destination::Address(expected_addr)),
                hbone_mtls_port: 15008,
            })
        );
    }

    #[test]
    fn authorization_field_numbers_match_istio() {
        // StringMatch { prefix = 2 }
        let mut sm = Vec::new();
        put_len(&mut sm, 2, b"cluster.local/ns/a/");
        // Match { principals = 3, destination_ports = 9 (packed) }
        let mut m = Vec::new();
        put_len(&mut m, 3, &sm);
        put_len(&mut m, 9, &[80, 0x90, 0x3f]); // 80, 8080 as packed varints
        // Clause { matches = 2 }, Rule { clauses = 1 }
        let mut clause = Vec::new();
        put_len(&mut clause, 2, &m);
        let mut rule = Vec::new();
        put_len(&mut rule, 1, &clause);
        // Authorization { name = 1, namespace = 2, scope = 3, action = 4, rules = 5 }
        let mut authz = Vec::new();
        put_len(&mut authz, 1, b"allow-a");
        put_len(&mut authz, 2, b"ns1");
        authz.extend_from_slice(&[3 << 3, 1, 4 << 3, 1]); // scope NAMESPACE, action DENY
        put_len(&mut authz, 5, &rule);

        let got = Authorization::decode(authz.as_slice()).expect("decodes");
        let want = Authorization {
            name: "allow-a".into(),
            namespace: "ns1".into(),
            scope: security::Scope::Namespace as i32,
            action: security::Action::Deny as i32,
            rules: vec![Rule {
                clauses: vec![Clause {
                    matches: vec![Match {
                        principals: vec![StringMatch {
                            match_type: Some(string_match::MatchType::Prefix("cluster.local/ns/a/".into())),
                        }],
                        destination_ports: vec![80, 8080],
                        ..Default::default()
                    }],
                }],
            }],
            ..Default::default()
        };
        assert_eq!(got, want);
        // And back: our encoding is byte-for-byte what we built by hand.
        assert_eq!(want.encode_to_vec(), authz);
    }

    #[test]
    fn authorization_fields_added_upstream_keep_their_numbers() {
        // ServiceAccountMatch { namespace = 1, serviceAccount = 2 }
        let mut sa = Vec::new();
        put_len(&mut sa, 1, b"ns1");
        put_len(&mut sa, 2, b"reviews");
        // Match { service_accounts = 11, not_service_accounts = 12 }
        let mut m = Vec::new();
        put_len(&mut m, 11, &sa);
        put_len(&mut m, 12, &sa);
        let mut clause = Vec::new();
        put_len(&mut clause, 2, &m);
        let mut rule = Vec::new();
        put_len(&mut rule, 1, &clause);
        // Authorization { action = 4 (AUDIT = 2, Weft's), rules = 5, dry_run = 6 }
        let mut authz = vec![4 << 3, 2];
        put_len(&mut authz, 5, &rule);
        authz.extend_from_slice(&[6 << 3, 1]);

        let got = Authorization::decode(authz.as_slice()).expect("decodes");
        assert_eq!(got.action(), security::Action::Audit);
        assert!(got.dry_run);
        let want_sa =
            security::ServiceAccountMatch { namespace: "ns1".into(), service_account: "reviews".into() };
        let m = &got.rules[0].clauses[0].matches[0];
        assert_eq!(
            (&m.service_accounts[..], &m.not_service_accounts[..]),
            (&[want_sa.clone()][..], &[want_sa][..])
        );
        assert_eq!(got.encode_to_vec(), authz);
    }

    #[test]
    fn workload_round_trips_through_any() {
        let wl = Workload {
            uid: "c1//Pod/ns/p".into(),
            name: "p".into(),
            namespace: "ns".into(),
            addresses: vec![vec![10, 0, 0, 1]],
            services: [(
                "ns/svc.ns.svc.cluster.local".to_string(),
                PortList { ports: vec![workload::Port { service_port: 80, target_port: 8080 }] },
            )]
            .into(),
            capacity: Some(3),
            ..Default::default()
        };
        let any = pack(&Address { r#type: Some(address::Type::Workload(wl.clone())) });
        assert_eq!(any.type_url, crate::type_url::ADDRESS);
        let back: Address = unpack(&any).expect("unpacks");
        assert_eq!(back.r#type, Some(address::Type::Workload(wl)));
        assert!(matches!(unpack::<Authorization>(&any), Err(UnpackError::WrongType { .. })));
        assert_eq!(<Authorization as prost::Name>::type_url(), crate::type_url::AUTHORIZATION);
    }

    #[test]
    fn pod_uid_round_trips_through_its_extension() {
        let uid = "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10";
        let mut w = Workload { uid: "c1//Pod/ns/a".into(), ..Default::default() };
        assert_eq!(pod_uid(&w).unwrap(), None, "no extension: no UID");
        w.extensions.push(workload::Extension { name: "other".into(), config: None });
        w.extensions.push(pod_uid_extension(uid));
        // On the wire: the StringValue's field 1 holds the UID bytes.
        let ext = &w.extensions[1];
        let value = &ext.config.as_ref().unwrap().value;
        assert_eq!(value[0], key_len(1));
        assert_eq!(&value[2..], uid.as_bytes());
        assert_eq!(ext.config.as_ref().unwrap().type_url, "type.googleapis.com/google.protobuf.StringValue");
        let decoded = Workload::decode(w.encode_to_vec().as_slice()).unwrap();
        assert_eq!(pod_uid(&decoded).unwrap().as_deref(), Some(uid));

        let mut twice = w.clone();
        twice.extensions.push(pod_uid_extension(uid));
        assert!(matches!(pod_uid(&twice), Err(PodUidError::Repeated { count: 2, .. })));
        let mut wrong_type = w.clone();
        wrong_type.extensions[1].config.as_mut().unwrap().type_url =
            "type.googleapis.com/google.protobuf.UInt32Value".into();
        let err = pod_uid(&wrong_type).unwrap_err();
        assert!(err.to_string().contains("c1//Pod/ns/a") && err.to_string().contains("UInt32Value"), "{err}");
        let mut empty = w;
        empty.extensions[1].config = None;
        assert!(matches!(pod_uid(&empty), Err(PodUidError::NoConfig { .. })));
    }
}
