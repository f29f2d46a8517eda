//! `llm-router check`: the summary of what will serve, `--format json`, `--strict`, and the exit
//! statuses USAGE documents.

mod common;
use common::{dir, json, lines_with, run, write};

const KEYS: &[(&str, &str)] = &[("OPENAI_API_KEY", "sk-test"), ("AZURE_API_KEY", "az-test"), ("ANTHROPIC_API_KEY", "sk-ant")];

/// Two served groups over three providers, one entry skipped (SageMaker), three ignored keys.
const MIXED: &str = "\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      max_budget: 10
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o
      api_base: https://r.openai.azure.com
      api_key: os.environ/AZURE_API_KEY
  - model_name: sm
    litellm_params:
      model: sagemaker/foo
      aws_access_key_id: os.environ/AWS_KEY
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-latest
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: os.environ/OPENAI_API_KEY
      max_budget: 5
router_settings:
  retry_after: 5
general_settings:
  database_url: os.environ/DATABASE_URL
";

#[test]
fn the_text_summary_says_what_will_serve_between_the_problems_and_the_verdict() {
    let d = dir("summary");
    let config = write(&d, "config.yaml", MIXED);
    let out = run(&["check", &config], KEYS);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let summary_start = lines.iter().position(|l| l.starts_with(&format!("{config}: serves "))).unwrap_or_else(|| panic!("{}", out.stdout));
    let ok = lines.iter().position(|l| l.contains(": ok: ")).unwrap_or_else(|| panic!("{}", out.stdout));
    // Problem lines first, untouched; then the summary; then the verdict and the env note.
    assert!(lines[..summary_start].iter().all(|l| l.contains(": warning: ")), "{}", out.stdout);
    assert_eq!(lines_with(&out.stdout, ": warning: ").len(), 5, "{}", out.stdout);
    assert_eq!(
        &lines[summary_start..],
        [
            format!("{config}: serves 3 model groups:"),
            "  gpt-4o: 2 deployments (openai, azure)".to_string(),
            "  claude: 1 deployment (anthropic)".to_string(),
            "  gpt-4o-mini: 1 deployment (openai)".to_string(),
            format!("{config}: deployments by provider: openai 2, azure 1, anthropic 1"),
            format!("{config}: not served, 1 model_list entry skipped:"),
            "  model_list[2].litellm_params.model (model group sm): provider `sagemaker` is not supported (it needs request translation)"
                .to_string(),
            format!("{config}: accepted without effect, 4 settings ignored:"),
            "  model_list[*].litellm_params.max_budget (2 entries)".to_string(),
            "  router_settings.retry_after".to_string(),
            "  general_settings.database_url".to_string(),
            format!("{config}: ok: 4 deployments in 3 model groups, 3 upstream clusters, 5 warnings"),
            format!("{config}: note: the filter reads these environment variables: ANTHROPIC_API_KEY, AZURE_API_KEY, OPENAI_API_KEY"),
        ]
    );
    assert_eq!(ok, lines.len() - 2);
    // No summary line reads as a problem line (tools grep for `: warning: ` / `: error: `).
    assert!(lines[summary_start..].iter().all(|l| !l.contains(": warning: ") && !l.contains(": error: ")));
    // --print-json moves the whole report, summary included, to stderr.
    let out = run(&["check", &config, "--print-json"], KEYS);
    assert_eq!(out.code, 0);
    assert!(out.stderr.contains("deployments by provider: openai 2, azure 1, anthropic 1"), "{}", out.stderr);
    assert_eq!(json(&out.stdout)["model_list"][2]["model_name"], "sm");
}

#[test]
fn a_big_config_is_summarised_in_a_few_lines() {
    let d = dir("big");
    let mut text = String::from("model_list:\n");
    for i in 0..30 {
        text.push_str(&format!("  - model_name: m{i}\n    litellm_params: {{model: openai/m{i}, api_key: k, max_parallel_requests: 2}}\n"));
    }
    let config = write(&d, "config.yaml", &text);
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let groups: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("  m") && l.ends_with("deployment (openai)")).collect();
    assert_eq!(groups.len(), 20, "{}", out.stdout);
    assert_eq!(groups[0], "  m0: 1 deployment (openai)");
    assert!(out.stdout.contains("\n  ... and 10 more model groups\n"), "{}", out.stdout);
    // 30 ignored keys of the same shape: one line.
    assert!(out.stdout.contains(&format!("{config}: accepted without effect, 30 settings ignored:\n  model_list[*].litellm_params.max_parallel_requests (30 entries)\n")), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("{config}: deployments by provider: openai 30\n")), "{}", out.stdout);
    assert!(out.stdout.contains("ok: 30 deployments in 30 model groups, 1 upstream cluster, 30 warnings"), "{}", out.stdout);
}

