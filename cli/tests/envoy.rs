//! `llm-router envoy`: the generated bootstrap, parsed back.

mod common;
use common::{dir, json, run, write, yaml_to_json};
use serde_json::Value;

const CONFIG: &str = "\
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}
  - model_name: local
    litellm_params: {model: openai/llama, api_base: 'http://127.0.0.1:18001/v1'}
  - model_name: vllm
    litellm_params: {model: hosted_vllm/llama, api_base: 'http://vllm.internal:8000/v1', cluster: my-vllm, api_key: os.environ/VLLM_KEY}
envoy_settings:
  cluster_header: x-route-to
  max_request_body_bytes: 4194304
router_settings:
  timeout: 900
";

fn generate(extra: &[&str]) -> (Value, String) {
    let d = dir("envoy");
    let config = write(&d, "config.yaml", CONFIG);
    let mut args = vec!["envoy", config.as_str(), "--format", "json", "--wasm", "/opt/llm_router.wasm"];
    args.extend_from_slice(extra);
    let out = run(&args, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    (json(&out.stdout), out.stderr)
}

fn clusters(b: &Value) -> Vec<&Value> {
    b["static_resources"]["clusters"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

fn cluster<'a>(b: &'a Value, name: &str) -> &'a Value {
    clusters(b).into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no cluster {name}"))
}

fn listener<'a>(b: &'a Value, name: &str) -> &'a Value {
    let ls = b["static_resources"]["listeners"].as_array().unwrap_or_else(|| panic!("no listeners"));
    ls.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("no listener {name}"))
}

fn hcm(l: &Value) -> &Value {
    &l["filter_chains"][0]["filters"][0]["typed_config"]
}

#[test]
fn one_cluster_per_upstream_with_tls_for_https() {
    let (b, stderr) = generate(&[]);
    let names: Vec<&str> = clusters(&b).iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["outbound|443||api.openai.com", "outbound|18001||127.0.0.1", "my-vllm"]);
    assert!(stderr.contains("3 upstream clusters (failover on); Envoy's environment must set OPENAI_API_KEY, VLLM_KEY"), "{stderr}");
    assert!(stderr.contains("note: the access log prints the router's deployment, group, attempts and tokens only with envoy_settings.access_log_properties: true"), "{stderr}");

    let openai = cluster(&b, "outbound|443||api.openai.com");
    assert_eq!(openai["type"], "STRICT_DNS");
    assert_eq!(openai["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"], serde_json::json!({"address": "api.openai.com", "port_value": 443}));
    let tls = &openai["transport_socket"];
    assert_eq!(tls["name"], "envoy.transport_sockets.tls");
    assert_eq!(tls["typed_config"]["sni"], "api.openai.com");
    assert_eq!(tls["typed_config"]["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"], "api.openai.com");
    // The redirector endpoint of a TLS cluster is reached in plain text.
    assert_eq!(openai["transport_socket_matches"][0]["match"], serde_json::json!({"llm_router_redirector": true}));
    assert_eq!(
        openai["load_assignment"]["endpoints"][1]["lb_endpoints"][0]["metadata"]["filter_metadata"]["envoy.transport_socket_match"],
        serde_json::json!({"llm_router_redirector": true})
    );

    let local = cluster(&b, "outbound|18001||127.0.0.1");
    assert_eq!(local["type"], "STATIC");
    assert!(local.get("transport_socket").is_none());
    let vllm = cluster(&b, "my-vllm");
    assert_eq!(vllm["type"], "STRICT_DNS");
    assert!(vllm.get("transport_socket").is_none());
    assert_eq!(vllm["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"], 8000);

    for c in clusters(&b) {
        assert_eq!(c["per_connection_buffer_limit_bytes"], 4194304 + 65536, "{}", c["name"]);
        // Failover: the redirector at priority 1 and the filter's upstream role.
        let eps = &c["load_assignment"]["endpoints"];
        assert_eq!(eps[1]["priority"], 1);
        assert_eq!(eps[1]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"], serde_json::json!({"address": "127.0.0.1", "port_value": 10001}));
        let filters = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"];
        assert_eq!(filters[0]["typed_config"]["config"]["root_id"], "llm_router_upstream");
        assert_eq!(filters[0]["typed_config"]["config"]["vm_config"]["vm_id"], "llm_router");
        assert_eq!(filters[1]["name"], "envoy.filters.http.upstream_codec");
    }
}

