//! The file source and the config store together, on real temporary directories: every
//! kind of bad input produces a diagnostic that names the object, its file and line, the
//! field and the reason, while everything else keeps being served; the last good version
//! of an object is never lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weft_controlplane::config::kinds::VirtualService;
use weft_controlplane::config::{ConfigSnapshot, ConfigStore, Diagnostic, Severity, SourceId};
use weft_controlplane::source::file::FileSource;
use weft_controlplane::source::{ObjectKey, Origin, SourceEvent};

/// A temporary config directory, its file source and a store fed by it.
struct Bed {
    dir: tempfile::TempDir,
    source: FileSource,
    store: ConfigStore,
}

impl Bed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let source = FileSource::new(dir.path()).unwrap();
        Bed { dir, source, store: ConfigStore::new() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file the way editors and `kubectl`-style tools do: a temporary file
    /// renamed into place.
    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Polls the source and feeds the store; returns whether the served config changed.
    fn sync(&mut self) -> bool {
        let events = self.source.poll();
        self.store.apply_all(SourceId::File, events)
    }

    fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.store.snapshot()
    }

    fn vs(&self, name: &str) -> Option<Arc<VirtualService>> {
        self.snapshot().virtual_services.get("bookinfo", name).cloned()
    }

    fn diagnostics(&self) -> Vec<Diagnostic> {
        self.store.diagnostics()
    }

    /// The one diagnostic of `severity` about `kind/bookinfo/name`; fails listing all.
    #[track_caller]
    fn finding(&self, severity: Severity, kind: &str, name: &str) -> Diagnostic {
        let all = self.diagnostics();
        let found: Vec<&Diagnostic> = all
            .iter()
            .filter(|d| {
                d.severity == severity && d.object.as_ref().is_some_and(|k| k.kind == kind && k.name == name)
            })
            .collect();
        assert!(!found.is_empty(), "no {severity} about {kind}/{name}; all:\n{}", lines(&all));
        found[0].clone()
    }
}

fn lines(ds: &[Diagnostic]) -> String {
    ds.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
}

fn origin_of(d: &Diagnostic) -> (PathBuf, usize) {
    match &d.origin {
        Origin::File { path, line } => (path.clone(), *line),
        other => panic!("not a file origin: {other}"),
    }
}

const NAMESPACE: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: bookinfo
";

const DESTINATION_RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
";

fn virtual_service(name: &str, host: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: bookinfo
spec:
  hosts: [{host}]
  http:
{http}"
    )
}

const GOOD_ROUTE: &str = "  - route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v2}
      weight: 25
";

/// A directory with good objects in `good.yaml`, plus `bad.yaml` holding `bad_doc` as its
/// second document (after a good VirtualService "ratings"). Returns the bed after one sync.
fn bed_with_bad_document(bad_doc: &str) -> Bed {
    let mut bed = Bed::new();
    bed.write(
        "00-good.yaml",
        &format!(
            "{NAMESPACE}---\n{DESTINATION_RULE}---\n{}",
            virtual_service("reviews", "reviews", GOOD_ROUTE)
        ),
    );
    bed.write(
        "bad.yaml",
        &format!(
            "{}---\n{bad_doc}",
            virtual_service("ratings", "ratings", "  - route:\n    - destination: {host: ratings}\n")
        ),
    );
    bed.sync();
    bed
}

/// The line where the second document of bad.yaml starts.
fn second_doc_line() -> usize {
    virtual_service("ratings", "ratings", "  - route:\n    - destination: {host: ratings}\n").lines().count()
        + 2
}

/// Everything that is not the bad document is still served.
#[track_caller]
fn others_served(bed: &Bed) {
    let s = bed.snapshot();
    assert!(s.namespaces.get("", "bookinfo").is_some(), "namespace lost");
    assert!(s.destination_rules.get("bookinfo", "reviews").is_some(), "destination rule lost");
    assert!(bed.vs("reviews").is_some(), "VirtualService reviews lost");
    assert!(bed.vs("ratings").is_some(), "VirtualService ratings (same file as the bad one) lost");
}

