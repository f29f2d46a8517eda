//! `llm-router istio`: the EnvoyFilter, Gateway, VirtualServices, ServiceEntries and
//! DestinationRules for an Istio gateway, parsed back and checked field by field; what it refuses.
//! (tests/e2e/test_istio.py loads the same output into Envoy the way istiod would.)

mod common;
use common::{dir, json, run, write, yaml_to_json};
use serde_json::{json, Value};

const CONFIG: &str = "\
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
  - model_name: gpt-4o
    litellm_params: {model: azure/gpt-4o, api_base: os.environ/AZURE_API_BASE, api_key: os.environ/AZURE_API_KEY, api_version: 2024-10-21}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet-latest, api_key: os.environ/ANTHROPIC_API_KEY}
  - model_name: local
    litellm_params: {model: openai/llama, api_base: 'http://vllm.llm.svc.cluster.local:8000/v1'}
  - model_name: plain
    litellm_params: {model: openai/llama, api_base: 'http://models.example.com:8080/v1'}
general_settings:
  master_key: os.environ/GATEWAY_KEY
";

const ENV: &[(&str, &str)] = &[("AZURE_API_BASE", "https://my-res.openai.azure.com")];
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const URL: &str = "https://modules.example.com/llm_router.wasm";

fn args<'a>(config: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["istio", config, "--url", URL, "--sha256", SHA];
    a.extend_from_slice(extra);
    a
}

/// The YAML output split into its documents, each parsed; must equal the JSON output's items.
fn objects_of(config_text: &str, extra: &[&str]) -> Vec<Value> {
    let d = dir("istio");
    let config = write(&d, "config.yaml", config_text);
    let a = args(&config, extra);
    let yaml = run(&a, ENV);
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    let docs: Vec<Value> = yaml.stdout.split("\n---\n").map(yaml_to_json).collect();
    let mut a = a.clone();
    a.extend_from_slice(&["--format", "json"]);
    let list = json(&run(&a, ENV).stdout);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array(), Some(&docs));
    docs
}

fn objects(extra: &[&str]) -> Vec<Value> {
    objects_of(CONFIG, extra)
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn patch<'a>(ef: &'a Value, apply_to: &str) -> &'a Value {
    ef["spec"]["configPatches"].as_array().and_then(|ps| ps.iter().find(|p| p["applyTo"] == apply_to)).unwrap_or_else(|| panic!("no {apply_to} patch"))
}

#[test]
fn objects_in_apply_order_all_in_one_namespace() {
    let objs = objects(&["--namespace", "llm-gw"]);
    let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "EnvoyFilter",
            "Gateway",
            "VirtualService",
            "ServiceEntry",
            "DestinationRule",
            "VirtualService",
            "ServiceEntry",
            "DestinationRule",
            "VirtualService",
            "ServiceEntry",
            "DestinationRule",
            // The Kubernetes service: a route, no ServiceEntry/DestinationRule (Istio knows it).
            "VirtualService",
            "VirtualService",
            "ServiceEntry",
            "DestinationRule",
        ]
    );
    for o in &objs {
        assert_eq!(o["metadata"]["namespace"], "llm-gw", "{o}");
        if ["VirtualService", "ServiceEntry", "DestinationRule"].contains(&o["kind"].as_str().unwrap_or("")) {
            assert_eq!(o["spec"]["exportTo"], json!(["."]), "{} is visible outside the namespace", o["metadata"]["name"]);
        }
    }
}