#[test]
fn background_health_probes_give_the_upstream_role_its_own_vm() {
    let d = dir("envoy-probes");
    let config = write(&d, "config.yaml", &format!("{CONFIG}general_settings:\n  background_health_checks: true\n"));
    let out = run(&["envoy", config.as_str(), "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = json(&out.stdout);
    for c in clusters(&b) {
        let filters = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"];
        assert_eq!(filters[0]["typed_config"]["config"]["vm_config"]["vm_id"], "llm_router_upstream", "{}", c["name"]);
    }
    let router = &hcm(listener(&b, "ingress"))["http_filters"][0]["typed_config"]["config"];
    assert_eq!(router["vm_config"]["vm_id"], "llm_router");
}

#[test]
fn listener_routes_and_filter() {
    let (b, _) = generate(&["--listen", "0.0.0.0:8080", "--admin", "127.0.0.1:9000"]);
    assert_eq!(b["admin"]["address"]["socket_address"], serde_json::json!({"address": "127.0.0.1", "port_value": 9000}));
    let ingress = listener(&b, "ingress");
    assert_eq!(ingress["address"]["socket_address"], serde_json::json!({"address": "0.0.0.0", "port_value": 8080}));
    // max_request_body_bytes plus the room the router's rewrite may need.
    assert_eq!(ingress["per_connection_buffer_limit_bytes"], 4194304 + 65536);
    let hcm = hcm(ingress);
    assert_eq!(hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"][0]["remove"], "x-route-to");
    // The config's longest timeout (900 s) wins over the 600 s default idle timeout.
    assert_eq!(hcm["stream_idle_timeout"], "900s");
    // The access log prints the router's filter-state properties.
    assert_eq!(hcm["access_log"][0]["name"], "envoy.access_loggers.stdout");
    let format = hcm["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"].as_str().unwrap_or("");
    assert_eq!(format, llm_router::cli_api::ACCESS_LOG_FORMAT);

    let routes = &hcm["route_config"]["virtual_hosts"][0]["routes"];
    assert_eq!(routes[0]["match"]["headers"][0]["name"], "x-route-to");
    assert_eq!(routes[0]["route"]["cluster_header"], "x-route-to");
    assert_eq!(routes[0]["route"]["timeout"], "0s");
    assert_eq!(routes[0]["route"]["retry_policy"]["retry_on"], "connect-failure,reset");
    assert_eq!(routes[0]["route"]["retry_policy"]["retry_priority"]["name"], "envoy.retry_priorities.previous_priorities");
    assert_eq!(routes[0]["route"]["internal_redirect_policy"]["redirect_response_codes"], serde_json::json!([307]));
    assert_eq!(routes[0]["request_headers_to_remove"], serde_json::json!(["x-route-to"]));
    // Nothing passes through: everything else is an OpenAI-shaped 404.
    assert_eq!(routes[2]["direct_response"]["status"], 404);
    let body = json(routes[2]["direct_response"]["body"]["inline_string"].as_str().unwrap_or(""));
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(routes[1]["name"], "llm_router_failover");
    assert_eq!(routes[2]["direct_response"]["status"], 404);
    assert_eq!(routes.as_array().map(Vec::len), Some(3));

    let filters = hcm["http_filters"].as_array().unwrap_or_else(|| panic!("no filters"));
    assert_eq!(filters.len(), 2);
    let wasm = &filters[0]["typed_config"]["config"];
    assert_eq!(wasm["root_id"], "llm_router");
    assert_eq!(wasm["allow_on_headers_stop_iteration"], true);
    assert_eq!(wasm["vm_config"]["code"]["local"]["filename"], "/opt/llm_router.wasm");
    assert_eq!(wasm["vm_config"]["environment_variables"]["host_env_keys"], serde_json::json!(["OPENAI_API_KEY", "VLLM_KEY"]));
    // The config is embedded as the filter reads it, secrets as references.
    let embedded = json(wasm["configuration"]["value"].as_str().unwrap_or(""));
    assert_eq!(embedded["model_list"][0]["litellm_params"]["api_key"], "os.environ/OPENAI_API_KEY");
    assert_eq!(embedded["model_list"][3]["litellm_params"]["cluster"], "my-vllm");
    // The wiring is in this bootstrap, so the embedded config declares it; the user's settings stay.
    assert_eq!(embedded["envoy_settings"], serde_json::json!({"cluster_header": "x-route-to", "max_request_body_bytes": 4194304, "failover": true}));
    assert_eq!(filters[1]["name"], "envoy.filters.http.router");

    let redirector = listener(&b, "llm_router_redirector");
    let r = &self::hcm(redirector)["route_config"]["virtual_hosts"][0]["routes"][0];
    assert_eq!(r["direct_response"]["status"], 307);
    assert_eq!(r["response_headers_to_add"][0]["header"], serde_json::json!({"key": "x-llm-router-redirector", "value": "1"}));
}

#[test]
fn no_failover_leaves_the_failover_pieces_out() {
    let (b, _) = generate(&["--no-failover"]);
    let wasm = &hcm(listener(&b, "ingress"))["http_filters"][0]["typed_config"]["config"];
    let embedded = json(wasm["configuration"]["value"].as_str().unwrap_or(""));
    assert_eq!(embedded["envoy_settings"]["failover"], false, "no wiring: the attempt state must not be sent");
    assert_eq!(b["static_resources"]["listeners"].as_array().map(Vec::len), Some(1));
    let routes = &hcm(listener(&b, "ingress"))["route_config"]["virtual_hosts"][0]["routes"];
    let routed = &routes[0]["route"];
    assert!(routed.get("retry_policy").is_none() && routed.get("internal_redirect_policy").is_none());
    // No redirects to follow, so no failover route; the hardening that is not about failover stays.
    assert_eq!(routes.as_array().map(Vec::len), Some(2));
    assert_eq!(routed["timeout"], "0s");
    for c in clusters(&b) {
        assert_eq!(c["circuit_breakers"]["thresholds"][0]["max_retries"], 10000);
        assert_eq!(c["load_assignment"]["endpoints"].as_array().map(Vec::len), Some(1));
        assert!(c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].get("http_filters").is_none());
        assert!(c.get("transport_socket_matches").is_none());
    }
}

#[test]
fn yaml_output_is_the_same_bootstrap() {
    let d = dir("envoy-yaml");
    let config = write(&d, "config.yaml", CONFIG);
    let as_json = run(&["envoy", &config, "--format", "json"], &[]);
    let as_yaml = run(&["envoy", &config], &[]);
    assert_eq!(as_yaml.code, 0, "{}", as_yaml.stderr);
    assert!(as_yaml.stdout.starts_with("# Envoy bootstrap for llm-router"));
    assert_eq!(yaml_to_json(&as_yaml.stdout), json(&as_json.stdout));
    // -o FILE.json picks JSON.
    let out_path = d.join("bootstrap.json").display().to_string();
    assert_eq!(run(&["envoy", &config, "-o", &out_path], &[]).code, 0);
    assert_eq!(json(&std::fs::read_to_string(&out_path).unwrap_or_default()), json(&as_json.stdout));
}

#[test]
fn configs_that_cannot_be_generated_are_refused() {
    let d = dir("envoy-bad");
    // One cluster name, two endpoints.
    let config = write(
        &d,
        "config.yaml",
        "model_list:\n\
         - model_name: a\n  litellm_params: {model: openai/a, api_base: 'https://a.example.com', cluster: shared}\n\
         - model_name: b\n  litellm_params: {model: openai/b, api_base: 'https://b.example.com', cluster: shared}\n",
    );
    let out = run(&["envoy", &config], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains(&format!("{config}:5:")) && out.stderr.contains("cluster `shared` leads to https://b.example.com:443 here but to https://a.example.com:443 for model_list[0]"), "{}", out.stderr);

    // An api_base from the environment must be known to derive its cluster; secrets need not be.
    let config = write(&d, "env.yaml", "model_list:\n- model_name: a\n  litellm_params: {model: azure/a, api_base: os.environ/AZ_BASE, api_key: os.environ/AZ_KEY}\n");
    let out = run(&["envoy", &config], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("model_list[0].litellm_params.api_base: environment variable AZ_BASE must be set"), "{}", out.stderr);
    let out = run(&["envoy", &config, "--format", "json"], &[("AZ_BASE", "https://r.openai.azure.com")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = json(&out.stdout);
    assert_eq!(cluster(&b, "outbound|443||r.openai.azure.com")["transport_socket"]["typed_config"]["sni"], "r.openai.azure.com");
    let wasm = &hcm(listener(&b, "ingress"))["http_filters"][0]["typed_config"]["config"];
    assert_eq!(wasm["vm_config"]["environment_variables"]["host_env_keys"], serde_json::json!(["AZ_BASE", "AZ_KEY"]));

    // Invalid configs are not generated, and usage errors are usage errors.
    let config = write(&d, "invalid.yaml", "model_list:\n- model_name: a\n  litellm_params: {model: bedrock/x}\n");
    assert_eq!(run(&["envoy", &config], &[]).code, 1);
    assert_eq!(run(&["envoy", &config, "--listen", "nope"], &[]).code, 2);
    assert_eq!(run(&["envoy", &config, "--listen", "127.0.0.1:9901"], &[]).code, 2);
}

#[test]
fn stats_tags_turn_the_metric_names_into_labels() {
    let (b, _) = generate(&[]);
    let tags = b["stats_config"]["stats_tags"].as_array().unwrap_or_else(|| panic!("no stats_tags"));
    let names: Vec<&str> = tags.iter().filter_map(|t| t["tag_name"].as_str()).collect();
    assert_eq!(names, ["model_group", "deployment", "class", "fallback_from", "error_code", "team", "key_alias", "scope", "scope_name", "rls_call", "rls_result"]);
    assert_eq!(tags[0]["regex"], r"(model_group=\.=(.*?);\.;)");

    let d = dir("envoy-no-metrics");
    let config = write(&d, "config.yaml", &CONFIG.replace("envoy_settings:\n", "envoy_settings:\n  metrics: false\n"));
    let out = run(&["envoy", config.as_str(), "--format", "json", "--wasm", "/opt/llm_router.wasm"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(json(&out.stdout).get("stats_config").is_none());
}

// ---- wiring hardening (the same values as tests/e2e/support/envoy.py and envoy/demo.yaml) ----------

#[test]
fn every_cluster_has_circuit_breakers_that_failover_retries_cannot_overflow() {
    let (b, _) = generate(&[]);
    for c in clusters(&b) {
        let t = &c["circuit_breakers"]["thresholds"];
        assert_eq!(t.as_array().map(Vec::len), Some(1), "{}", c["name"]);
        // Envoy's default max_retries (3) overflowed under load: retries must never run out before
        // requests do (one retry in flight per request at most).
        assert_eq!(t[0], serde_json::json!({"max_connections": 10000, "max_pending_requests": 10000, "max_requests": 10000, "max_retries": 10000}), "{}", c["name"]);
        assert!(t[0]["max_retries"].as_u64() >= t[0]["max_requests"].as_u64());
    }
}

#[test]
fn the_buffer_limit_leaves_room_for_the_rewrite() {
    // A small body limit, a long deployment model and default params: the config's own bound wins
    // over the 64 KiB headroom when it is larger.
    let long_model = "m".repeat(70_000);
    let d = dir("envoy-buffer");
    let config = write(
        &d,
        "config.yaml",
        &format!(
            "model_list:\n\
             - model_name: a\n  litellm_params: {{model: openai/{long_model}, api_base: 'http://127.0.0.1:18001/v1'}}\n  model_info: {{default_params: {{temperature: 0.5, max_tokens: 100}}}}\n\
             envoy_settings:\n  max_request_body_bytes: 1000\n"
        ),
    );
    let out = run(&["envoy", config.as_str(), "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = json(&out.stdout);
    // `"model":` value (quotes) + `"temperature":0.5,` + `"max_tokens":100,`
    let growth = (70_000 + 2) + (13 + 1 + 3 + 1) + (12 + 1 + 3 + 1);
    assert_eq!(listener(&b, "ingress")["per_connection_buffer_limit_bytes"], 1000 + growth);

    // The usual case: max_request_body_bytes + 64 KiB.
    let (b, _) = generate(&[]);
    assert_eq!(listener(&b, "ingress")["per_connection_buffer_limit_bytes"], 4194304 + 65536);
}

#[test]
fn http_1_0_clients_are_accepted() {
    for extra in [&[][..], &["--no-failover"][..]] {
        let (b, _) = generate(extra);
        assert_eq!(hcm(listener(&b, "ingress"))["http_protocol_options"], serde_json::json!({"accept_http_10": true}));
    }
}

#[test]
fn routes_have_no_total_timeout_only_an_idle_timeout() {
    let (b, _) = generate(&[]);
    let hcm = hcm(listener(&b, "ingress"));
    // 0s disables Envoy's route timeout (15 s when the field is absent): streams are never cut;
    // the router's per-try header bounds the time to response headers.
    assert_eq!(hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"], "0s");
    assert!(hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"].get("idle_timeout").is_none());
    assert_eq!(hcm["stream_idle_timeout"], "900s", "the config's longest timeout");

    let (b, _) = generate(&["--idle-timeout", "1200"]);
    assert_eq!(hcm_of(&b)["stream_idle_timeout"], "1200s");
    let (b, _) = generate(&["--route-timeout", "700"]);
    assert_eq!(hcm_of(&b)["stream_idle_timeout"], "700s", "the old flag name still works");
    assert_eq!(hcm_of(&b)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"], "0s");

    // Without timeouts in the config: 600 s.
    let d = dir("envoy-idle");
    let config = write(&d, "config.yaml", "model_list:\n- model_name: a\n  litellm_params: {model: openai/a, api_base: 'http://127.0.0.1:18001/v1'}\n");
    let out = run(&["envoy", config.as_str(), "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(hcm_of(&json(&out.stdout))["stream_idle_timeout"], "600s");
    let out = run(&["envoy", config.as_str(), "--idle-timeout", "soon"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--idle-timeout: `soon` is not a number of seconds"), "{}", out.stderr);
}

fn hcm_of(b: &Value) -> &Value {
    hcm(listener(b, "ingress"))
}

#[test]
fn failover_redirects_are_followed_only_to_the_failover_route() {
    let (b, _) = generate(&[]);
    let routes = &hcm_of(&b)["route_config"]["virtual_hosts"][0]["routes"];
    let policy = &routes[0]["route"]["internal_redirect_policy"];
    assert_eq!(policy["redirect_response_codes"], serde_json::json!([307]));
    assert_eq!(policy["max_internal_redirects"], 10);
    // The generated listener is plain HTTP, like the router's failover location.
    assert_eq!(policy["allow_cross_scheme_redirect"], false);
    let predicates = policy["predicates"].as_array().unwrap_or_else(|| panic!("no predicates: {policy}"));
    assert_eq!(predicates.len(), 1);
    assert_eq!(predicates[0]["name"], "envoy.internal_redirect_predicates.allow_listed_routes");
    assert_eq!(predicates[0]["typed_config"]["allowed_route_names"], serde_json::json!(["llm_router_failover"]));

    // The allow-listed route: the router's failover path, answered with a 404 when the router
    // does not take the pass (it reaches no upstream).
    let failover = &routes[1];
    assert_eq!(failover["name"], "llm_router_failover");
    assert_eq!(failover["match"], serde_json::json!({"path": llm_router::cli_api::FAILOVER_PATH}));
    assert_eq!(failover["direct_response"]["status"], 404);
    assert!(failover.get("route").is_none());
    assert_eq!(json(failover["direct_response"]["body"]["inline_string"].as_str().unwrap_or(""))["error"]["code"], "not_found");
    // No other route has that name, so no other redirect target is allowed.
    let named: Vec<&Value> = routes.as_array().map(|r| r.iter().filter(|r| r["name"] == "llm_router_failover").collect()).unwrap_or_default();
    assert_eq!(named.len(), 1);
    // The routed route keeps its cluster header inside Envoy.
    assert_eq!(routes[0]["request_headers_to_remove"], serde_json::json!(["x-route-to"]));
}

#[test]
fn only_variables_the_filter_reads_are_requested_from_envoys_environment() {
    let d = dir("envoy-env");
    let text = format!(
        "{CONFIG}  redis_host: os.environ/REDIS_HOST
general_settings:
  master_key: os.environ/GATEWAY_KEY
  database_url: os.environ/DATABASE_URL
litellm_settings:
  success_callback: [langfuse]
  langfuse_secret_key: os.environ/LANGFUSE_SECRET_KEY
"
    )
    .replace(
        "model_list:\n",
        "model_list:\n  - model_name: sm\n    litellm_params: {model: sagemaker/x, aws_secret_access_key: os.environ/AWS_SECRET_ACCESS_KEY}\n",
    );
    let config = write(&d, "config.yaml", &text);
    let out = run(&["envoy", config.as_str(), "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = json(&out.stdout);
    let wasm = &hcm(listener(&b, "ingress"))["http_filters"][0]["typed_config"]["config"];
    assert_eq!(wasm["vm_config"]["environment_variables"]["host_env_keys"], serde_json::json!(["GATEWAY_KEY", "OPENAI_API_KEY", "VLLM_KEY"]));
    for ignored in ["router_settings.redis_host", "general_settings.database_url", "litellm_settings.langfuse_secret_key"] {
        assert!(out.stderr.contains(ignored), "{ignored}: {}", out.stderr);
    }
}

#[test]
fn the_provider_key_of_a_deployment_without_api_key_is_requested_from_envoys_environment() {
    let d = dir("envoy-implicit-key");
    let config = write(
        &d,
        "config.yaml",
        "model_list:
  - model_name: llama
    litellm_params: {model: groq/llama-3.1-8b-instant}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-haiku, api_key: literal-key-written-in-config}
  - model_name: br
    litellm_params: {model: bedrock/anthropic.claude-3-haiku}
",
    );
    // Generated without the values (placeholders): the secret never reaches the output.
    let out = run(&["envoy", config.as_str(), "--format", "json"], &[("GROQ_API_KEY", "gsk-must-not-appear")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = json(&out.stdout);
    let wasm = &hcm(listener(&b, "ingress"))["http_filters"][0]["typed_config"]["config"];
    // Groq's variable, for want of an api_key; not Anthropic's (its key is written) nor
    // Bedrock's (skipped).
    assert_eq!(wasm["vm_config"]["environment_variables"]["host_env_keys"], serde_json::json!(["GROQ_API_KEY", "OPENAI_API_KEY"]));
    assert!(
        out.stderr.contains("Envoy's environment must set OPENAI_API_KEY and should set GROQ_API_KEY (the provider key of deployments without api_key: unset, they go without a key)"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("gsk-must-not-appear") && !out.stderr.contains("gsk-must-not-appear"));
    assert!(!out.stderr.contains("no api_key and GROQ_API_KEY"), "placeholders: not warned when generating: {}", out.stderr);
    let out = run(&["envoy", config.as_str()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("#   env:       Envoy's environment must set OPENAI_API_KEY and should set GROQ_API_KEY"), "{}", out.stdout);
}

#[test]
fn access_log_json_is_the_shipped_snippet_and_text_stays_the_default() {
    let (b, _) = generate(&["--access-log", "json"]);
    let generated = &hcm(listener(&b, "ingress"))["access_log"];
    let snippet = std::fs::read_to_string(format!("{}/../envoy/access-log-json.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{e}"));
    let shipped = common::yaml_to_json(&snippet);
    assert_eq!(generated, &shipped["access_log"], "envoy/access-log-json.yaml and `llm-router envoy --access-log json` differ");
    let fields: Vec<&str> = generated[0]["typed_config"]["log_format"]["json_format"].as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    for f in ["start_time", "status", "duration_ms", "model_group", "key_alias", "team_id", "user_id", "tags", "cost_usd", "prompt_tokens"] {
        assert!(fields.contains(&f), "{f} missing: {fields:?}");
    }
    let (b, _) = generate(&["--access-log", "text"]);
    assert!(hcm(listener(&b, "ingress"))["access_log"][0]["typed_config"]["log_format"]["text_format_source"].is_object());
    let d = dir("envoy-access-log");
    let config = write(&d, "config.yaml", CONFIG);
    let bad = run(&["envoy", &config, "--access-log", "xml"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--access-log must be text or json"), "{}", bad.stderr);
}

#[test]
fn the_rate_limit_service_gets_an_http2_cluster_without_the_upstream_role() {
    let d = dir("envoy-rls");
    let with = CONFIG.replace("envoy_settings:\n", "envoy_settings:\n  rate_limit_service: {cluster: llm_router_rls, domain: gw}\n");
    let config = write(&d, "config.yaml", &with);
    let out = run(&["envoy", config.as_str(), "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = json(&out.stdout);
    let rls = cluster(&b, "llm_router_rls");
    assert_eq!(rls["type"], "STATIC");
    assert_eq!(rls["connect_timeout"], "1s");
    assert_eq!(rls["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"], serde_json::json!({"address": "127.0.0.1", "port_value": 8081}));
    let options = &rls["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(options["explicit_http_config"], serde_json::json!({"http2_protocol_options": {}}));
    assert!(options.get("http_filters").is_none(), "the RLS cluster must not carry the upstream role");
    // The deployments' clusters still do.
    assert!(cluster(&b, "my-vllm")["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"].is_array());

    let out = run(&["envoy", config.as_str(), "--format", "json", "--rls-address", "rls.internal:9000"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = json(&out.stdout);
    let rls = cluster(&b, "llm_router_rls");
    assert_eq!(rls["type"], "STRICT_DNS");
    assert_eq!(rls["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"], serde_json::json!({"address": "rls.internal", "port_value": 9000}));
    let yaml = run(&["envoy", config.as_str()], &[]);
    assert!(yaml.stdout.contains("#   rls:       llm_router_rls -> 127.0.0.1:8081 (gRPC over HTTP/2"), "{}", yaml.stdout);
    assert_eq!(run(&["envoy", config.as_str(), "--rls-address", "nope"], &[]).code, 2);

    // Without rate_limit_service: no such cluster.
    let (b, stderr) = generate(&["--rls-address", "127.0.0.1:9"]);
    assert!(clusters(&b).iter().all(|c| c["name"] != "llm_router_rls"));
    assert!(stderr.contains("note: --rls-address has no effect"), "{stderr}");

    // A deployment's cluster cannot also be the RLS's.
    let clash = write(&d, "clash.yaml", &CONFIG.replace("envoy_settings:\n", "envoy_settings:\n  rate_limit_service: {cluster: my-vllm}\n"));
    let out = run(&["envoy", clash.as_str()], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("`my-vllm` is also the cluster of deployments"), "{}", out.stderr);
}
