//! `llm-router check`: LiteLLM-faithful YAML reading and the filter's own validation.

mod common;
use common::{dir, json, lines_with, run, write};

const KEYS: &[(&str, &str)] = &[("OPENAI_API_KEY", "sk-test"), ("AZURE_API_KEY", "az-test"), ("MASTER", "sk-master")];

#[test]
fn a_real_world_yaml_config_reads_as_litellm_reads_it() {
    let d = dir("good");
    write(
        &d,
        "models.yaml",
        "model_list:\n\
         - model_name: claude\n  litellm_params:\n    model: anthropic/claude-3-5-sonnet-latest\n    api_key: os.environ/OPENAI_API_KEY\n\
         router_settings:\n  num_retries: 2\n",
    );
    let config = write(
        &d,
        "config.yaml",
        "\
include:
  - models.yaml
defaults: &defaults
  api_key: os.environ/OPENAI_API_KEY
  timeout: 30
model_list:
  - model_name: gpt-4o
    litellm_params:
      <<: *defaults
      model: openai/gpt-4o
      timeout: 10
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o
      api_base: https://r.openai.azure.com
      api_key: os.environ/AZURE_API_KEY
      api_version: 2024-02-01
router_settings:
  routing_strategy: simple-shuffle
litellm_settings:
  drop_params: True
  enable_pre_call_checks: yes
general_settings:
  master_key: os.environ/MASTER
",
    );
    let out = run(&["check", &config, "--print-json"], KEYS);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("ok: 3 deployments in 2 model groups, 3 upstream clusters, 4 warnings"), "{}", out.stderr);
    // The anchor's mapping is an unknown top-level key: a warning with its line, not a failure.
    let models = d.join("models.yaml").display().to_string();
    assert_eq!(
        lines_with(&out.stderr, "warning:"),
        [
            format!("{config}:3:1: warning: defaults: is not used by llm-router and is ignored"),
            format!("{config}:21:3: warning: litellm_settings.drop_params: is ignored: requests are forwarded as sent: no per-provider parameter dropping"),
            format!("{models}:6:1: warning: `router_settings` replaces the one at {config}:18:1 (an included file's value wins, except lists, which are appended)"),
            // models.yaml sets num_retries; only a bootstrap with the failover wiring can act on it.
            format!("{config}: warning: envoy_settings.failover: is off, so router_settings.num_retries / retry_policy / model_group_retry_policy cannot act within a request (a failed attempt goes back to the client and feeds cooldowns); set it to true once Envoy has the failover wiring (README: Envoy wiring)"),
        ]
    );
    let v = json(&out.stdout);
    let m = &v["model_list"];
    // `<<:` merged, explicit keys win; the included model_list is appended after the main one.
    assert_eq!(m[0]["litellm_params"]["api_key"], "os.environ/OPENAI_API_KEY");
    assert_eq!(m[0]["litellm_params"]["timeout"], 10);
    assert_eq!(m[2]["model_name"], "claude");
    // YAML 1.1: an unquoted date stays the text written; yes/True are booleans.
    assert_eq!(m[1]["litellm_params"]["api_version"], "2024-02-01");
    assert_eq!(v["litellm_settings"]["enable_pre_call_checks"], true);
    assert_eq!(v["litellm_settings"]["drop_params"], true);
    // A non-list value of an included file replaces the main file's (LiteLLM's rule).
    assert_eq!(v["router_settings"], serde_json::json!({"num_retries": 2}));
    assert!(v.get("include").is_none());
}

#[test]
fn every_problem_is_reported_with_its_field_path_and_line() {
    let d = dir("bad");
    let config = write(
        &d,
        "config.yaml",
        "\
model_list:
  - model_name: a
    litellm_params:
      model: openai/x
      weight: -2
  - model_name: b
    litellm_params:
      model: openai/x
      auth_header_format: \"{key}\"
router_settings:
  routing_strategy: fastest
  callbacks: [langfuse]
",
    );
    let out = run(&["check", &config], KEYS);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let errors = lines_with(&out.stdout, "error:");
    assert_eq!(errors.len(), 3, "{}", out.stdout);
    assert!(errors[0].starts_with(&format!("{config}:5:7: error: model_list[0].litellm_params.weight: ")), "{}", errors[0]);
    assert!(errors[1].starts_with(&format!("{config}:9:7: error: model_list[1].litellm_params.auth_header_format: only the placeholder {{api_key}} is allowed")), "{}", errors[1]);
    assert!(errors[2].starts_with(&format!("{config}:11:3: error: router_settings.routing_strategy: unknown strategy `fastest`")), "{}", errors[2]);
    assert_eq!(lines_with(&out.stdout, "warning:"), [format!("{config}:12:3: warning: router_settings.callbacks: is ignored: use Envoy's access log (llm_router.* properties) and the llm_router_* metrics instead")]);
    assert!(out.stdout.ends_with(&format!("{config}: 3 errors, 1 warning\n")), "{}", out.stdout);
}

