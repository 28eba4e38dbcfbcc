//! One test (or a few) per validation rule, through the public `check`.

use crate::config::{Checked, ConfigObject, Severity, check};
use crate::source::{ObjectKey, Origin, RawObject};

fn raw(yaml: &str) -> RawObject {
    let value: serde_json::Value = serde_yaml::from_str(yaml).expect("test YAML");
    let api_version = value["apiVersion"].as_str().unwrap().to_string();
    let (group, _) = crate::config::kinds::split_api_version(&api_version);
    let kind = value["kind"].as_str().unwrap().to_string();
    let cluster = crate::config::kinds::is_cluster_scoped(group, &kind);
    let key = ObjectKey {
        group: group.to_string(),
        namespace: if cluster {
            None
        } else {
            Some(value["metadata"]["namespace"].as_str().unwrap_or("default").to_string())
        },
        name: value["metadata"]["name"].as_str().unwrap().to_string(),
        kind,
    };
    RawObject::from_value(key, api_version, &value, Origin::File { path: "t.yaml".into(), line: 1 })
}

fn run(yaml: &str) -> Checked {
    check(&raw(yaml))
}

/// Asserts the object is rejected with an error at `field` whose message contains `text`.
#[track_caller]
fn rejects(yaml: &str, field: &str, text: &str) {
    let c = run(yaml);
    assert!(c.object.is_none(), "expected rejection, got object; diagnostics: {:#?}", c.diagnostics);
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error && d.field == field && d.message.contains(text)),
        "no error at {field} containing {text:?}; got:\n{}",
        c.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
    );
}

#[track_caller]
fn accepts(yaml: &str) -> Checked {
    let c = run(yaml);
    assert!(
        c.object.is_some(),
        "expected acceptance; got:\n{}",
        c.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
    );
    c
}

#[track_caller]
fn warns(yaml: &str, field: &str, text: &str) {
    let c = accepts(yaml);
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning && d.field == field && d.message.contains(text)),
        "no warning at {field} containing {text:?}; got: {:#?}",
        c.diagnostics
    );
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

#[test]
fn a_good_virtual_service_is_accepted_in_every_api_version() {
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let y = vs("  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 80\n    - destination: {host: reviews, subset: v2}\n      weight: 20\n    timeout: 1.5s\n").replace("networking.istio.io/v1", &format!("networking.istio.io/{version}"));
        let c = accepts(&y);
        let Some(ConfigObject::VirtualService(v)) = c.object else { panic!() };
        assert_eq!(v.metadata.namespace, "bookinfo");
        assert_eq!(v.spec.http[0].route[1].weight, 20);
        assert_eq!(v.spec.http[0].timeout.unwrap().0, std::time::Duration::from_millis(1500));
    }
}

#[test]
fn unknown_api_version_is_an_error() {
    rejects(
        &vs("  - route:\n    - destination: {host: reviews}\n").replace("/v1\n", "/v2\n"),
        "apiVersion",
        "v1beta1",
    );
}

#[test]
fn negative_weight() {
    rejects(
        &vs(
            "  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 110\n    - destination: {host: reviews, subset: v2}\n      weight: -10\n",
        ),
        "spec.http[0].route[1].weight",
        "weight -10 is negative",
    );
}

#[test]
fn weights_are_relative_but_not_all_zero() {
    accepts(&vs(
        "  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 1\n    - destination: {host: reviews, subset: v2}\n      weight: 3\n",
    ));
    accepts(&vs("  - route:\n    - destination: {host: reviews}\n      weight: 0\n"));
    rejects(
        &vs(
            "  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 0\n    - destination: {host: reviews, subset: v2}\n      weight: 0\n",
        ),
        "spec.http[0].route",
        "total destination weight = 0",
    );
}

