//! The YAML the demo applies: Istio's Bookinfo samples (`samples/bookinfo/networking/…`)
//! and the inline YAML of Istio's traffic-management tasks, verbatim but for the two
//! places marked `Weft demo:`. Istio's samples carry no namespace; `kubectl apply` puts
//! them in the current one, and so does the demo ([`super::apply`]): `bookinfo`.

/// A file as Istio's docs apply it.
pub struct Sample {
    /// The name Istio's docs give it (inline YAML gets a name saying what it is).
    pub file: &'static str,
    pub yaml: &'static str,
}

/// The application's services, the waypoint (a Gateway and the Service Istio makes for
/// it), as `istioctl waypoint apply --enroll-namespace` would leave them.
pub const BOOKINFO: &str = concat!(
    r#"apiVersion: v1
kind: Service
metadata: { name: productpage, namespace: bookinfo, labels: { app: productpage, service: productpage } }
spec:
  clusterIP: 198.19.0.10
  ports: [{ name: http, port: 9080, targetPort: 9080 }]
  selector: { app: productpage }
---
apiVersion: v1
kind: Service
metadata: { name: details, namespace: bookinfo, labels: { app: details, service: details } }
spec:
  clusterIP: 198.19.0.11
  ports: [{ name: http, port: 9080, targetPort: 9080 }]
  selector: { app: details }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo, labels: { app: reviews, service: reviews } }
spec:
  clusterIP: 198.19.0.12
  ports: [{ name: http, port: 9080, targetPort: 9080 }]
  selector: { app: reviews }
---
apiVersion: v1
kind: Service
metadata: { name: ratings, namespace: bookinfo, labels: { app: ratings, service: ratings } }
spec:
  clusterIP: 198.19.0.13
  ports: [{ name: http, port: 9080, targetPort: 9080 }]
  selector: { app: ratings }
---
"#,
    crate::bookinfo_waypoint_yaml!(),
);

/// `gateway-api/bookinfo-gateway.yaml`, as Istio's ambient getting-started applies it
/// ("Open the application to outside traffic"): a Gateway API Gateway of class `istio`
/// in Bookinfo's namespace, and the HTTPRoute that sends Bookinfo's pages to productpage.
pub const BOOKINFO_GATEWAY: Sample = Sample {
    file: "gateway-api/bookinfo-gateway.yaml",
    yaml: r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bookinfo
spec:
  parentRefs:
  - name: bookinfo-gateway
  rules:
  - matches:
    - path:
        type: Exact
        value: /productpage
    - path:
        type: PathPrefix
        value: /static
    - path:
        type: Exact
        value: /login
    - path:
        type: Exact
        value: /logout
    - path:
        type: PathPrefix
        value: /api/v1/products
    backendRefs:
    - name: productpage
      port: 9080
"#,
};

/// `destination-rule-all.yaml`: the subsets every task routes to (request-routing's
/// "before you begin").
pub const DESTINATION_RULE_ALL: Sample = Sample {
    file: "destination-rule-all.yaml",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: productpage
spec:
  host: productpage
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v2-mysql
    labels:
      version: v2-mysql
  - name: v2-mysql-vm
    labels:
      version: v2-mysql-vm
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: details
spec:
  host: details
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"#,
};

pub const VIRTUAL_SERVICE_ALL_V1: Sample = Sample {
    file: "virtual-service-all-v1.yaml",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
spec:
  hosts:
  - productpage
  http:
  - route:
    - destination:
        host: productpage
        subset: v1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - route:
    - destination:
        host: ratings
        subset: v1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: details
spec:
  hosts:
  - details
  http:
  - route:
    - destination:
        host: details
        subset: v1
"#,
};

pub const VIRTUAL_SERVICE_REVIEWS_TEST_V2: Sample = Sample {
    file: "virtual-service-reviews-test-v2.yaml",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
"#,
};

pub const VIRTUAL_SERVICE_RATINGS_TEST_DELAY: Sample = Sample {
    file: "virtual-service-ratings-test-delay.yaml",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"#,
};

pub const VIRTUAL_SERVICE_RATINGS_TEST_ABORT: Sample = Sample {
    file: "virtual-service-ratings-test-abort.yaml",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      abort:
        percentage:
          value: 100.0
        httpStatus: 500
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"#,
};

pub const VIRTUAL_SERVICE_REVIEWS_50_V3: Sample = Sample {
    file: "virtual-service-reviews-50-v3.yaml",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
"#,
};

/// Weft demo: Istio's traffic-shifting task goes on to 100% v3; a 90/10 split shows a
/// weight that is not even, in the same form as `virtual-service-reviews-50-v3.yaml`.
pub const VIRTUAL_SERVICE_REVIEWS_90_V1_10_V3: Sample = Sample {
    file: "virtual-service-reviews-90-v1-10-v3.yaml",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 90
    - destination:
        host: reviews
        subset: v3
      weight: 10
"#,
};

/// request-timeouts, step 2 (inline): reviews to v2, which calls ratings; ratings delayed 2 s.
pub const REVIEWS_V2_RATINGS_DELAY_2S: Sample = Sample {
    file: "reviews-v2+ratings-delay-2s (inline)",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
"#,
};

/// request-timeouts, step 3 (inline): a half-second timeout on calls to reviews.
pub const REVIEWS_TIMEOUT_0_5S: Sample = Sample {
    file: "reviews-timeout-0.5s (inline)",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
    timeout: 0.5s
"#,
};

/// circuit-breaking (inline): Istio's DestinationRule for httpbin, word for word but for the
/// host. Weft demo: it is set on reviews, and keeps reviews' subsets (the DestinationRule of
/// that name is replaced).
pub const REVIEWS_CIRCUIT_BREAKER: Sample = Sample {
    file: "reviews-circuit-breaker (inline)",
    yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
"#,
};