#[test]
fn duplicate_keys_name_both_lines() {
    let d = dir("dup");
    let config = write(
        &d,
        "config.yaml",
        "\
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_key: k}
router_settings:
  num_retries: 1
model_list:
  - model_name: b
    litellm_params: {model: openai/y, api_key: k}
",
    );
    // Loaded as LiteLLM loads it (PyYAML: the last one wins), with a warning naming both lines.
    let out = run(&["check", &config, "--print-json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        lines_with(&out.stderr, "warning: duplicate"),
        [format!("{config}:6:1: warning: duplicate key `model_list` (first at line 1, again at line 6); LiteLLM keeps only this last one")]
    );
    let v = json(&out.stdout);
    assert_eq!(v["model_list"][0]["model_name"], "b");
    assert_eq!(v["model_list"].as_array().map(Vec::len), Some(1));
}

#[test]
fn invalid_yaml_and_json_give_positions() {
    let d = dir("syntax");
    let config = write(&d, "config.yaml", "model_list:\n  - model_name: a\n   litellm_params: {model: x}\n");
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 1);
    let errors = lines_with(&out.stdout, "error:");
    assert_eq!(errors.len(), 1, "{}", out.stdout);
    assert!(errors[0].starts_with(&format!("{config}:3:")) && errors[0].contains("invalid YAML"), "{}", errors[0]);

    let config = write(&d, "config.json", "{\"model_list\": [\n  {\"model_name\": \"a\",}\n]}\n");
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 1);
    assert!(lines_with(&out.stdout, "error:")[0].starts_with(&format!("{config}:2:")), "{}", out.stdout);

    // JSON keeps key order and positions, and duplicate keys are found there too (the last wins).
    let config = write(&d, "dup.json", "{\"model_list\": [],\n \"model_list\": []}\n");
    let out = run(&["check", &config], &[]);
    assert!(out.stdout.contains(&format!("{config}:2:2: warning: duplicate key `model_list`")), "{}", out.stdout);
}

#[test]
fn yaml_that_has_no_json_form_or_unknown_tags_is_refused() {
    let d = dir("tags");
    let config = write(&d, "config.yaml", "model_list: []\nrouter_settings:\n  cooldown_time: .inf\n  timeout: !Ref x\n");
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 1);
    let errors = lines_with(&out.stdout, "error:");
    assert!(errors.iter().any(|e| e.starts_with(&format!("{config}:3:18:")) && e.contains(".inf")), "{}", out.stdout);
    assert!(errors.iter().any(|e| e.starts_with(&format!("{config}:4:12:")) && e.contains("!Ref")), "{}", out.stdout);
}

#[test]
fn includes_follow_litellm_rules() {
    let d = dir("include");
    std::fs::create_dir_all(d.join("sub")).unwrap_or_else(|e| panic!("{e}"));
    write(&d, "sub/a.yaml", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, api_key: k, weight: -1}\ninclude: [b.yaml]\n");
    let config = write(&d, "config.yaml", "include:\n  - sub/a.yaml\n  - missing.yaml\nmodel_list: []\n");
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let a = d.join("sub/a.yaml").display().to_string();
    // A problem inside an included file points into that file.
    assert!(out.stdout.contains(&format!("{a}:3:51: error: model_list[0].litellm_params.weight:")), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("{config}:3:5: error: included file ")), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("{a}:4:1: warning: `include` inside an included file is not followed")), "{}", out.stdout);

    let config = write(&d, "single.yaml", "include: sub/a.yaml\n");
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains(&format!("{config}:1:10: error: 'include' must be a list of file paths")), "{}", out.stdout);
}