#[track_caller]
fn assert_error(bed: &Bed, kind: &str, name: &str, field: &str, reason: &str) -> Diagnostic {
    let d = bed.finding(Severity::Error, kind, name);
    let (path, line) = origin_of(&d);
    assert_eq!(path, bed.path("bad.yaml"), "{d}");
    assert_eq!(line, second_doc_line(), "{d}");
    assert_eq!(d.field, field, "{d}");
    assert!(d.message.contains(reason), "{d}");
    let text = d.to_string();
    assert!(text.starts_with(&format!("error: {kind}/bookinfo/{name} (")), "{text}");
    assert!(text.contains(&format!("bad.yaml:{}): {field}: ", second_doc_line())), "{text}");
    d
}

#[test]
fn yaml_syntax_error() {
    let bed = bed_with_bad_document(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: broken\n  namespace: bookinfo\nspec:\n  hosts: [broken\n  http: []\n",
    );
    others_served(&bed);
    let errors: Vec<Diagnostic> = bed.diagnostics().into_iter().filter(Diagnostic::is_error).collect();
    assert_eq!(errors.len(), 1, "{}", lines(&errors));
    let d = &errors[0];
    let (path, line) = origin_of(d);
    assert_eq!(path, bed.path("bad.yaml"));
    assert!(line > second_doc_line(), "points at the broken line, not the document start: {d}");
    assert!(d.message.contains("VirtualService/bookinfo/broken"), "names the object it meant to be: {d}");
    assert!(d.message.contains("not YAML"), "{d}");
}

#[test]
fn unknown_kind() {
    let bed = bed_with_bad_document(
        "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata:\n  name: typo\n  namespace: bookinfo\nspec: {}\n",
    );
    others_served(&bed);
    assert_error(&bed, "VirtualServce", "typo", "kind", "did you mean VirtualService?");
}

#[test]
fn unknown_field() {
    let bed = bed_with_bad_document(&virtual_service(
        "details",
        "details",
        "  - route:\n    - destination: {host: details}\n      wieght: 100\n",
    ));
    others_served(&bed);
    let d = bed.finding(Severity::Error, "VirtualService", "details");
    assert!(d.message.contains("unknown field `wieght`"), "{d}");
    assert!(d.field.starts_with("spec.http[0].route[0]"), "{d}");
    assert!(bed.vs("details").is_none());
}

#[test]
fn negative_weight() {
    let bed = bed_with_bad_document(&virtual_service(
        "details",
        "details",
        "  - route:\n    - destination: {host: details, subset: v1}\n      weight: 110\n    - destination: {host: details, subset: v2}\n      weight: -10\n",
    ));
    others_served(&bed);
    assert_error(&bed, "VirtualService", "details", "spec.http[0].route[1].weight", "weight -10 is negative");
    assert!(bed.vs("details").is_none());
}

#[test]
fn all_zero_weights() {
    let bed = bed_with_bad_document(&virtual_service(
        "details",
        "details",
        "  - route:\n    - destination: {host: details, subset: v1}\n      weight: 0\n    - destination: {host: details, subset: v2}\n      weight: 0\n",
    ));
    others_served(&bed);
    assert_error(&bed, "VirtualService", "details", "spec.http[0].route", "total destination weight = 0");
}

#[test]
fn route_to_an_undefined_subset_is_a_warning_and_still_served() {
    let bed = bed_with_bad_document(&virtual_service(
        "reviews-canary",
        "reviews-canary",
        "  - route:\n    - destination: {host: reviews, subset: v3}\n",
    ));
    others_served(&bed);
    let d = bed.finding(Severity::Warning, "VirtualService", "reviews-canary");
    assert_eq!(d.code, Some("IST0101"));
    assert_eq!(d.field, "spec.http[0].route[0].destination.subset");
    assert!(d.message.contains("reviews+v3") && d.message.contains("503"), "{d}");
    assert_eq!(origin_of(&d), (bed.path("bad.yaml"), second_doc_line()));
    assert!(bed.vs("reviews-canary").is_some(), "the VirtualService is still served");
    assert!(bed.diagnostics().iter().all(|d| !d.is_error()), "{}", lines(&bed.diagnostics()));
}

#[test]
fn regex_that_does_not_compile() {
    let bed = bed_with_bad_document(&virtual_service(
        "details",
        "details",
        "  - match:\n    - uri: {regex: \"/details/(v1\"}\n    route:\n    - destination: {host: details}\n",
    ));
    others_served(&bed);
    assert_error(&bed, "VirtualService", "details", "spec.http[0].match[0].uri.regex", "does not compile");
}

#[test]
fn unparseable_duration() {
    let bed = bed_with_bad_document(&virtual_service(
        "details",
        "details",
        "  - route:\n    - destination: {host: details}\n    timeout: 5 seconds\n",
    ));
    others_served(&bed);
    assert_error(&bed, "VirtualService", "details", "spec.http[0].timeout", "invalid duration \"5 seconds\"");
}

#[test]
fn timeout_below_a_millisecond() {
    let bed = bed_with_bad_document(&virtual_service(
        "details",
        "details",
        "  - route:\n    - destination: {host: details}\n    timeout: 0.5ms\n",
    ));
    others_served(&bed);
    assert_error(&bed, "VirtualService", "details", "spec.http[0].timeout", "must be at least 1ms");
}

#[test]
fn authorization_policy_with_an_unknown_action() {
    let bed = bed_with_bad_document(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-get\n  namespace: bookinfo\nspec:\n  action: ALOW\n  rules:\n  - to:\n    - operation: {methods: [GET]}\n",
    );
    others_served(&bed);
    assert_error(&bed, "AuthorizationPolicy", "allow-get", "spec.action", "unknown variant `ALOW`");
    assert!(bed.snapshot().authorization_policies.is_empty());
}

#[test]
fn duplicate_hosts_across_virtual_services() {
    // "reviews-two" binds the same mesh host as "reviews" (in 00-good.yaml, first by file).
    let bed = bed_with_bad_document(&virtual_service(
        "reviews-two",
        "reviews.bookinfo.svc.cluster.local",
        "  - route:\n    - destination: {host: reviews, subset: v2}\n",
    ));
    others_served(&bed);
    let loser = bed.finding(Severity::Warning, "VirtualService", "reviews-two");
    assert_eq!(loser.code, Some("IST0109"));
    assert_eq!(loser.field, "spec.hosts[0]");
    assert!(loser.message.contains("reviews.bookinfo.svc.cluster.local"), "{loser}");
    assert!(loser.message.contains("weftd uses bookinfo/reviews"), "says who wins: {loser}");
    assert_eq!(origin_of(&loser), (bed.path("bad.yaml"), second_doc_line()));
    let winner = bed.finding(Severity::Warning, "VirtualService", "reviews");
    assert!(winner.message.contains("weftd uses this one"), "{winner}");

    // Both are served; translation is told which host the loser does not own.
    let s = bed.snapshot();
    let two = bed.vs("reviews-two").expect("still served");
    let key = ConfigSnapshot::virtual_service_key(&two);
    assert!(s.is_host_shadowed(&key, "reviews.bookinfo.svc.cluster.local"));
    let one = ConfigSnapshot::virtual_service_key(&bed.vs("reviews").unwrap());
    assert!(!s.is_host_shadowed(&one, "reviews"));
}

#[test]
fn editing_a_good_object_into_a_bad_one_keeps_the_good_version() {
    let mut bed = Bed::new();
    bed.write(
        "vs.yaml",
        &format!("{DESTINATION_RULE}---\n{}", virtual_service("reviews", "reviews", GOOD_ROUTE)),
    );
    assert!(bed.sync());
    let generation = bed.store.generation();
    let good = bed.vs("reviews").unwrap();
    assert_eq!(good.spec.http[0].route[0].weight, 75);

    let bad_route = GOOD_ROUTE.replace("weight: 25", "weight: -25");
    bed.write(
        "vs.yaml",
        &format!("{DESTINATION_RULE}---\n{}", virtual_service("reviews", "reviews", &bad_route)),
    );
    assert!(!bed.sync(), "a rejected version is not a change");
    assert_eq!(bed.store.generation(), generation);
    assert_eq!(*bed.vs("reviews").unwrap(), *good, "the good version stays in force");
    let d = bed.finding(Severity::Error, "VirtualService", "reviews");
    assert_eq!(d.field, "spec.http[0].route[1].weight");
    assert!(
        bed.diagnostics()
            .iter()
            .any(|d| d.message.contains("last good version") && d.message.contains("stays in force")),
        "{}",
        lines(&bed.diagnostics())
    );

    let fixed_route = GOOD_ROUTE.replace("weight: 75", "weight: 50").replace("weight: 25", "weight: 50");
    bed.write(
        "vs.yaml",
        &format!("{DESTINATION_RULE}---\n{}", virtual_service("reviews", "reviews", &fixed_route)),
    );
    assert!(bed.sync());
    assert!(bed.store.generation() > generation);
    assert_eq!(bed.vs("reviews").unwrap().spec.http[0].route[0].weight, 50, "the fixed version is taken");
    assert!(bed.diagnostics().is_empty(), "{}", lines(&bed.diagnostics()));
}

#[test]
fn a_syntax_error_keeps_what_the_file_served_before() {
    let mut bed = Bed::new();
    let text = format!("{DESTINATION_RULE}---\n{}", virtual_service("reviews", "reviews", GOOD_ROUTE));
    bed.write("vs.yaml", &text);
    bed.sync();
    bed.write("vs.yaml", &text.replace("hosts: [reviews]", "hosts: [reviews"));
    bed.sync();
    assert!(bed.vs("reviews").is_some(), "previously good object kept while its document is unreadable");
    assert!(bed.snapshot().destination_rules.get("bookinfo", "reviews").is_some());
    assert_eq!(bed.diagnostics().len(), 1, "{}", lines(&bed.diagnostics()));

    // Fixing the file clears the diagnostic.
    bed.write("vs.yaml", &text);
    bed.sync();
    assert!(bed.diagnostics().is_empty(), "{}", lines(&bed.diagnostics()));
    assert!(bed.vs("reviews").is_some());
}

#[test]
fn deleting_a_file_deletes_its_objects() {
    let mut bed = Bed::new();
    bed.write("a.yaml", &format!("{NAMESPACE}---\n{DESTINATION_RULE}"));
    bed.write("sub/dir/b.yml", &virtual_service("reviews", "reviews", GOOD_ROUTE));
    bed.write("sub/dir/bad.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: [x\n");
    bed.sync();
    assert!(bed.vs("reviews").is_some(), "found recursively, .yml too");
    assert_eq!(bed.diagnostics().len(), 1);
    std::fs::remove_file(bed.path("sub/dir/b.yml")).unwrap();
    std::fs::remove_file(bed.path("sub/dir/bad.yaml")).unwrap();
    assert!(bed.sync());
    assert!(bed.vs("reviews").is_none());
    assert!(bed.snapshot().destination_rules.get("bookinfo", "reviews").is_some(), "other files unaffected");
    assert!(bed.diagnostics().is_empty(), "diagnostics of a removed file go: {}", lines(&bed.diagnostics()));
}

#[test]
fn all_three_networking_api_versions_parse() {
    let mut bed = Bed::new();
    for (i, version) in ["v1", "v1beta1", "v1alpha3"].iter().enumerate() {
        let text = virtual_service(
            &format!("vs-{i}"),
            &format!("host{i}"),
            "  - route:\n    - destination: {host: reviews}\n",
        )
        .replace("networking.istio.io/v1\n", &format!("networking.istio.io/{version}\n"));
        bed.write(&format!("{i}.yaml"), &text);
    }
    bed.sync();
    assert_eq!(bed.snapshot().virtual_services.len(), 3, "{}", lines(&bed.diagnostics()));
    assert!(bed.diagnostics().is_empty(), "{}", lines(&bed.diagnostics()));
}

#[test]
fn first_scan_is_a_reset_and_later_ones_are_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), NAMESPACE).unwrap();
    let mut source = FileSource::new(dir.path()).unwrap();
    let first = source.poll();
    assert!(matches!(first.as_slice(), [SourceEvent::Reset(objects)] if objects.len() == 1));
    assert!(source.poll().is_empty(), "nothing changed");
    std::fs::write(dir.path().join("b.yaml"), DESTINATION_RULE).unwrap();
    let events = source.poll();
    assert!(
        matches!(events.as_slice(), [SourceEvent::Upsert(o)] if o.key.kind == "DestinationRule"),
        "{events:?}"
    );
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let events = source.poll();
    assert!(
        matches!(events.as_slice(), [SourceEvent::Delete(ObjectKey { kind, .. })] if kind == "Namespace"),
        "{events:?}"
    );
}

