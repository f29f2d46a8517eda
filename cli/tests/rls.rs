//! `llm-router rls`: the rate limit service's limits for every limit of a config's plans.

mod common;
use common::{dir, run, write, yaml_to_json};

const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn config(rls: &str, team_budget: &str, key_budget: &str) -> String {
    format!(
        "\
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: 'http://127.0.0.1:18001/v1', api_key: x}}
    model_info: {{input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}
envoy_settings:
{rls}
teams:
  - team_id: \"o'brien\\\\x\"
    rpm_limit: 100
{team_budget}
keys:
  - token: {KEY_A}
    team_id: \"o'brien\\\\x\"
    rpm_limit: 10
    max_parallel_requests: 2
    model_rpm_limit: {{gpt-4o: 3}}
  - token: {KEY_B}
    team_id: \"o'brien\\\\x\"
    tpm_limit: 1000
{key_budget}
  - token: cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc
    soft_budget: 3
"
    )
}

const RLS: &str = "  rate_limit_service: {cluster: llm_router_rls, domain: gw}";
const TEAM_BUDGET: &str = "    max_budget: 20\n    budget_duration: 1mo";
const KEY_BUDGET: &str = "    max_budget: 1\n    soft_budget: 0.5";

fn rls(text: &str, format: &str) -> common::Output {
    let d = dir("rls");
    let c = write(&d, "config.yaml", text);
    run(&["rls", &c, "--format", format], &[])
}

#[test]
fn limitador_has_every_limit_once_sorted_and_escaped() {
    let out = rls(&config(RLS, TEAM_BUDGET, KEY_BUDGET), "limitador");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("# Limitador limits file"), "{}", out.stdout);
    assert!(out.stdout.contains("a month (mo) counted as 30 days"), "{}", out.stdout);
    let v = yaml_to_json(&out.stdout);
    let limits = v.as_array().unwrap_or_else(|| panic!("not a list"));
    let names: Vec<&str> = limits.iter().filter_map(|l| l["name"].as_str()).collect();
    // The team's limits once, though two keys share them; the soft-only budget is left out.
    assert_eq!(
        names,
        [
            format!("parallel.api_key.{KEY_A}"),
            format!("rpm.api_key.{KEY_A}"),
            format!("rpm.model_per_key.{KEY_A}:gpt-4o"),
            "rpm.team.o'brien\\x".to_string(),
            format!("tpm.api_key.{KEY_B}"),
            format!("budget.api_key.{KEY_B}"),
            "budget.team.o'brien\\x".to_string(),
        ]
    );
    assert!(limits.iter().all(|l| l["namespace"] == "gw" && l["variables"] == serde_json::json!([])));
    let team_rpm = &limits[3];
    assert_eq!(team_rpm["max_value"], 100);
    assert_eq!(team_rpm["seconds"], 60);
    assert_eq!(team_rpm["conditions"], serde_json::json!(["descriptors[0]['limit'] == 'rpm'", r"descriptors[0]['team'] == 'o\'brien\\x'"]));
    assert_eq!(limits[0]["seconds"], 900);
    // Budgets in micro-USD; a month is 30 days; no duration: 10 years.
    assert_eq!(limits[5]["max_value"], 1_000_000);
    assert_eq!(limits[5]["seconds"], 315_360_000);
    assert_eq!(limits[6]["max_value"], 20_000_000);
    assert_eq!(limits[6]["seconds"], 2_592_000);
    assert!(out.stderr.contains("7 limits for domain gw"), "{}", out.stderr);
}