#[test]
fn environment_variables_come_from_the_environment_or_an_env_file() {
    let d = dir("env");
    let config = write(&d, "config.yaml", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, api_key: os.environ/SECRET_KEY}\n");
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("model_list[0].litellm_params.api_key: environment variable SECRET_KEY is not set"), "{}", out.stdout);
    assert!(out.stdout.contains("--allow-missing-env"), "{}", out.stdout);

    let out = run(&["check", &config], &[("SECRET_KEY", "x")]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("note: the filter reads these environment variables: SECRET_KEY"), "{}", out.stdout);

    let env_file = write(&d, "keys.env", "# secrets\nexport SECRET_KEY=\"from file\"\n");
    assert_eq!(run(&["check", &config, "--env-file", &env_file], &[]).code, 0);
    assert_eq!(run(&["check", &config, "--allow-missing-env"], &[]).code, 0);
    // The secret's value never appears in the output.
    let out = run(&["check", &config, "--print-json"], &[("SECRET_KEY", "sk-very-secret")]);
    assert!(!out.stdout.contains("sk-very-secret") && !out.stderr.contains("sk-very-secret"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&[], &[]).code, 2);
    assert_eq!(run(&["check"], &[]).code, 2);
    assert_eq!(run(&["check", "a.yaml", "--bogus"], &[]).code, 2);
    assert_eq!(run(&["frobnicate", "a.yaml"], &[]).code, 2);
    let out = run(&["check", "/nonexistent/config.yaml"], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("cannot read the config"), "{}", out.stdout);
    assert_eq!(run(&["--help"], &[]).code, 0);
}

#[test]
fn the_shipped_examples_pass() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let keys = [("OPENAI_API_KEY", "a"), ("AZURE_API_KEY", "b"), ("ANTHROPIC_API_KEY", "c"), ("LITELLM_MASTER_KEY", "d"), ("AZURE_API_BASE", "https://r.openai.azure.com")];
    for example in ["examples/demo-config.json", "examples/litellm-config.yaml", "examples/litellm-config-local.yaml"] {
        let out = run(&["check", &format!("{root}/{example}")], &keys);
        assert_eq!(out.code, 0, "{example}: {}", out.stdout);
    }
}

#[test]
fn virtual_keys_and_teams_are_checked_by_the_filter_s_loader() {
    let d = dir("keys");
    let config = write(
        &d,
        "config.yaml",
        "\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
teams:
  - team_id: finance
    models: [gpt-4o]
    max_budget: 100
keys:
  - token: 88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b
    key_alias: finance-app
    team_id: finance
    rpm_limit: 60
  - key: os.environ/MASTER
    key_alias: ops
",
    );
    let out = run(&["check", &config], KEYS);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        lines_with(&out.stdout, "warning:"),
        [
            // rpm_limit and max_budget are enforced: the one warning is that nothing is priced.
            format!("{config}:2:5: warning: model_list[0].model_info: deployment `341dc160a804e19c` has no input_cost_per_token / output_cost_per_token: its requests cost 0 against budgets (LiteLLM prices known models from its bundled price map; the router has none)"),
        ]
    );

    let bad = write(
        &d,
        "bad.yaml",
        "\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
keys:
  - key: sk-live-pasted
  - token: not-a-hash
    team_id: nobody
",
    );
    let out = run(&["check", &bad], KEYS);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let errors = lines_with(&out.stdout, "error:");
    assert_eq!(errors.len(), 3, "{}", out.stdout);
    assert!(errors[0].starts_with(&format!("{bad}:6:5: error: keys[0].key: must be an os.environ/NAME reference")), "{}", errors[0]);
    assert!(errors[1].starts_with(&format!("{bad}:7:5: error: keys[1].token: must be the key's SHA-256")), "{}", errors[1]);
    assert!(errors[2].starts_with(&format!("{bad}:8:5: error: keys[1].team_id: team `nobody` is not defined in teams")), "{}", errors[2]);
    assert!(!out.stdout.contains("sk-live-pasted"), "{}", out.stdout);
}

#[test]
fn a_deployment_without_api_key_reads_its_providers_variable() {
    let d = dir("implicit-key");
    let config = write(&d, "config.yaml", "model_list:\n  - model_name: llama\n    litellm_params: {model: groq/llama-3.1-8b-instant}\n");
    // Unset: it loads (LiteLLM starts too), with one warning, and --strict says so.
    let out = run(&["check", &config], &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("model_list[0].litellm_params.api_key: no api_key and GROQ_API_KEY is not set: requests go without a key"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("note: the filter reads these environment variables: GROQ_API_KEY"), "{}", out.stdout);
    assert_eq!(run(&["check", &config, "--strict"], &[]).code, 3);
    // Set, or taken as set: no warning.
    for (args, env) in [(vec!["check", config.as_str(), "--strict"], vec![("GROQ_API_KEY", "gsk-secret-value")]), (vec!["check", config.as_str(), "--strict", "--allow-missing-env"], vec![])] {
        let out = run(&args, &env);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stdout);
        assert!(!out.stdout.contains("no api_key") && !out.stdout.contains("gsk-secret-value"), "{}", out.stdout);
    }
    // The JSON the filter takes keeps no key: the filter reads the variable itself.
    let out = run(&["check", &config, "--print-json"], &[("GROQ_API_KEY", "gsk-secret-value")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("api_key") && !out.stdout.contains("gsk-secret-value"), "{}", out.stdout);
}