#[test]
fn the_envoy_filter_carries_the_filter_with_the_flag_before_grpc_stats() {
    let objs = objects(&["--namespace", "llm-gw", "--selector", "app=llm-gateway"]);
    let ef = of_kind(&objs, "EnvoyFilter")[0];
    assert_eq!(ef["apiVersion"], "networking.istio.io/v1alpha3");
    assert_eq!(ef["spec"]["workloadSelector"], json!({"labels": {"app": "llm-gateway"}}));
    let applies: Vec<&str> = ef["spec"]["configPatches"].as_array().map(|ps| ps.iter().filter_map(|p| p["applyTo"].as_str()).collect()).unwrap_or_default();
    assert_eq!(applies, ["EXTENSION_CONFIG", "HTTP_FILTER", "LISTENER", "NETWORK_FILTER"]);
    for p in ef["spec"]["configPatches"].as_array().into_iter().flatten() {
        assert_eq!(p["match"]["context"], "GATEWAY");
        // Gateway proxies older than 1.28 get none of them.
        assert_eq!(p["match"]["proxy"]["proxyVersion"], r"^(1\.(2[89]|[3-9][0-9])|[2-9]\.[0-9]+)([.-].*)?$");
    }

    let ext = patch(ef, "EXTENSION_CONFIG");
    assert_eq!(ext["patch"]["operation"], "ADD");
    let value = &ext["patch"]["value"];
    assert_eq!(value["name"], "llm-gw.llm-router");
    let tc = &value["typed_config"];
    assert_eq!(tc["@type"], "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm");
    let cfg = &tc["config"];
    assert_eq!(cfg["name"], "llm-gw.llm-router");
    assert_eq!(cfg["root_id"], "llm_router");
    assert_eq!(cfg["allow_on_headers_stop_iteration"], true);
    assert_eq!(cfg["failure_policy"], "FAIL_CLOSED");
    let vm = &cfg["vm_config"];
    assert_eq!(vm["vm_id"], "llm_router");
    assert_eq!(vm["runtime"], "envoy.wasm.runtime.v8");
    // As istiod writes a WasmPlugin's: istio-agent fetches it (cluster `_`) and checks the sha256.
    assert_eq!(vm["code"], json!({"remote": {"http_uri": {"uri": URL, "cluster": "_", "timeout": "30s"}, "sha256": SHA}}));
    assert_eq!(
        vm["environment_variables"],
        json!({"host_env_keys": ["ANTHROPIC_API_KEY", "AZURE_API_BASE", "AZURE_API_KEY", "GATEWAY_KEY", "OPENAI_API_KEY"]})
    );
    assert_eq!(cfg["configuration"]["@type"], "type.googleapis.com/google.protobuf.StringValue");

    let hf = patch(ef, "HTTP_FILTER");
    assert_eq!(hf["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        hf["match"]["listener"],
        json!({"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": "envoy.filters.http.grpc_stats"}}}})
    );
    assert_eq!(
        hf["patch"]["value"],
        json!({"name": "llm-gw.llm-router", "config_discovery": {
            "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"]}})
    );
    // llm-router envoy's values: the buffer that answers 413, the idle timeout, HTTP/1.0.
    assert_eq!(patch(ef, "LISTENER")["patch"], json!({"operation": "MERGE", "value": {"per_connection_buffer_limit_bytes": 1114112}}));
    let hcm = &patch(ef, "NETWORK_FILTER")["patch"]["value"]["typed_config"];
    assert_eq!(hcm["stream_idle_timeout"], "600s");
    assert_eq!(hcm["http_protocol_options"], json!({"accept_http_10": true}));
}

#[test]
fn the_plugin_config_is_the_config_with_references_and_failover_off() {
    let objs = objects(&[]);
    let ef = of_kind(&objs, "EnvoyFilter")[0];
    let text = patch(ef, "EXTENSION_CONFIG")["patch"]["value"]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap_or("").to_string();
    let cfg: Value = json(&text);
    assert_eq!(cfg["model_list"][1]["litellm_params"]["api_base"], "os.environ/AZURE_API_BASE");
    assert_eq!(cfg["model_list"][1]["litellm_params"]["api_version"], "2024-10-21");
    assert_eq!(cfg["general_settings"]["master_key"], "os.environ/GATEWAY_KEY");
    assert_eq!(cfg["envoy_settings"]["failover"], false);
}