#[test]
fn format_json_is_one_document_for_ci() {
    let d = dir("json");
    let config = write(&d, "config.yaml", MIXED);
    let out = run(&["check", &config, "--format", "json"], KEYS);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.stderr, "");
    let v = json(&out.stdout);
    assert_eq!(v["ok"], true);
    assert_eq!(v["errors"], serde_json::json!([]));
    let warnings = v["warnings"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<(&str, &str)> = warnings.iter().map(|w| (w["path"].as_str().unwrap_or("-"), w["kind"].as_str().unwrap_or("-"))).collect();
    assert_eq!(
        kinds,
        [
            ("model_list[0].litellm_params.max_budget", "ignored"),
            ("model_list[2].litellm_params.model", "skipped"),
            ("model_list[4].litellm_params.max_budget", "ignored"),
            ("router_settings.retry_after", "ignored"),
            ("general_settings.database_url", "ignored"),
        ]
    );
    assert_eq!(warnings[0]["file"], config.as_str());
    assert_eq!((warnings[0]["line"].as_u64(), warnings[0]["column"].as_u64()), (Some(6), Some(7)));
    assert!(warnings[1]["message"].as_str().is_some_and(|m| m.contains("sagemaker")));
    let s = &v["summary"];
    assert_eq!(s["deployments"], 4);
    assert_eq!(
        s["groups"],
        serde_json::json!([
            {"name": "gpt-4o", "deployments": 2, "providers": ["openai", "azure"]},
            {"name": "claude", "deployments": 1, "providers": ["anthropic"]},
            {"name": "gpt-4o-mini", "deployments": 1, "providers": ["openai"]},
        ])
    );
    assert_eq!(s["deployments_by_provider"], serde_json::json!({"openai": 2, "azure": 1, "anthropic": 1}));
    assert_eq!(s["skipped"][0]["path"], "model_list[2].litellm_params.model");
    assert_eq!(s["skipped"][0]["group"], "sm");
    assert_eq!(s["skipped"][0]["reason"], "provider `sagemaker` is not supported (it needs request translation)");
    assert_eq!(
        s["ignored"],
        serde_json::json!([
            "model_list[0].litellm_params.max_budget",
            "model_list[4].litellm_params.max_budget",
            "router_settings.retry_after",
            "general_settings.database_url"
        ])
    );
    let clusters: Vec<&str> = s["clusters"].as_array().map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect()).unwrap_or_default();
    assert_eq!(clusters, ["outbound|443||api.openai.com", "outbound|443||r.openai.azure.com", "outbound|443||api.anthropic.com"]);
    assert_eq!(s["clusters"][0], serde_json::json!({"name": "outbound|443||api.openai.com", "url": "https://api.openai.com:443", "deployments": 2}));
    // The skipped SageMaker entry's AWS_KEY and the ignored DATABASE_URL are not read.
    assert_eq!(s["env"], serde_json::json!(["ANTHROPIC_API_KEY", "AZURE_API_KEY", "OPENAI_API_KEY"]));
    // Secrets never appear.
    assert!(!out.stdout.contains("sk-test") && !out.stdout.contains("az-test"));
}

#[test]
fn format_json_of_a_refused_or_unreadable_config() {
    let d = dir("json-bad");
    let config = write(
        &d,
        "config.yaml",
        "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, api_key: k, weight: -2}\nrouter_settings:\n  callbacks: [x]\n",
    );
    let out = run(&["check", &config, "--format", "json"], &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let v = json(&out.stdout);
    assert_eq!(v["ok"], false);
    assert_eq!(v["summary"], serde_json::Value::Null);
    let e = &v["errors"][0];
    assert_eq!(e["path"], "model_list[0].litellm_params.weight");
    assert_eq!((e["file"].as_str(), e["line"].as_u64(), e["column"].as_u64()), (Some(config.as_str()), Some(3), Some(51)));
    assert!(e.get("kind").is_none());
    assert_eq!(v["warnings"][0]["path"], "router_settings.callbacks");
    assert_eq!(v["warnings"][0]["kind"], "ignored");

    // Invalid YAML: no field path.
    let config = write(&d, "syntax.yaml", "model_list:\n  - model_name: a\n   litellm_params: {model: x}\n");
    let v = json(&run(&["check", &config, "--format", "json"], &[]).stdout);
    assert_eq!(v["errors"][0]["path"], serde_json::Value::Null);
    assert_eq!(v["errors"][0]["line"], 3);

    // A file that cannot be read: exit 1, one error without a position.
    let out = run(&["check", "/nonexistent/config.yaml", "--format", "json"], &[]);
    assert_eq!(out.code, 1);
    let v = json(&out.stdout);
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["file"], "/nonexistent/config.yaml");
    assert_eq!(v["errors"][0]["line"], serde_json::Value::Null);
    assert!(v["errors"][0]["message"].as_str().is_some_and(|m| m.starts_with("cannot read the config")));
}

