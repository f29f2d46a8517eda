//! Istio objects for a config: one WasmPlugin carrying the filter and its config, and for each
//! upstream host a ServiceEntry (so the mesh has the `outbound|port||host` cluster the filter
//! names) and a DestinationRule (TLS origination with SNI for https api_bases).
//!
//! Phase: `STATS`, i.e. after Istio's authentication and authorization filters and before the
//! router. The filter rewrites `:authority`, `:path` and the `authorization` header (it puts the
//! provider's key there), so it must run after `RequestAuthentication`/`AuthorizationPolicy`
//! have seen the client's request (`AUTHN` would put it before JWT validation, which would then
//! see a provider key); every phase runs before routing. `failStrategy: FAIL_CLOSE`: a plugin that
//! cannot be fetched or configured rejects traffic instead of letting requests pass unrouted.

use crate::env;
use crate::plan::Endpoint;
use crate::source::Source;
use crate::value::Value;

#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub namespace: Option<String>,
    /// Where Istio fetches llm_router.wasm (`oci://...`, `https://...` or `file://...`).
    pub url: String,
    /// `selector.matchLabels` (used when `target_ref` is not given).
    pub selector: Vec<(String, String)>,
    /// `targetRefs` entry (`Gateway/name`, `Service/name`), instead of the selector.
    pub target_ref: Option<(String, String)>,
}

pub const DEFAULT_URL: &str = "oci://REGISTRY/llm-router:0.1.0";
pub const PHASE: &str = "STATS";
pub const FAIL_STRATEGY: &str = "FAIL_CLOSE";

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut m = vec![("name", Value::from(name))];
    if let Some(ns) = namespace {
        m.push(("namespace", Value::from(ns)));
    }
    m.push(("labels", Value::map([("app.kubernetes.io/managed-by", Value::from("llm-router"))])));
    Value::map(m)
}

/// The WasmPlugin. `pluginConfig` is the config itself (Istio hands it to the filter as JSON);
/// every `os.environ/NAME` is read from the proxy's environment (`valueFrom: HOST`).
pub fn wasm_plugin(source: &Source, opts: &Options) -> Value {
    let mut spec: Vec<(&str, Value)> = Vec::new();
    match &opts.target_ref {
        Some((kind, name)) => {
            let group = if kind == "Gateway" { "gateway.networking.k8s.io" } else { "" };
            spec.push((
                "targetRefs",
                Value::seq([Value::map([("group", Value::from(group)), ("kind", Value::from(kind.as_str())), ("name", Value::from(name.as_str()))])]),
            ));
        }
        None => spec.push((
            "selector",
            Value::map([(
                "matchLabels",
                Value::Map(opts.selector.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect()),
            )]),
        )),
    }
    spec.extend([
        ("url", Value::from(opts.url.as_str())),
        ("pluginName", Value::from("llm_router")),
        ("phase", Value::from(PHASE)),
        ("type", Value::from("HTTP")),
        ("failStrategy", Value::from(FAIL_STRATEGY)),
    ]);
    let refs = env::references(&source.value);
    if !refs.is_empty() {
        spec.push((
            "vmConfig",
            Value::map([(
                "env",
                Value::seq(refs.iter().map(|n| Value::map([("name", Value::from(n.as_str())), ("valueFrom", Value::from("HOST"))]))),
            )]),
        ));
    }
    spec.push(("pluginConfig", source.value.clone()));
    Value::map([
        ("apiVersion", Value::from("extensions.istio.io/v1alpha1")),
        ("kind", Value::from("WasmPlugin")),
        ("metadata", metadata(&opts.name, opts.namespace.as_deref())),
        ("spec", Value::map(spec)),
    ])
}

/// A DNS-1123 name for a host's objects: `llm-router-api-openai-com`.
pub fn object_name(prefix: &str, host: &str) -> String {
    let mut s: String = format!("{prefix}-{host}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.truncate(63);
    s.trim_matches('-').to_string()
}

/// Hosts Istio already knows (Kubernetes services): no ServiceEntry or DestinationRule for them.
pub fn in_cluster(host: &str) -> bool {
    host.ends_with(".svc.cluster.local") || host.ends_with(".svc")
}

/// One host and the ports it is reached on (`(port, tls)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub host: String,
    pub ports: Vec<(u16, bool)>,
    pub ip: bool,
}