#[test]
fn one_virtual_service_per_host_routes_only_the_filters_cluster() {
    let objs = objects(&[]);
    let gw = of_kind(&objs, "Gateway")[0];
    assert_eq!(gw["metadata"]["name"], "llm-router");
    assert_eq!(gw["spec"]["selector"], json!({"istio": "ingressgateway"}));
    assert_eq!(
        gw["spec"]["servers"],
        json!([{"port": {"number": 80, "name": "http-llm-router", "protocol": "HTTP"},
                "hosts": ["./api.openai.com", "./my-res.openai.azure.com", "./api.anthropic.com", "./vllm.llm.svc.cluster.local", "./models.example.com"]}])
    );
    let vss = of_kind(&objs, "VirtualService");
    let hosts: Vec<&Value> = vss.iter().map(|v| &v["spec"]["hosts"]).collect();
    assert_eq!(hosts.len(), 5);
    let openai = vss.iter().find(|v| v["spec"]["hosts"] == json!(["api.openai.com"])).unwrap_or_else(|| panic!("no openai VS"));
    assert_eq!(openai["metadata"]["name"], "llm-router-api-openai-com");
    assert_eq!(openai["spec"]["gateways"], json!(["llm-router"]));
    assert_eq!(
        openai["spec"]["http"],
        json!([{
            "name": "llm-router-api-openai-com-443",
            "match": [{"headers": {"x-llm-router-cluster": {"exact": "outbound|443||api.openai.com"}}}],
            "route": [{"destination": {"host": "api.openai.com", "port": {"number": 443}}}],
            "headers": {"request": {"remove": ["x-llm-router-cluster"]}},
            "timeout": "0s",
            "retries": {"attempts": 2, "retryOn": "connect-failure,refused-stream"}
        }])
    );
    let vllm = vss.iter().find(|v| v["spec"]["hosts"] == json!(["vllm.llm.svc.cluster.local"])).unwrap_or_else(|| panic!("no vllm VS"));
    assert_eq!(vllm["spec"]["http"][0]["route"][0]["destination"], json!({"host": "vllm.llm.svc.cluster.local", "port": {"number": 8000}}));
}

#[test]
fn a_custom_cluster_header_is_matched_and_removed() {
    let config = format!("{CONFIG}envoy_settings: {{cluster_header: x-route-to}}\n");
    let objs = objects_of(&config, &[]);
    let vs = of_kind(&objs, "VirtualService")[0];
    assert_eq!(vs["spec"]["http"][0]["match"][0]["headers"], json!({"x-route-to": {"exact": "outbound|443||api.openai.com"}}));
    assert_eq!(vs["spec"]["http"][0]["headers"]["request"]["remove"], json!(["x-route-to"]));
}

#[test]
fn service_entries_and_destination_rules_per_external_host() {
    let objs = objects(&[]);
    let entries = of_kind(&objs, "ServiceEntry");
    let hosts: Vec<&str> = entries.iter().filter_map(|e| e["spec"]["hosts"][0].as_str()).collect();
    assert_eq!(hosts, ["api.openai.com", "my-res.openai.azure.com", "api.anthropic.com", "models.example.com"]);
    for e in &entries {
        assert_eq!(e["apiVersion"], "networking.istio.io/v1");
        assert_eq!(e["spec"]["location"], "MESH_EXTERNAL");
        assert_eq!(e["spec"]["resolution"], "DNS");
    }
    // Port 443 declared HTTP: the gateway sends plain HTTP to outbound|443||api.openai.com and the
    // DestinationRule originates TLS.
    assert_eq!(entries[0]["spec"]["ports"], json!([{"number": 443, "name": "http-443", "protocol": "HTTP"}]));
    let rules = of_kind(&objs, "DestinationRule");
    assert_eq!(rules.len(), 4);
    let rule = |host: &str| rules.iter().find(|r| r["spec"]["host"] == host).copied().unwrap_or_else(|| panic!("no rule for {host}"));
    assert_eq!(
        rule("api.openai.com")["spec"]["trafficPolicy"]["portLevelSettings"],
        json!([{"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": "api.openai.com", "subjectAltNames": ["api.openai.com"]}}])
    );
    assert_eq!(
        rule("api.openai.com")["spec"]["trafficPolicy"]["connectionPool"],
        json!({"tcp": {"maxConnections": 10000}, "http": {"http1MaxPendingRequests": 10000, "http2MaxRequests": 10000, "maxRetries": 10000}})
    );
    assert_eq!(rule("models.example.com")["spec"]["trafficPolicy"]["portLevelSettings"], json!([{"port": {"number": 8080}, "tls": {"mode": "DISABLE"}}]));
}