#[test]
fn origins_are_file_and_first_line_of_each_document() {
    let mut bed = Bed::new();
    bed.write("multi.yaml", &format!("# comment\n---\n{NAMESPACE}---\n\n{DESTINATION_RULE}"));
    bed.sync();
    let s = bed.snapshot();
    let ns_key =
        ObjectKey { group: "".into(), kind: "Namespace".into(), namespace: None, name: "bookinfo".into() };
    assert_eq!(s.origin(&ns_key), Some(&Origin::File { path: bed.path("multi.yaml"), line: 3 }));
    let dr_key = ObjectKey {
        group: "networking.istio.io".into(),
        kind: "DestinationRule".into(),
        namespace: Some("bookinfo".into()),
        name: "reviews".into(),
    };
    assert_eq!(s.origin(&dr_key), Some(&Origin::File { path: bed.path("multi.yaml"), line: 9 }));
}

#[test]
fn a_document_without_identity_is_unreadable() {
    let mut bed = Bed::new();
    bed.write(
        "x.yaml",
        &format!("{NAMESPACE}---\napiVersion: v1\nkind: Pod\nmetadata:\n  labels: {{app: a}}\n"),
    );
    bed.sync();
    let ds = bed.diagnostics();
    assert_eq!(ds.len(), 1, "{}", lines(&ds));
    assert!(ds[0].message.contains("no metadata.name"), "{}", ds[0]);
    assert_eq!(origin_of(&ds[0]), (bed.path("x.yaml"), 6));
    assert!(bed.snapshot().namespaces.get("", "bookinfo").is_some());
}