#[test]
fn exit_statuses_are_as_documented() {
    let d = dir("exit");
    let clean = write(&d, "clean.yaml", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, api_key: k}\n");
    let warned = write(&d, "warned.yaml", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, api_key: k}\nlitellm_settings:\n  drop_params: true\n");
    let refused = write(&d, "refused.yaml", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, weight: -1}\n");
    assert_eq!(run(&["check", &clean], &[]).code, 0);
    assert_eq!(run(&["check", &warned], &[]).code, 0);
    assert_eq!(run(&["check", &refused], &[]).code, 1);
    // --strict: warnings fail with 3, errors still 1, a clean config 0; in either format.
    assert_eq!(run(&["check", &clean, "--strict"], &[]).code, 0);
    assert_eq!(run(&["check", &warned, "--strict"], &[]).code, 3);
    assert_eq!(run(&["check", &refused, "--strict"], &[]).code, 1);
    let out = run(&["check", &warned, "--strict", "--format", "json"], &[]);
    assert_eq!(out.code, 3);
    assert_eq!(json(&out.stdout)["ok"], true);
    // An --env-file that cannot be read: 1.
    assert_eq!(run(&["check", &clean, "--env-file", "/nonexistent/keys.env"], &[]).code, 1);
    // Usage errors: 2, nothing on stdout.
    for args in [
        vec!["check", clean.as_str(), "--format", "yaml"],
        vec!["check", clean.as_str(), "--format", "json", "--print-json"],
        vec!["check", clean.as_str(), "--strict=yes"],
    ] {
        let out = run(&args, &[]);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
    }
    assert!(run(&["check", &clean, "--format", "json", "--print-json"], &[]).stderr.contains("--print-json"));
    // USAGE says the same.
    let help = run(&["--help"], &[]).stdout;
    assert!(help.contains("Exit status: 0 the filter accepts CONFIG (warnings\n        allowed), 1 it refuses it"), "{help}");
    assert!(help.contains("2 usage\n        error, 3 with --strict"), "{help}");
    // Text stays the default, and can be asked for.
    assert_eq!(run(&["check", &clean, "--format", "text"], &[]).stdout, run(&["check", &clean], &[]).stdout);
}

#[test]
fn skipped_entries_do_not_shift_the_upstream_clusters() {
    // The loaded deployments are the entries that were not skipped: clusters must follow them
    // (a skipped entry before others once made check count 0 clusters and envoy refuse).
    let d = dir("skip-clusters");
    let config = write(
        &d,
        "config.yaml",
        "model_list:\n\
         - model_name: sm\n  litellm_params: {model: sagemaker/x}\n\
         - model_name: a\n  litellm_params: {model: openai/x, api_key: k, api_base: 'http://127.0.0.1:18001/v1'}\n\
         - model_name: b\n  litellm_params: {model: anthropic/y, api_key: k}\n",
    );
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("ok: 2 deployments in 2 model groups, 2 upstream clusters, 1 warning"), "{}", out.stdout);
    let out = run(&["envoy", &config, "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = json(&out.stdout);
    let names: Vec<&str> = b["static_resources"]["clusters"].as_array().map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect()).unwrap_or_default();
    assert!(names.contains(&"outbound|18001||127.0.0.1") && names.contains(&"outbound|443||api.anthropic.com"), "{names:?}");
}

#[test]
fn the_summary_names_the_rate_limit_service() {
    let d = dir("rls-summary");
    let text = format!("{MIXED}envoy_settings:\n  rate_limit_service: {{cluster: llm_router_rls, timeout_ms: 80, failure_mode: {{rpm: closed}}}}\n");
    let config = write(&d, "config.yaml", &text);
    let out = run(&["check", &config], KEYS);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let line = format!(
        "{config}: rate limit service: cluster llm_router_rls, domain llm_router, timeout 80 ms; when it cannot answer: rpm closed, tpm open, parallel open, budget closed (its limits: `llm-router rls`)"
    );
    assert!(out.stdout.lines().any(|l| l == line), "{}", out.stdout);
    let out = run(&["check", &config, "--format", "json"], KEYS);
    assert_eq!(
        json(&out.stdout)["summary"]["rate_limit_service"],
        serde_json::json!({"cluster": "llm_router_rls", "domain": "llm_router", "timeout_ms": 80, "failure_mode": {"rpm": "closed", "tpm": "open", "parallel": "open", "budget": "closed"}})
    );
    let plain = write(&d, "plain.yaml", MIXED);
    let out = run(&["check", &plain, "--format", "json"], KEYS);
    assert_eq!(json(&out.stdout)["summary"]["rate_limit_service"], serde_json::Value::Null);
    assert!(!run(&["check", &plain], KEYS).stdout.contains("rate limit service"));
}