#[test]
fn envoy_ratelimit_nests_scopes_under_their_kind() {
    let out = rls(&config(RLS, TEAM_BUDGET, KEY_BUDGET), "envoy-ratelimit");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = yaml_to_json(&out.stdout);
    assert_eq!(v["domain"], "gw");
    let kinds: Vec<&str> = v["descriptors"].as_array().into_iter().flatten().filter_map(|d| d["value"].as_str()).collect();
    assert_eq!(kinds, ["parallel", "rpm", "tpm", "budget"]);
    assert!(v["descriptors"].as_array().into_iter().flatten().all(|d| d["key"] == "limit"));
    let rpm = &v["descriptors"][1]["descriptors"];
    assert_eq!(rpm[2], serde_json::json!({"key": "team", "value": "o'brien\\x", "rate_limit": {"unit": "minute", "requests_per_unit": 100}}));
    assert_eq!(v["descriptors"][0]["descriptors"][0]["rate_limit"]["unit"], "hour");
    let budget = &v["descriptors"][3]["descriptors"];
    assert_eq!(budget[0]["rate_limit"], serde_json::json!({"unit": "year", "requests_per_unit": 1_000_000}));
    assert_eq!(budget[1]["rate_limit"], serde_json::json!({"unit": "month", "requests_per_unit": 20_000_000}));
    assert!(out.stderr.contains("warning: 1 budget without budget_duration"), "{}", out.stderr);
}

#[test]
fn envoy_ratelimit_refuses_what_it_cannot_count() {
    let out = rls(&config(RLS, "    max_budget: 20\n    budget_duration: 2d", "    max_budget: 5000\n    budget_duration: 7d"), "envoy-ratelimit");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("error: team o'brien\\x: budget_duration is not one envoyproxy/ratelimit unit"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("error: key {KEY_B}: max_budget is 5000000000 micro-USD")), "{}", out.stderr);
    assert!(out.stderr.contains("not generating: 2 errors"), "{}", out.stderr);
    // Limitador counts any number of seconds and u64.
    let out = rls(&config(RLS, "    max_budget: 20\n    budget_duration: 2d", "    max_budget: 5000\n    budget_duration: 7d"), "limitador");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("seconds: 172800"), "{}", out.stdout);
}

#[test]
fn without_a_rate_limit_service_the_default_domain_and_a_note() {
    let out = rls(&config("  cluster_header: x-c", TEAM_BUDGET, KEY_BUDGET), "limitador");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("note: the config has no envoy_settings.rate_limit_service: the filter will not call a rate limit service"), "{}", out.stderr);
    assert!(out.stdout.contains("namespace: llm_router\n"), "{}", out.stdout);
    let out = rls(&config(RLS, TEAM_BUDGET, KEY_BUDGET), "limitador");
    assert!(!out.stderr.contains("will not call"), "{}", out.stderr);
}

#[test]
fn usage_and_no_raw_keys() {
    let d = dir("rls-usage");
    let c = write(&d, "config.yaml", &config(RLS, TEAM_BUDGET, KEY_BUDGET));
    assert_eq!(run(&["rls", &c], &[]).code, 2);
    assert_eq!(run(&["rls", &c, "--format", "yaml"], &[]).code, 2);
    // A raw key from the environment is named by its hash only; unset, it needs --allow-missing-env.
    let raw = config(RLS, TEAM_BUDGET, KEY_BUDGET).replace(&format!("token: {KEY_A}"), "key: os.environ/APP_KEY");
    let c = write(&d, "raw.yaml", &raw);
    let out = run(&["rls", &c, "--format", "limitador"], &[("APP_KEY", "sk-raw-key-123")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("sk-raw-key-123") && !out.stderr.contains("sk-raw-key-123"), "{}{}", out.stdout, out.stderr);
    let hash: String = llm_router::cli_api::key_hash("sk-raw-key-123").iter().map(|b| format!("{b:02x}")).collect();
    assert!(out.stdout.contains(&format!("name: rpm.api_key.{hash}\n")), "{}", out.stdout);
    assert_eq!(run(&["rls", &c, "--format", "limitador"], &[]).code, 1);
    assert_eq!(run(&["rls", &c, "--format", "limitador", "--allow-missing-env"], &[]).code, 0);
}