#[test]
fn timeouts_must_be_at_least_a_millisecond() {
    rejects(
        &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 0.5ms\n"),
        "spec.http[0].timeout",
        "at least 1ms",
    );
    rejects(
        &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 0s\n"),
        "spec.http[0].timeout",
        "at least 1ms",
    );
    rejects(
        &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 1.5ms\n"),
        "spec.http[0].timeout",
        "ms precision",
    );
    accepts(&vs("  - route:\n    - destination: {host: reviews}\n    timeout: 1ms\n"));
    rejects(
        &vs(
            "  - route:\n    - destination: {host: reviews}\n    retries: {attempts: 3, perTryTimeout: 100us}\n",
        ),
        "spec.http[0].retries.perTryTimeout",
        "at least 1ms",
    );
}

#[test]
fn unparseable_duration_names_the_field() {
    rejects(
        &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 10 seconds\n"),
        "spec.http[0].timeout",
        "invalid duration",
    );
    rejects(
        &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 3x\n"),
        "spec.http[0].timeout",
        "unknown unit",
    );
}

#[test]
fn regexes_must_compile() {
    rejects(
        &vs("  - match:\n    - uri: {regex: \"/api/(v1\"}\n    route:\n    - destination: {host: reviews}\n"),
        "spec.http[0].match[0].uri.regex",
        "does not compile",
    );
    rejects(
        &vs(
            "  - match:\n    - headers: {end-user: {regex: \"a{2,1}\"}}\n    route:\n    - destination: {host: reviews}\n",
        ),
        "spec.http[0].match[0].headers.end-user.regex",
        "does not compile",
    );
    accepts(&vs(
        "  - match:\n    - uri: {regex: \"/api/v[0-9]+/.*\"}\n    route:\n    - destination: {host: reviews}\n",
    ));
}

#[test]
fn string_match_is_a_oneof() {
    rejects(
        &vs(
            "  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: reviews}\n",
        ),
        "spec.http[0].match[0].uri",
        "only one of",
    );
}

#[test]
fn fault_percentages_and_status() {
    rejects(
        &vs(
            "  - fault:\n      abort: {httpStatus: 700, percentage: {value: 10}}\n    route:\n    - destination: {host: reviews}\n",
        ),
        "spec.http[0].fault.abort.httpStatus",
        "not in range 200-599",
    );
    rejects(
        &vs(
            "  - fault:\n      delay: {fixedDelay: 5s, percentage: {value: 150}}\n    route:\n    - destination: {host: reviews}\n",
        ),
        "spec.http[0].fault.delay.percentage.value",
        "percentage 150",
    );
    accepts(&vs(
        "  - fault:\n      abort: {httpStatus: 503, percentage: {value: 100}}\n      delay: {fixedDelay: 5s, percentage: {value: 0.5}}\n    route:\n    - destination: {host: reviews}\n",
    ));
    rejects(
        &vs("  - fault: {}\n    route:\n    - destination: {host: reviews}\n"),
        "spec.http[0].fault",
        "abort and/or a delay",
    );
}

#[test]
fn mirror_percentage_range() {
    rejects(
        &vs(
            "  - route:\n    - destination: {host: reviews}\n    mirror: {host: shadow}\n    mirrorPercentage: {value: 101}\n",
        ),
        "spec.http[0].mirrorPercentage.value",
        "at most 100",
    );
}

#[test]
fn route_redirect_conflict_and_required_route() {
    rejects(
        &vs("  - redirect: {uri: /x}\n    route:\n    - destination: {host: reviews}\n"),
        "spec.http[0].redirect",
        "both route and redirect",
    );
    rejects(&vs("  - name: empty\n    timeout: 1s\n"), "spec.http[0]", "is required");
    rejects(&vs("  - redirect: {redirectCode: 200, uri: /x}\n"), "spec.http[0].redirect.redirectCode", "3xx");
}

#[test]
fn retries() {
    rejects(
        &vs(
            "  - route:\n    - destination: {host: reviews}\n    retries: {attempts: 2, retryOn: \"5xx,bogus\"}\n",
        ),
        "spec.http[0].retries.retryOn",
        "\"bogus\" is not a valid retryOn policy",
    );
    accepts(&vs(
        "  - route:\n    - destination: {host: reviews}\n    retries: {attempts: 2, retryOn: \"gateway-error,connect-failure,503\"}\n",
    ));
    rejects(
        &vs(
            "  - route:\n    - destination: {host: reviews}\n    retries: {attempts: 0, perTryTimeout: 1s}\n",
        ),
        "spec.http[0].retries",
        "attempts are set to 0",
    );
}