#[test]
fn the_namespace_is_explicit_or_defaulted_visibly() {
    let d = dir("istio-ns");
    let config = write(&d, "config.yaml", CONFIG);
    let out = run(&args(&config, &[]), ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("note: namespace istio-system (the default)"), "{}", out.stderr);
    assert!(out.stdout.contains("#   namespace: istio-system (default; --namespace)"), "{}", out.stdout);
    assert!(out.stdout.lines().filter(|l| l.trim() == "namespace: istio-system").count() >= 15, "{}", out.stdout);
    let out = run(&args(&config, &["--namespace", "llm"]), ENV);
    assert!(!out.stderr.contains("(the default)"), "{}", out.stderr);
    assert!(out.stderr.contains("gateway pods labelled istio=ingressgateway in namespace llm"), "{}", out.stderr);
    let out = run(&args(&config, &["--namespace", "Not_A_Name"]), ENV);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--namespace: `Not_A_Name` is not a Kubernetes name"), "{}", out.stderr);
}

#[test]
fn istio_before_1_28_is_refused() {
    let d = dir("istio-version");
    let config = write(&d, "config.yaml", CONFIG);
    for old in ["1.27", "1.27.3", "1.22.0"] {
        let out = run(&args(&config, &["--istio-version", old]), ENV);
        assert_eq!(out.code, 2, "{old}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("--istio-version {old}: not supported")), "{}", out.stderr);
        assert!(out.stderr.contains("allow_on_headers_stop_iteration"), "{}", out.stderr);
        assert!(out.stderr.contains("Use Istio >= 1.28"), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    for ok in ["1.28", "1.29.1", "v1.30.0"] {
        assert_eq!(run(&args(&config, &["--istio-version", ok]), ENV).code, 0, "{ok}");
    }
    let out = run(&args(&config, &["--istio-version", "latest"]), ENV);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("expected MAJOR.MINOR"), "{}", out.stderr);
}

#[test]
fn a_literal_secret_is_refused_not_written() {
    let d = dir("istio-literal");
    let cases = [
        ("model_list:\n- model_name: a\n  litellm_params: {model: openai/a, api_key: sk-literal-123}\n", "model_list[0].litellm_params.api_key", 3),
        ("model_list:\n- model_name: a\n  litellm_params: {model: openai/a, api_key: os.environ/K}\ngeneral_settings:\n  master_key: sk-master\n", "general_settings.master_key", 5),
        ("model_list:\n- model_name: a\n  litellm_params: {model: openai/a, api_key: os.environ/K}\nenvironment_variables:\n  LANGFUSE_HOST: https://x\n", "environment_variables.LANGFUSE_HOST", 5),
        ("model_list:\n- model_name: a\n  litellm_params: {model: openai/a, api_key: os.environ/K}\ngeneral_settings:\n  database_url: postgresql://u:pw@db/x\n", "general_settings.database_url", 5),
    ];
    for (text, field, line) in cases {
        let config = write(&d, "config.yaml", text);
        let out = run(&args(&config, &[]), &[]);
        assert_eq!(out.code, 1, "{field}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert!(out.stderr.contains(&format!("config.yaml:{line}:")), "{}", out.stderr);
        assert!(out.stderr.contains(field), "{}", out.stderr);
        assert!(out.stderr.contains("a literal secret would be written into the EnvoyFilter's plugin config"), "{}", out.stderr);
        assert!(out.stderr.contains("write `os.environ/NAME`"), "{}", out.stderr);
        assert!(out.stderr.contains("not generating: 1 error"), "{}", out.stderr);
    }
    // References, and values that are not secrets, pass.
    let config = write(&d, "config.yaml", "model_list:\n- model_name: a\n  litellm_params: {model: openai/a, api_key: os.environ/K, auth_header_name: x-api-key, max_tokens: 5}\n");
    assert_eq!(run(&args(&config, &[]), &[]).code, 0);
}

#[test]
fn secrets_reach_the_gateway_from_a_secret() {
    let d = dir("istio-env");
    let config = write(&d, "config.yaml", CONFIG);
    let patch_json = d.join("patch.json").display().to_string();
    let patch_yaml = d.join("patch.yaml").display().to_string();
    let out = run(&args(&config, &["--secret", "llm-keys", "--gateway-patch", &patch_json, "--namespace", "gw", "--deployment", "llm-gateway"]), ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let patch = json(&std::fs::read_to_string(&patch_json).unwrap_or_default());
    let secret = |n: &str| json!({"name": n, "valueFrom": {"secretKeyRef": {"name": "llm-keys", "key": n}}});
    assert_eq!(
        patch,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "istio-proxy", "env": [
            secret("ANTHROPIC_API_KEY"),
            // An api_base reference: the value the clusters were derived from, not a secret.
            {"name": "AZURE_API_BASE", "value": "https://my-res.openai.azure.com"},
            secret("AZURE_API_KEY"),
            secret("GATEWAY_KEY"),
            secret("OPENAI_API_KEY"),
        ]}]}}}})
    );
    // YAML, with the command in front; the header repeats it and the Helm values.
    let out = run(&args(&config, &["--gateway-patch", &patch_yaml]), ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&patch_yaml).unwrap_or_default();
    assert!(text.starts_with("# kubectl -n istio-system patch deployment istio-ingressgateway --type strategic --patch-file"), "{text}");
    let env = &yaml_to_json(&text)["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env[0], json!({"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-router-keys", "key": "ANTHROPIC_API_KEY"}}}));
    assert!(out.stdout.contains("kubectl -n istio-system create secret generic llm-router-keys --from-literal=ANTHROPIC_API_KEY=..."), "{}", out.stdout);
    assert!(out.stdout.contains("envVarFrom:"), "{}", out.stdout);
    // No secret value anywhere in the output.
    let out = run(&args(&config, &[]), &[("AZURE_API_BASE", "https://my-res.openai.azure.com"), ("OPENAI_API_KEY", "sk-must-not-appear")]);
    assert!(!out.stdout.contains("sk-must-not-appear") && !out.stderr.contains("sk-must-not-appear"));
    assert!(out.stderr.contains("note: --gateway-patch FILE writes the Deployment patch"), "{}", out.stderr);
}