pub fn hosts(endpoints: &[Endpoint]) -> Vec<Host> {
    let mut out: Vec<Host> = Vec::new();
    for ep in endpoints {
        let i = match out.iter().position(|h| h.host == ep.host) {
            Some(i) => i,
            None => {
                out.push(Host { host: ep.host.clone(), ports: Vec::new(), ip: ep.is_ip() });
                out.len() - 1
            }
        };
        if let Some(host) = out.get_mut(i) {
            if !host.ports.iter().any(|(p, _)| *p == ep.port) {
                host.ports.push((ep.port, ep.tls));
            }
        }
    }
    out
}

/// The mesh-external service. Ports are declared `HTTP`: the proxy receives plain HTTP from the
/// filter and, for https api_bases, the DestinationRule originates TLS on the same port.
pub fn service_entry(h: &Host, opts: &Options) -> Value {
    let ports = Value::seq(h.ports.iter().map(|(port, _)| {
        Value::map([("number", Value::from(*port)), ("name", Value::from(format!("http-{port}"))), ("protocol", Value::from("HTTP"))])
    }));
    let mut spec = vec![("hosts", Value::seq([Value::from(h.host.as_str())]))];
    if h.ip {
        spec.push(("addresses", Value::seq([Value::from(h.host.as_str())])));
    }
    spec.extend([("location", Value::from("MESH_EXTERNAL")), ("ports", ports)]);
    if h.ip {
        spec.push(("resolution", Value::from("STATIC")));
        spec.push(("endpoints", Value::seq([Value::map([("address", Value::from(h.host.as_str()))])])));
    } else {
        spec.push(("resolution", Value::from("DNS")));
    }
    Value::map([
        ("apiVersion", Value::from("networking.istio.io/v1")),
        ("kind", Value::from("ServiceEntry")),
        ("metadata", metadata(&object_name(&opts.name, &h.host), opts.namespace.as_deref())),
        ("spec", Value::map(spec)),
    ])
}

/// TLS origination (mode SIMPLE, SNI = host) on https ports; plain (DISABLE) on http ports.
pub fn destination_rule(h: &Host, opts: &Options) -> Value {
    let settings = Value::seq(h.ports.iter().map(|(port, tls)| {
        let tls = if *tls {
            Value::map([("mode", Value::from("SIMPLE")), ("sni", Value::from(h.host.as_str()))])
        } else {
            Value::map([("mode", Value::from("DISABLE"))])
        };
        Value::map([("port", Value::map([("number", Value::from(*port))])), ("tls", tls)])
    }));
    Value::map([
        ("apiVersion", Value::from("networking.istio.io/v1")),
        ("kind", Value::from("DestinationRule")),
        ("metadata", metadata(&object_name(&opts.name, &h.host), opts.namespace.as_deref())),
        (
            "spec",
            Value::map([("host", Value::from(h.host.as_str())), ("trafficPolicy", Value::map([("portLevelSettings", settings)]))]),
        ),
    ])
}

/// Notes for the operator about endpoints Istio will not reach as the filter expects.
pub fn notes(endpoints: &[Endpoint]) -> Vec<String> {
    let mut out = Vec::new();
    for ep in endpoints {
        let istio_name = format!("outbound|{}||{}", ep.port, ep.host);
        if ep.explicit && ep.cluster != istio_name {
            out.push(format!(
                "deployments {} set `cluster: {}`, but Istio names the cluster for {} `{istio_name}`: drop `cluster` so the filter derives that name",
                ep.deployments.join(", "),
                ep.cluster,
                ep.url()
            ));
        }
        if in_cluster(&ep.host) {
            out.push(format!("{} is a Kubernetes service: no ServiceEntry/DestinationRule is written for it", ep.host));
        } else if !ep.is_ip() && !ep.host.contains('.') {
            out.push(format!(
                "`{}` is a short host name; Istio names clusters by fully qualified name (use e.g. {}.<namespace>.svc.cluster.local in api_base)",
                ep.host, ep.host
            ));
        }
    }
    out
}

/// All objects: the WasmPlugin, then a ServiceEntry and a DestinationRule per upstream host.
pub fn objects(source: &Source, endpoints: &[Endpoint], opts: &Options) -> Vec<Value> {
    let mut out = vec![wasm_plugin(source, opts)];
    for h in hosts(endpoints).iter().filter(|h| !in_cluster(&h.host)) {
        out.push(service_entry(h, opts));
        out.push(destination_rule(h, opts));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(object_name("llm-router", "api.openai.com"), "llm-router-api-openai-com");
        assert_eq!(object_name("llm-router", "::1"), "llm-router-1");
        assert!(object_name("x", &"a".repeat(100)).len() <= 63);
    }
}