#[test]
fn inventory_pods_are_plain_pods() {
    let mut bed = Bed::new();
    bed.write(
        "inventory.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: productpage-v1\n  namespace: bookinfo\n  labels: {app: productpage}\nspec:\n  nodeName: node-a\n  containers: [{name: app, image: pp}]\nstatus:\n  podIP: 10.10.1.4\n",
    );
    bed.sync();
    let s = bed.snapshot();
    let pod = s.pods.get("bookinfo", "productpage-v1").expect("pod served");
    assert_eq!(pod.spec.node_name.as_deref(), Some("node-a"));
    assert_eq!(pod.ips(), vec!["10.10.1.4".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(pod.service_account(), "default");
}

#[tokio::test]
async fn live_polling_picks_up_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root: &Path = dir.path();
    std::fs::write(root.join("ns.yaml"), NAMESPACE).unwrap();
    let source = FileSource::new(root).unwrap().with_interval(Duration::from_millis(20));
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(source.run(tx));
    let mut store = ConfigStore::new();

    let mut next = async || {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("event in time")
            .expect("open");
        store.apply(SourceId::File, event);
        store.snapshot()
    };
    assert_eq!(next().await.namespaces.len(), 1, "first scan");

    // Rename into place, as editors do.
    std::fs::write(root.join(".dr.tmp"), DESTINATION_RULE).unwrap();
    std::fs::rename(root.join(".dr.tmp"), root.join("dr.yaml")).unwrap();
    assert_eq!(next().await.destination_rules.len(), 1);

    std::fs::remove_file(root.join("ns.yaml")).unwrap();
    assert_eq!(next().await.namespaces.len(), 0);

    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("source stops when the receiver is gone")
        .unwrap();
}

#[test]
fn an_object_defined_twice_keeps_the_first_definition() {
    let mut bed = Bed::new();
    bed.write(
        "a.yaml",
        &virtual_service("reviews", "reviews", "  - route:\n    - destination: {host: reviews}\n"),
    );
    bed.write(
        "b.yaml",
        &virtual_service("reviews", "reviews", "  - route:\n    - destination: {host: other}\n"),
    );
    bed.sync();
    let vs = bed.vs("reviews").unwrap();
    assert_eq!(vs.spec.http[0].route[0].destination.as_ref().unwrap().host, "reviews", "a.yaml wins");
    let ds = bed.diagnostics();
    assert_eq!(ds.len(), 1, "{}", lines(&ds));
    assert_eq!(origin_of(&ds[0]).0, bed.path("b.yaml"));
    assert!(ds[0].message.contains("already defined at") && ds[0].message.contains("a.yaml:1"), "{}", ds[0]);

    // Once the first definition is gone, the second one takes over.
    std::fs::remove_file(bed.path("a.yaml")).unwrap();
    bed.sync();
    let vs = bed.vs("reviews").unwrap();
    assert_eq!(vs.spec.http[0].route[0].destination.as_ref().unwrap().host, "other");
    assert!(bed.diagnostics().is_empty(), "{}", lines(&bed.diagnostics()));
}

/// Gateway API's RefNotPermitted, as a warning: an HTTPRoute's backendRef (or mirror) to a
/// Service of another namespace that no ReferenceGrant there permits is named by field and
/// still served (its share answers 500); granting it clears the warning.
#[test]
fn a_backend_in_another_namespace_without_a_grant_is_a_warning_until_granted() {
    let mut bed = Bed::new();
    let route = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: bookinfo }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - backendRefs: [{ name: reviews, port: 9080 }, { name: ratings, namespace: other, port: 9080 }]
      filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: shadow, namespace: other, port: 80 } } }]