#[test]
fn module_urls_and_their_pins() {
    let d = dir("istio-url");
    let config = write(&d, "config.yaml", CONFIG);
    let code = |extra: &[&str]| -> Value {
        let mut a = vec!["istio", config.as_str(), "--format", "json"];
        a.extend_from_slice(extra);
        let out = run(&a, ENV);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let list = json(&out.stdout);
        list["items"][0]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"].clone()
    };
    assert_eq!(code(&["--url", "file:///var/lib/llm_router.wasm"]), json!({"local": {"filename": "/var/lib/llm_router.wasm"}}));
    let digest = format!("oci://ghcr.io/acme/llm-router@sha256:{SHA}");
    assert_eq!(code(&["--url", &digest]), json!({"remote": {"http_uri": {"uri": digest, "cluster": "_", "timeout": "30s"}}}));
    assert_eq!(code(&["--url", "oci://ghcr.io/acme/llm-router:0.1.0", "--sha256", SHA])["remote"]["sha256"], SHA);
    let refused = |extra: &[&str], needle: &str| {
        let mut a = vec!["istio", config.as_str()];
        a.extend_from_slice(extra);
        let out = run(&a, ENV);
        assert_eq!(out.code, 2, "{extra:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{extra:?}: {}", out.stderr);
    };
    refused(&[], "missing --url");
    refused(&["--url", URL], "pin the module: --sha256");
    refused(&["--url", "oci://ghcr.io/acme/llm-router:0.1.0"], "pin the image");
    refused(&["--url", "file:///x.wasm", "--sha256", SHA], "not checked for file://");
    refused(&["--url", URL, "--sha256", "xyz"], "is not a sha256");
    refused(&["--url", URL, "--sha256", SHA, "--target-ref", "Gateway/gw"], "--target-ref");
    refused(&["--url", URL, "--sha256", SHA, "--failure-policy", "maybe"], "expected closed, open or reload");
}