#[test]
fn header_operations() {
    rejects(
        &vs(
            "  - route:\n    - destination: {host: reviews}\n    headers:\n      response:\n        set: {host: x}\n",
        ),
        "spec.http[0].headers.response.set.host",
        "cannot set Host",
    );
    rejects(
        &vs(
            "  - route:\n    - destination: {host: reviews}\n      headers:\n        request:\n          add: {x-a: \"100%\"}\n",
        ),
        "spec.http[0].route[0].headers.request.add.x-a",
        "unterminated",
    );
    accepts(&vs(
        "  - route:\n    - destination: {host: reviews}\n      headers:\n        request:\n          set: {x-a: \"100%% %HOSTNAME%\"}\n",
    ));
}

#[test]
fn hosts() {
    rejects(
        &vs("  - route:\n    - destination: {host: reviews}\n").replace("hosts: [reviews]", "hosts: [\"*\"]"),
        "spec.hosts[0]",
        "wildcard host * is not allowed",
    );
    rejects(
        &vs("  - route:\n    - destination: {host: reviews}\n")
            .replace("hosts: [reviews]", "hosts: [\"*.foo.com\", bar.foo.com]"),
        "spec.hosts[1]",
        "duplicate hosts",
    );
    rejects(
        &vs("  - route:\n    - destination: {host: \"*\"}\n"),
        "spec.http[0].route[0].destination.host",
        "invalid destination host",
    );
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let c = run(&vs("  - route:\n    - destination: {host: reviews}\n      wieght: 10\n"));
    assert!(c.object.is_none());
    let d = &c.diagnostics[0];
    assert!(d.message.contains("unknown field `wieght`"), "{d}");
    assert!(d.field.starts_with("spec.http[0].route[0]"), "{d}");
    rejects(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspc: {host: r}\n",
        "spc",
        "unknown field",
    );
}

#[test]
fn unknown_kind_suggests_the_right_one() {
    rejects(
        "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: r}\nspec: {}\n",
        "kind",
        "did you mean VirtualService?",
    );
    rejects("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: r}\n", "kind", "unknown kind");
    // Kinds weftd has no use for are skipped silently; unsupported Istio kinds with a warning.
    let c = run("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: r}\nspec: {}\n");
    assert!(c.object.is_none() && c.diagnostics.is_empty());
    let c =
        run("apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: r}\nspec: {}\n");
    assert!(c.object.is_none() && c.diagnostics.iter().all(|d| d.severity == Severity::Warning));
}

#[test]
fn invalid_names() {
    rejects("apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n", "metadata.name", "invalid name");
}

fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  host: reviews\n{spec}"
    )
}

#[test]
fn destination_rules() {
    let c = accepts(&dr(
        "  trafficPolicy:\n    loadBalancer: {simple: LEAST_REQUEST}\n    connectionPool:\n      tcp: {maxConnections: 100, connectTimeout: 30ms}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}\n    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      loadBalancer:\n        consistentHash: {httpHeaderName: x-user}\n",
    ));
    let Some(ConfigObject::DestinationRule(d)) = c.object else { panic!() };
    assert_eq!(d.spec.subsets.len(), 2);
    assert_eq!(
        d.spec.traffic_policy.as_ref().unwrap().outlier_detection.as_ref().unwrap().consecutive5xx_errors,
        Some(7)
    );
    rejects(
        &dr("  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n"),
        "spec.trafficPolicy.loadBalancer.simple",
        "unknown variant",
    );
    rejects(
        &dr("  subsets:\n  - name: v1\n  - name: v1\n"),
        "spec.subsets[1].name",
        "duplicate subset names",
    );
    rejects(&dr("  trafficPolicy: {}\n"), "spec.trafficPolicy", "at least one field");
    rejects(
        &dr("  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 101}\n"),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "not in range",
    );
    rejects(
        &dr("  trafficPolicy:\n    connectionPool:\n      http: {maxRetries: -1}\n"),
        "spec.trafficPolicy.connectionPool.http.maxRetries",
        "non-negative",
    );
    rejects(
        &dr("  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {ttl: 0s}}\n"),
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "name required",
    );
}