"#;
    bed.write("route.yaml", route);
    bed.sync();
    let warnings: Vec<Diagnostic> =
        bed.diagnostics().into_iter().filter(|d| d.severity == Severity::Warning).collect();
    let fields: Vec<&str> = warnings.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.rules[0].backendRefs[1]", "spec.rules[0].filters[0].requestMirror.backendRef"],
        "{}",
        lines(&warnings)
    );
    assert!(
        warnings[0].message.contains("other/ratings")
            && warnings[0].message.contains("no ReferenceGrant in namespace other")
            && warnings[0].message.contains("500"),
        "{}",
        warnings[0]
    );
    assert!(bed.snapshot().http_routes.get("bookinfo", "reviews").is_some(), "still served");

    bed.write(
        "grant.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: from-bookinfo, namespace: other }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: bookinfo }]
  to: [{ group: "", kind: Service }]
"#,
    );
    bed.sync();
    assert!(bed.diagnostics().is_empty(), "{}", lines(&bed.diagnostics()));
}

/// Gateway API's NotAllowedByListeners, as a warning naming the parentRef: a route of
/// another namespace on a listener that admits only its own (the default), or a
/// sectionName no listener has; cleared when the listener admits the route.
#[test]
fn a_route_no_listener_admits_is_a_warning_until_admitted() {
    let mut bed = Bed::new();
    let gateway = |allowed: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: web, namespace: istio-system }}\n\
             spec:\n  gatewayClassName: istio\n  listeners: [{{ name: http, port: 80, protocol: HTTP{allowed} }}]\n"
        )
    };
    bed.write("gateway.yaml", &gateway(""));
    bed.write(
        "route.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: bookinfo }
spec:
  parentRefs: [{ name: web, namespace: istio-system }, { name: web, namespace: istio-system, sectionName: https }]
  rules: [{ backendRefs: [{ name: reviews, port: 9080 }] }]
"#,
    );
    bed.sync();
    let warnings = bed.diagnostics();
    let found: Vec<(&str, &str)> = warnings.iter().map(|d| (d.field.as_str(), d.message.as_str())).collect();
    assert_eq!(found.len(), 2, "{}", lines(&warnings));
    assert_eq!(found[0].0, "spec.parentRefs[0]");
    assert!(
        found[0].1.contains("Gateway istio-system/web")
            && found[0].1.contains("NotAllowedByListeners")
            && found[0].1.contains("from namespace bookinfo"),
        "{}",
        found[0].1
    );
    assert_eq!(found[1].0, "spec.parentRefs[1]");
    assert!(found[1].1.contains("sectionName"), "{}", found[1].1);

    bed.write("gateway.yaml", &gateway(", allowedRoutes: { namespaces: { from: All } }"));
    bed.sync();
    let left: Vec<String> = bed.diagnostics().iter().map(|d| d.field.clone()).collect();
    assert_eq!(left, ["spec.parentRefs[1]"], "only the missing sectionName is left");
}