#[test]
fn failure_policies() {
    for (flag, envoy) in [("open", "FAIL_OPEN"), ("reload", "FAIL_RELOAD"), ("closed", "FAIL_CLOSED")] {
        let objs = objects(&["--failure-policy", flag]);
        let ef = of_kind(&objs, "EnvoyFilter")[0];
        assert_eq!(patch(ef, "EXTENSION_CONFIG")["patch"]["value"]["typed_config"]["config"]["failure_policy"], envoy);
    }
}

#[test]
fn hosts_istio_cannot_route_are_refused() {
    let d = dir("istio-hosts");
    for (api_base, needle) in [
        ("http://vllm:8000", "`vllm` is not a fully qualified host name"),
        ("http://vllm.llm.svc:8000", "`vllm.llm.svc` is not a fully qualified host name"),
        ("http://[::1]:8000", "Istio hosts cannot be IPv6 literals"),
    ] {
        let config = write(&d, "config.yaml", &format!("model_list:\n- model_name: a\n  litellm_params: {{model: openai/a, api_base: '{api_base}'}}\n"));
        let out = run(&args(&config, &[]), &[]);
        assert_eq!(out.code, 1, "{api_base}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{}", out.stderr);
    }
}

#[test]
fn notes_for_cluster_names_and_kubernetes_services() {
    let d = dir("istio-notes");
    let config = write(
        &d,
        "config.yaml",
        "model_list:\n- model_name: a\n  litellm_params: {model: openai/a, api_base: 'http://vllm.llm.svc.cluster.local:8000', cluster: vllm}\n",
    );
    let out = run(&args(&config, &["--format", "json"]), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("set `cluster: vllm`: in Istio it only labels the route"), "{}", out.stderr);
    assert!(out.stderr.contains("vllm.llm.svc.cluster.local is a Kubernetes service"), "{}", out.stderr);
    // The header value the route matches is what the filter sets.
    let list = json(&out.stdout);
    let vs = list["items"].as_array().and_then(|i| i.iter().find(|o| o["kind"] == "VirtualService")).cloned().unwrap_or_default();
    assert_eq!(vs["spec"]["http"][0]["match"][0]["headers"]["x-llm-router-cluster"]["exact"], "vllm");
}