fn ap(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny, namespace: bookinfo}}\nspec:\n{spec}"
    )
}

#[test]
fn authorization_policies() {
    rejects(&ap("  action: ALOW\n  rules: [{}]\n"), "spec.action", "unknown variant `ALOW`");
    accepts(&ap(
        "  selector: {matchLabels: {app: reviews}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/bookinfo/sa/productpage]}\n    to:\n    - operation: {methods: [GET], paths: [/reviews/*]}\n",
    ));
    rejects(&ap("  action: DENY\n"), "spec.rules", "DENY action without `rules`");
    rejects(
        &ap("  rules:\n  - from:\n    - source: {ipBlocks: [10.0.0.300]}\n"),
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "not a valid IP",
    );
    rejects(
        &ap("  rules:\n  - when:\n    - key: request.bogus\n      values: [x]\n"),
        "spec.rules[0].when[0].values",
        "unknown attribute",
    );
    rejects(
        &ap("  rules:\n  - to:\n    - operation: {ports: [\"99999\"]}\n"),
        "spec.rules[0].to[0].operation.ports[0]",
        "bad port",
    );
    rejects(&ap("  action: CUSTOM\n  rules: [{}]\n"), "spec.provider.name", "must not be empty");
    warns(
        &ap("  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [POST]}\n"),
        "spec.rules[0]",
        "deny all traffic to TCP ports",
    );
}

#[test]
fn authorization_policies_for_agents() {
    // Service accounts: Istio's format rules, and never beside principals or namespaces.
    rejects(
        &ap("  rules:\n  - from:\n    - source: {serviceAccounts: [sa], principals: [x]}\n"),
        "spec.rules[0].from[0].source",
        "cannot set serviceAccounts with namespaces or principals",
    );
    rejects(
        &ap("  rules:\n  - from:\n    - source: {notServiceAccounts: [\"ns/*\"]}\n"),
        "spec.rules[0].from[0].source.notServiceAccounts[0]",
        "wildcard not allowed",
    );
    rejects(
        &ap("  rules:\n  - when:\n    - key: source.serviceAccount\n      values: [a/b/c]\n"),
        "spec.rules[0].when[0].values[0]",
        "expected format 'serviceAccount' or 'namespace/serviceAccount'",
    );
    rejects(
        &ap("  rules:\n  - when:\n    - key: source.namespace\n      notValues: [\"\"]\n"),
        "spec.rules[0].when[0].notValues[0]",
        "empty value not allowed",
    );
    accepts(&ap("  rules:\n  - from:\n    - source: {serviceAccounts: [sa, other/sa]}\n"));

    // Dry run: a boolean, on ALLOW and DENY only.
    let dry = |value: &str, action: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: bookinfo, annotations: {{istio.io/dry-run: \"{value}\"}}}}\nspec:\n  action: {action}\n  rules: [{{}}]\n"
        )
    };
    accepts(&dry("true", "DENY"));
    accepts(&dry("F", "ALLOW"));
    rejects(
        &dry("yes", "DENY"),
        "metadata.annotations.istio.io/dry-run",
        "must be true or false, not \"yes\"",
    );
    rejects(
        &dry("true", "AUDIT"),
        "metadata.annotations.istio.io/dry-run",
        "only supports action ALLOW/DENY",
    );

    // What node agents cannot enforce is said, not silently dropped.
    warns(
        &ap(
            "  rules:\n  - to:\n    - operation: {methods: [GET], ports: [\"80\"]}\n    when:\n    - key: request.headers[x-a]\n      values: [b]\n",
        ),
        "spec.rules",
        "cannot see HTTP attributes (found: methods, request.headers[x-a]): rules that use them are left out",
    );
    warns(
        &ap("  action: DENY\n  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n"),
        "spec.rules",
        "(found: requestPrincipals): they are taken as matching",
    );
    warns(
        &ap("  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n"),
        "spec.action",
        "node agents do not enforce CUSTOM",
    );
    let c = accepts(&ap(
        "  targetRefs: [{kind: Service, group: \"\", name: reviews}]\n  rules:\n  - to:\n    - operation: {methods: [GET]}\n",
    ));
    assert!(c.diagnostics.is_empty(), "a waypoint policy may use HTTP attributes: {:#?}", c.diagnostics);
}

