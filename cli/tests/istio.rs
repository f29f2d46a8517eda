//! `llm-router istio`: the WasmPlugin and the ServiceEntry/DestinationRule objects, parsed back
//! and checked against the schema fields Istio reads.

mod common;
use common::{dir, json, run, write, yaml_to_json};
use serde_json::Value;

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

/// The YAML output split into its documents, each parsed; must equal the JSON output's items.
fn objects(extra: &[&str]) -> Vec<Value> {
    let d = dir("istio");
    let config = write(&d, "config.yaml", CONFIG);
    let mut args = vec!["istio", config.as_str()];
    args.extend_from_slice(extra);
    let yaml = run(&args, ENV);
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    let docs: Vec<Value> = yaml.stdout.split("\n---\n").map(yaml_to_json).collect();
    args.extend_from_slice(&["--format", "json"]);
    let list = json(&run(&args, ENV).stdout);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array(), Some(&docs));
    docs
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn wasm_plugin_schema_fields() {
    let objs = objects(&["--namespace", "llm", "--url", "oci://ghcr.io/acme/llm-router:1.0"]);
    let plugins = of_kind(&objs, "WasmPlugin");
    assert_eq!(plugins.len(), 1);
    let p = plugins[0];
    assert_eq!(p["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(p["metadata"]["name"], "llm-router");
    assert_eq!(p["metadata"]["namespace"], "llm");
    let spec = &p["spec"];
    assert_eq!(spec["url"], "oci://ghcr.io/acme/llm-router:1.0");
    assert_eq!(spec["phase"], "STATS");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["type"], "HTTP");
    assert_eq!(spec["pluginName"], "llm_router");
    assert_eq!(spec["selector"]["matchLabels"], serde_json::json!({"istio": "ingressgateway"}));
    // Every os.environ reference, read from the proxy's environment.
    let env: Vec<(String, String)> = spec["vmConfig"]["env"]
        .as_array()
        .map(|a| a.iter().map(|e| (e["name"].as_str().unwrap_or("").to_string(), e["valueFrom"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    let names = ["ANTHROPIC_API_KEY", "AZURE_API_BASE", "AZURE_API_KEY", "GATEWAY_KEY", "OPENAI_API_KEY"];
    assert_eq!(env, names.map(|n| (n.to_string(), "HOST".to_string())));
    // pluginConfig is the config itself, secrets as references, YAML 1.1 date kept as text.
    let cfg = &spec["pluginConfig"];
    assert_eq!(cfg["model_list"][1]["litellm_params"]["api_base"], "os.environ/AZURE_API_BASE");
    assert_eq!(cfg["model_list"][1]["litellm_params"]["api_version"], "2024-10-21");
    assert_eq!(cfg["general_settings"]["master_key"], "os.environ/GATEWAY_KEY");
    // Only the fields of the WasmPlugin schema.
    let allowed = ["selector", "targetRefs", "url", "sha256", "imagePullPolicy", "imagePullSecret", "pluginConfig", "pluginName", "phase", "priority", "failStrategy", "vmConfig", "match", "type"];
    for key in spec.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        assert!(allowed.contains(&key.as_str()), "{key} is not a WasmPlugin spec field");
    }
}

#[test]
fn target_refs_instead_of_a_selector() {
    let objs = objects(&["--target-ref", "Gateway/llm-gateway"]);
    let spec = &of_kind(&objs, "WasmPlugin")[0]["spec"];
    assert!(spec.get("selector").is_none());
    assert_eq!(spec["targetRefs"], serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "llm-gateway"}]));
}

#[test]
fn service_entries_and_destination_rules_per_upstream_host() {
    let objs = objects(&[]);
    let entries = of_kind(&objs, "ServiceEntry");
    let hosts: Vec<&str> = entries.iter().filter_map(|e| e["spec"]["hosts"][0].as_str()).collect();
    // The in-cluster service needs neither (Istio knows it).
    assert_eq!(hosts, ["api.openai.com", "my-res.openai.azure.com", "api.anthropic.com", "models.example.com"]);
    for e in &entries {
        assert_eq!(e["apiVersion"], "networking.istio.io/v1");
        assert_eq!(e["spec"]["location"], "MESH_EXTERNAL");
        assert_eq!(e["spec"]["resolution"], "DNS");
    }
    let openai = entries[0];
    assert_eq!(openai["metadata"]["name"], "llm-router-api-openai-com");
    // Port 443 declared HTTP: the filter's cluster is outbound|443||api.openai.com and the proxy
    // originates TLS itself.
    assert_eq!(openai["spec"]["ports"], serde_json::json!([{"number": 443, "name": "http-443", "protocol": "HTTP"}]));

    let rules = of_kind(&objs, "DestinationRule");
    assert_eq!(rules.len(), 4);
    let rule = |host: &str| rules.iter().find(|r| r["spec"]["host"] == host).copied().unwrap_or_else(|| panic!("no rule for {host}"));
    assert_eq!(
        rule("api.openai.com")["spec"]["trafficPolicy"]["portLevelSettings"],
        serde_json::json!([{"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": "api.openai.com"}}])
    );
    assert_eq!(
        rule("models.example.com")["spec"]["trafficPolicy"]["portLevelSettings"],
        serde_json::json!([{"port": {"number": 8080}, "tls": {"mode": "DISABLE"}}])
    );
}

#[test]
fn notes_for_what_istio_will_not_match() {
    let d = dir("istio-notes");
    let config = write(&d, "config.yaml", "model_list:\n- model_name: a\n  litellm_params: {model: openai/a, api_base: 'http://vllm:8000', cluster: vllm}\n");
    let out = run(&["istio", &config], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("set `cluster: vllm`, but Istio names the cluster for http://vllm:8000 `outbound|8000||vllm`"), "{}", out.stderr);
    assert!(out.stderr.contains("`vllm` is a short host name"), "{}", out.stderr);
}

#[test]
fn the_header_says_what_the_proxies_need_for_the_metric_labels() {
    let d = dir("istio-metrics");
    let config = write(&d, "config.yaml", CONFIG);
    let out = run(&["istio", config.as_str()], ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("extraStatTags: [model_group, deployment, class, fallback_from, error_code]"), "{}", out.stdout);
    assert!(out.stdout.contains(r#"proxyStatsMatcher.inclusionRegexps: [".*llm_router_.*"]"#), "{}", out.stdout);
}

/// The Istio objects carry no failover wiring, so the plugin config must say so: with
/// `envoy_settings.failover` on, the router would attach its attempt state header and nothing
/// would strip it before the provider.
#[test]
fn failover_is_declared_off_in_the_plugin_config() {
    let d = dir("istio-failover");
    let with_retries = format!("{CONFIG}router_settings: {{num_retries: 2, fallbacks: [{{gpt-4o: [claude]}}]}}\nenvoy_settings: {{failover: true}}\n");
    let config = write(&d, "config.yaml", &with_retries);
    let out = run(&["istio", config.as_str(), "--format", "json"], ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list = json(&out.stdout);
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let plugin = items.iter().find(|o| o["kind"] == "WasmPlugin").expect("a WasmPlugin");
    assert_eq!(plugin["spec"]["pluginConfig"]["envoy_settings"]["failover"], Value::Bool(false));
}