#[test]
fn the_header_says_what_istio_users_lose_and_need() {
    let d = dir("istio-header");
    let config = write(&d, "config.yaml", CONFIG);
    let out = run(&args(&config, &[]), ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let header: String = out.stdout.lines().take_while(|l| l.starts_with('#') || l.is_empty()).collect::<Vec<_>>().join("\n");
    assert!(header.contains("on Istio >= 1.28"), "{header}");
    assert!(header.contains("retries and fallbacks inside one request"), "{header}");
    assert!(header.contains("envoy_settings.failover: false"), "{header}");
    assert!(header.contains("Cooldowns, balancing, health probes and metrics work as in Envoy"), "{header}");
    assert!(header.contains("Not supported: sidecars, waypoints (ambient)"), "{header}");
    assert!(header.contains("Give the LLM API its own gateway"), "{header}");
    assert!(header.contains("extraStatTags: [model_group, deployment, class, fallback_from, error_code, team, key_alias, scope, scope_name, rls_call, rls_result]"), "{header}");
    assert!(header.contains(r#"proxyStatsMatcher.inclusionRegexps: [".*llm_router_.*"]"#), "{header}");
}

/// The objects carry no failover wiring, so the plugin config must say so: with
/// `envoy_settings.failover` on, the router would attach its attempt state header and nothing
/// would strip it before the provider.
#[test]
fn failover_is_declared_off_even_when_the_config_asks_for_it() {
    let with_retries = format!("{CONFIG}router_settings: {{num_retries: 2, fallbacks: [{{gpt-4o: [claude]}}]}}\nenvoy_settings: {{failover: true}}\n");
    let objs = objects_of(&with_retries, &[]);
    let ef = of_kind(&objs, "EnvoyFilter")[0];
    let text = patch(ef, "EXTENSION_CONFIG")["patch"]["value"]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap_or("").to_string();
    assert_eq!(json(&text)["envoy_settings"]["failover"], Value::Bool(false));
}

#[test]
fn a_provider_key_read_for_want_of_an_api_key_is_an_optional_secret() {
    let d = dir("istio-implicit-key");
    let config = write(
        &d,
        "config.yaml",
        "model_list:\n  - model_name: llama\n    litellm_params: {model: groq/llama-3.1-8b-instant}\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}\n",
    );
    let patch_json = d.join("patch.json").display().to_string();
    let out = run(&args(&config, &["--gateway-patch", &patch_json, "--format", "json"]), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list = json(&out.stdout);
    let ef = list["items"].as_array().and_then(|items| items.iter().find(|o| o["kind"] == "EnvoyFilter")).cloned().unwrap_or_default();
    assert!(ef.to_string().contains(r#""host_env_keys":["GROQ_API_KEY","OPENAI_API_KEY"]"#), "{ef}");
    let patch = json(&std::fs::read_to_string(&patch_json).unwrap_or_default());
    assert_eq!(
        patch["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([
            // The filter loads without it (that deployment then goes without a key): so does the gateway.
            {"name": "GROQ_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-router-keys", "key": "GROQ_API_KEY", "optional": true}}},
            {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-router-keys", "key": "OPENAI_API_KEY"}}},
        ])
    );
}

#[test]
fn the_rate_limit_service_must_be_an_istio_outbound_cluster() {
    let d = dir("istio-rls");
    let with = |cluster: &str| format!("{CONFIG}envoy_settings:\n  rate_limit_service: {{cluster: '{cluster}'}}\n");
    for (cluster, needle) in [
        ("llm_router_rls", "`llm_router_rls` is not an Istio cluster"),
        ("outbound|8081||rls", "Istio names the cluster by the service's full host name (e.g. `outbound|8081||rls.<namespace>.svc.cluster.local`)"),
        ("outbound|x||rls.ns.svc.cluster.local", "`x` is not a port"),
        ("inbound|8081||rls.ns.svc.cluster.local", "not an Istio cluster"),
    ] {
        let config = write(&d, "config.yaml", &with(cluster));
        let out = run(&args(&config, &[]), ENV);
        assert_eq!(out.code, 1, "{cluster}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{cluster}: {}", out.stderr);
        assert!(out.stderr.contains("outbound|8081||") || out.stderr.contains("is not a port"), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    let config = write(&d, "config.yaml", &with("outbound|8081||llm-router-rls.limits.svc.cluster.local"));
    let out = run(&args(&config, &[]), ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let header: String = out.stdout.lines().take_while(|l| l.starts_with('#') || l.is_empty()).collect::<Vec<_>>().join("\n");
    assert!(header.contains("the filter calls outbound|8081||llm-router-rls.limits.svc.cluster.local over gRPC"), "{header}");
    assert!(header.contains("name the Service port 8081 `grpc` or `grpc-<suffix>`, or\n#   set `appProtocol: grpc` on it"), "{header}");
    assert!(!header.contains("outside the cluster"), "{header}");
    assert!(out.stderr.contains("is HTTP/2 only if its Service port 8081 is named grpc/grpc-* or has appProtocol: grpc"), "{}", out.stderr);
    // The objects are those of a config without it (nothing is invented for the RLS).
    let kinds = |text: &str| objects_of(text, &[]).iter().map(|o| o["kind"].clone()).collect::<Vec<_>>();
    assert_eq!(kinds(&with("outbound|8081||llm-router-rls.limits.svc.cluster.local")), kinds(CONFIG));
    let config = write(&d, "config.yaml", &with("outbound|8081||rls.example.com"));
    let out = run(&args(&config, &[]), ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("rls.example.com is outside the cluster: it needs a ServiceEntry whose port 8081 has protocol GRPC"), "{}", out.stdout);
}