#[test]
fn peer_authentication() {
    let y = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: bookinfo}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    \"8080\": {mode: DISABLE}\n";
    let c = accepts(y);
    let Some(ConfigObject::PeerAuthentication(p)) = c.object else { panic!() };
    assert_eq!(
        p.spec.port_modes().into_iter().collect::<Vec<_>>(),
        vec![(8080, crate::config::kinds::security::MtlsMode::Disable)]
    );
    rejects(&y.replace("\"8080\"", "http"), "spec.portLevelMtls.http", "must be a number");
    rejects(&y.replace("STRICT", "STRICTER"), "spec.mtls.mode", "unknown variant");
    rejects(
        &y.replace("  selector: {matchLabels: {app: reviews}}\n", ""),
        "spec.portLevelMtls",
        "cannot have port level mTLS",
    );
    warns(y, "spec.portLevelMtls.8080.mode", "DISABLE is PERMISSIVE to node agents");
    warns(&y.replace("STRICT", "DISABLE"), "spec.mtls.mode", "DISABLE is PERMISSIVE to node agents");
    rejects(
        &y.replace("namespace: bookinfo}", "namespace: bookinfo, annotations: {istio.io/dry-run: \"true\"}}"),
        "metadata.annotations.istio.io/dry-run",
        "bookinfo/p has unsupported annotation istio.io/dry-run",
    );
}

#[test]
fn istio_gateways_and_service_entries() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: bookinfo}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    accepts(gw);
    rejects(
        &gw.replace("protocol: HTTP", "protocol: HTTPS"),
        "spec.servers[0].tls",
        "must have TLS settings",
    );
    rejects(
        &gw.replace("protocol: HTTP", "protocol: QUIC"),
        "spec.servers[0].port.protocol",
        "invalid protocol",
    );
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: bookinfo}\nspec:\n  hosts: [api.example.com]\n  ports:\n  - {number: 443, name: https, protocol: TLS}\n  location: MESH_EXTERNAL\n  resolution: DNS\n";
    accepts(se);
    rejects(&se.replace("resolution: DNS", "resolution: DNZ"), "spec.resolution", "unknown variant");
    rejects(&se.replace("[api.example.com]", "[\"*\"]"), "spec.hosts[0]", "invalid host");
    let we = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: bookinfo}\nspec:\n  address: 10.0.0.9\n  ports: {http: 8080}\n  labels: {app: details}\n  serviceAccount: details\n";
    accepts(we);
    rejects(&we.replace("10.0.0.9", "not_an_address!"), "spec.address", "not a valid FQDN");
    let sc = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: bookinfo}\nspec:\n  egress:\n  - hosts: [\"./*\", istio-system/*]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
    accepts(sc);
    rejects(
        &sc.replace("[\"./*\", istio-system/*]", "[reviews.bookinfo.svc.cluster.local]"),
        "spec.egress[0].hosts[0]",
        "namespace/dnsName",
    );
}

#[test]
fn gateway_api_http_routes() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [reviews.example.com]\n  rules:\n  - matches:\n    - path: {type: PathPrefix, value: /reviews}\n      headers: [{name: x-user, value: jason}]\n    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set: [{name: x-a, value: b}]\n    backendRefs:\n    - {name: reviews-v1, port: 9080, weight: 90}\n    - {name: reviews-v2, port: 9080}\n    timeouts: {request: 10s, backendRequest: 2s}\n";
    let c = accepts(route);
    let Some(ConfigObject::HttpRoute(r)) = c.object else { panic!() };
    assert_eq!(r.spec.rules[0].backend_refs[1].weight, 1, "backendRef weight defaults to 1");
    accepts(&route.replace("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"));
    rejects(
        &route.replace("value: /reviews", "value: reviews"),
        "spec.rules[0].matches[0].path.value",
        "start",
    );
    rejects(
        &route.replace("type: PathPrefix, value: /reviews", "type: RegularExpression, value: \"(\""),
        "spec.rules[0].matches[0].path.value",
        "does not compile",
    );
    rejects(&route.replace("weight: 90", "weight: -1"), "spec.rules[0].backendRefs[0].weight", "0..1000000");
    rejects(
        &route.replace(", port: 9080, weight: 90", ""),
        "spec.rules[0].backendRefs[0].port",
        "must have port",
    );
    rejects(
        &route.replace("backendRequest: 2s", "backendRequest: 20s"),
        "spec.rules[0].timeouts.backendRequest",
        "longer than request",
    );
    rejects(
        &route.replace("request: 10s", "request: 1.5s"),
        "spec.rules[0].timeouts.request",
        "Gateway API durations",
    );
    rejects(
        &route.replace("      requestHeaderModifier:\n", "      responseHeaderModifier:\n"),
        "spec.rules[0].filters[0].requestHeaderModifier",
        "must be specified",
    );
    let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: bookinfo}\nspec:\n  gatewayClassName: weft\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n";
    accepts(gw);
    rejects(
        &gw.replace("protocol: HTTP", "protocol: HTTPS"),
        "spec.listeners[0].tls",
        "tls must be specified",
    );
}

#[test]
fn gateway_api_reference_grants() {
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: other}\nspec:\n  from:\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: bookinfo}\n  to:\n  - {group: \"\", kind: Service, name: ratings}\n";
    let c = accepts(grant);
    let Some(ConfigObject::ReferenceGrant(g)) = c.object else { panic!() };
    assert_eq!(g.spec.from[0].group.as_deref(), Some("gateway.networking.k8s.io"));
    accepts(&grant.replace("v1beta1", "v1"));
    accepts(&grant.replace(", name: ratings", ""));
    rejects(&grant.replace(", namespace: bookinfo", ""), "spec.from[0].namespace", "namespace is required");
    rejects(
        &grant.replace("group: gateway.networking.k8s.io, ", ""),
        "spec.from[0].group",
        "group is required",
    );
    rejects(&grant.replace("kind: HTTPRoute, ", ""), "spec.from[0].kind", "kind is required");
    rejects(&grant.replace("kind: Service, ", ""), "spec.to[0].kind", "kind is required");
    rejects(&grant.replace("name: ratings", "name: \"\""), "spec.to[0].name", "leave it out");
    rejects(
        &grant.replace("namespace: bookinfo", "namespace: Bookinfo"),
        "spec.from[0].namespace",
        "invalid",
    );
    rejects(
        &grant.replace("  to:\n  - {group: \"\", kind: Service, name: ratings}\n", ""),
        "spec.to",
        "1 to 16",
    );
    rejects(
        &grant.replacen("  - {", "  - {sectionName: x, ", 1),
        "spec.from[0].sectionName",
        "unknown field",
    );
}

#[test]
fn pods_of_the_inventory() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-v1\n  namespace: bookinfo\n  labels: {app: reviews, version: v1}\nspec:\n  nodeName: n1\n  serviceAccountName: reviews\n  containers:\n  - name: app\n    image: x\n    ports: [{containerPort: 9080}]\nstatus:\n  podIP: 10.0.1.5\n";
    let c = accepts(pod);
    let Some(ConfigObject::Pod(p)) = c.object else { panic!() };
    assert_eq!(p.ips(), vec!["10.0.1.5".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(p.spec.node_name.as_deref(), Some("n1"));
    rejects(&pod.replace("10.0.1.5", "10.0.1"), "status.podIP", "not an IP address");
}
