//! `llm-router key new` and `llm-router key import`: the entries they print load with the filter's
//! own loader (`llm-router check`), the token is the raw key's SHA-256, and no raw key is printed
//! where it should not be.

mod common;
use common::{dir, json, lines_with, run, write, yaml_to_json};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/litellm-keys").join(name).display().to_string()
}

/// The raw key `key new` printed on stderr (`key: sk-...`).
fn printed_key(stderr: &str) -> String {
    let keys: Vec<&str> = stderr.lines().filter_map(|l| l.strip_prefix("key: ")).collect();
    assert_eq!(keys.len(), 1, "one `key:` line expected in\n{stderr}");
    keys[0].to_string()
}

/// A config serving gpt-4o and gpt-4o-mini, with `teams` and `include` of the generated file.
fn config_including(d: &std::path::Path, include: &str, teams: &str) -> String {
    write(
        d,
        "config.yaml",
        &format!(
            "model_list:\n\
             \x20 - model_name: gpt-4o\n\
             \x20   litellm_params: {{model: openai/gpt-4o, api_base: \"http://127.0.0.1:18001/v1\", api_key: sk-provider}}\n\
             \x20 - model_name: gpt-4o-mini\n\
             \x20   litellm_params: {{model: openai/gpt-4o-mini, api_base: \"http://127.0.0.1:18001/v1\", api_key: sk-provider}}\n\
             {teams}\
             include: [{include}]\n"
        ),
    )
}

#[test]
fn key_new_prints_the_key_once_on_stderr_and_its_sha256_as_the_token() {
    let o = run(&["key", "new", "--alias", "research-app", "--team", "research", "--models", "gpt-4o, gpt-4o-mini", "--rpm", "10", "--tpm", "5000", "--max-parallel", "3"], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let raw = printed_key(&o.stderr);
    assert!(raw.starts_with("sk-") && raw.len() >= 3 + 22, "{raw}");
    assert!(raw["sk-".len()..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{raw}");
    assert!(!o.stdout.contains(&raw), "the raw key is on stdout:\n{}", o.stdout);
    assert_eq!(o.stderr.matches(&raw).count(), 1, "{}", o.stderr);
    let doc = yaml_to_json(&o.stdout);
    let entry = &doc["keys"][0];
    assert_eq!(entry["token"], Value::from(sha256(&raw)));
    assert_eq!(entry["key_alias"], "research-app");
    assert_eq!(entry["team_id"], "research");
    assert_eq!(entry["models"], serde_json::json!(["gpt-4o", "gpt-4o-mini"]));
    assert_eq!((entry["rpm_limit"].as_u64(), entry["tpm_limit"].as_u64(), entry["max_parallel_requests"].as_u64()), (Some(10), Some(5000), Some(3)));
    assert!(o.stderr.contains("team_id `research` must be defined"), "{}", o.stderr);

    // The entry loads as it is, through `include:`.
    let d = dir("key-new");
    write(&d, "keys.yaml", &o.stdout);
    let cfg = config_including(&d, "keys.yaml", "teams:\n  - team_id: research\n");
    let c = run(&["check", &cfg], &[]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(c.stderr.contains("ok:") || c.stdout.contains("ok:"), "{}{}", c.stdout, c.stderr);
    // ... and without the team it is refused with the field path.
    let cfg = config_including(&d, "keys.yaml", "");
    let c = run(&["check", &cfg], &[]);
    assert_eq!(c.code, 1);
    assert!(!lines_with(&c.stdout, "keys[0].team_id: team `research` is not defined").is_empty() || !lines_with(&c.stderr, "keys[0].team_id").is_empty(), "{}{}", c.stdout, c.stderr);
}

#[test]
fn two_new_keys_differ() {
    let a = run(&["key", "new", "--format", "json"], &[]);
    let b = run(&["key", "new", "--format", "json"], &[]);
    assert_eq!((a.code, b.code), (0, 0));
    let (ka, kb) = (printed_key(&a.stderr), printed_key(&b.stderr));
    assert_ne!(ka, kb);
    let (ta, tb) = (json(&a.stdout)["keys"][0]["token"].clone(), json(&b.stdout)["keys"][0]["token"].clone());
    assert_ne!(ta, tb);
    assert_eq!(ta, Value::from(sha256(&ka)));
    // Only the token when nothing else is asked for.
    assert_eq!(json(&a.stdout)["keys"][0].as_object().map(|o| o.len()), Some(1));
}

#[test]
fn key_new_validates_its_values_like_the_loader() {
    for (args, want) in [
        (vec!["--rpm", "ten"], "--rpm: `ten` is not a whole number"),
        (vec!["--tpm", "-1"], "--tpm: `-1` is not a whole number"),
        (vec!["--max-parallel", "4294967296"], "--max-parallel: `4294967296`"),
        (vec!["--models", "gpt-4o,,mini"], "--models: `gpt-4o,,mini` has an empty model name"),
        (vec!["--max-budget", "lots"], "--max-budget: `lots` is not an amount"),
        (vec!["--max-budget", "10", "--budget-duration", "30x"], "--budget-duration: `30x` is not a budget period"),
        (vec!["--budget-duration", "30d"], "give --max-budget too"),
        (vec!["--expires", "tomorrow"], "--expires: `tomorrow` is not an ISO 8601 time"),
        (vec!["--alias", ""], "--alias: empty value"),
        (vec!["--format", "toml"], "--format must be yaml or json"),
        (vec!["--colour", "red"], "unknown option `--colour`"),
        (vec!["extra"], "unexpected argument `extra`"),
    ] {
        let mut a = vec!["key", "new"];
        a.extend(args.iter());
        let o = run(&a, &[]);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(want), "{args:?}: {want} not in\n{}", o.stderr);
        assert!(o.stdout.is_empty() && !o.stderr.lines().any(|l| l.starts_with("key: sk-")), "{args:?}: a key was made anyway");
    }
    let ok = run(&["key", "new", "--max-budget", "12.5", "--budget-duration", "1mo", "--expires", "2099-01-01T00:00:00Z"], &[]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let e = &yaml_to_json(&ok.stdout)["keys"][0];
    assert_eq!((e["max_budget"].as_f64(), e["budget_duration"].as_str(), e["expires"].as_str()), (Some(12.5), Some("1mo"), Some("2099-01-01T00:00:00Z")));
    let u = run(&["key"], &[]);
    assert_eq!(u.code, 2);
    let u = run(&["key", "rotate"], &[]);
    assert!(u.code == 2 && u.stderr.contains("unknown key command `rotate`"), "{}", u.stderr);
}

#[test]
fn import_of_a_litellm_key_list_keeps_the_hashes_and_loads() {
    let o = run(&["key", "import", &fixture("key-list.json"), "--teams", &fixture("team-list.json")], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc = yaml_to_json(&o.stdout);
    let keys = doc["keys"].as_array().cloned().unwrap_or_default();
    let aliases: Vec<&str> = keys.iter().filter_map(|k| k["key_alias"].as_str()).collect();
    // The admin UI's session token (team litellm-dashboard) is not imported.
    assert_eq!(aliases, ["research-app", "support-bot", "leaked", "contractor"]);
    assert!(o.stderr.contains("skipped 1 admin-UI session token"), "{}", o.stderr);
    assert_eq!(keys[0]["token"], Value::from(sha256("sk-import-research-4f1c")));
    // Per-model limits and tags come out of metadata; the rest of metadata stays.
    assert_eq!(keys[0]["model_rpm_limit"], serde_json::json!({"gpt-4o": 100}));
    assert_eq!(keys[0]["tags"], serde_json::json!(["dept:research"]));
    assert_eq!(keys[0]["metadata"], serde_json::json!({"cost_center": "R-100"}));
    assert_eq!(keys[0]["expires"], "2099-12-31T23:59:59.000000+00:00");
    assert_eq!(keys[0]["user_id"], "ana@example.com");
    // The key's own rpm_limit wins over its budget table's; the table fills what the key leaves unset.
    let s = &keys[1];
    assert_eq!((s["rpm_limit"].as_u64(), s["tpm_limit"].as_u64()), (Some(2), Some(100000)));
    assert_eq!((s["max_budget"].as_f64(), s["soft_budget"].as_f64(), s["budget_duration"].as_str()), (Some(20.0), Some(15.0), Some("30d")));
    assert_eq!(s["aliases"], serde_json::json!({"fast": "gpt-4o-mini"}));
    assert_eq!(keys[2]["blocked"], true);
    assert_eq!(keys[3]["model_tpm_limit"], serde_json::json!({"gpt-4o": 5000}));
    let teams = doc["teams"].as_array().cloned().unwrap_or_default();
    assert_eq!(teams.len(), 2);
    assert_eq!(teams[1], serde_json::json!({"team_id": "support", "team_alias": "Support", "models": ["gpt-4o-mini"], "rpm_limit": 100,
        "tpm_limit": 200000, "metadata": {"team_lead": "sam"}}));
    // What is dropped is named once, on one line, by field name.
    let dropped = lines_with(&o.stderr, "dropped fields");
    assert_eq!(dropped.len(), 1, "{}", o.stderr);
    for f in ["spend (2)", "created_at", "permissions (1)", "key_name", "members_with_roles (1)"] {
        assert!(dropped[0].contains(f), "{f} not in {}", dropped[0]);
    }
    for f in ["rotation_count", "soft_budget_cooldown", "litellm_budget_table", "metadata", "token"] {
        assert!(!dropped[0].contains(&format!(" {f} (")), "{f} listed in {}", dropped[0]);
    }

    // The output loads (YAML through include:, and JSON).
    let d = dir("key-import");
    write(&d, "imported.yaml", &o.stdout);
    let c = run(&["check", &config_including(&d, "imported.yaml", "")], &[]);
    assert_eq!(c.code, 0, "{}{}", c.stdout, c.stderr);
    let j = run(&["key", "import", &fixture("key-list.json"), "--teams", &fixture("team-list.json"), "--format", "json"], &[]);
    assert_eq!(json(&j.stdout), doc);

    // Users' budgets (GET /user/list): only users with a budget, the budget table filling in.
    let u = run(&["key", "import", &fixture("key-list.json"), "--teams", &fixture("team-list.json"), "--users", &fixture("user-list.json")], &[]);
    assert_eq!(u.code, 0, "{}", u.stderr);
    let doc = yaml_to_json(&u.stdout);
    assert_eq!(
        doc["users"],
        serde_json::json!([{"user_id": "ana@example.com", "max_budget": 25.0, "budget_duration": "1mo"},
                           {"user_id": "sam", "soft_budget": 4.0, "budget_duration": "7d"}])
    );
    assert!(u.stderr.contains("left out 1 user(s) without max_budget or soft_budget"), "{}", u.stderr);
    assert!(u.stderr.contains("4 keys, 2 teams and 2 users imported"), "{}", u.stderr);
    let dropped = lines_with(&u.stderr, "dropped fields");
    assert!(dropped.len() == 1 && dropped[0].contains("users: created_at (3)") && dropped[0].contains("user_email (1)"), "{}", u.stderr);
    write(&d, "imported.yaml", &u.stdout);
    let c = run(&["check", &config_including(&d, "imported.yaml", "")], &[]);
    assert_eq!(c.code, 0, "{}{}", c.stdout, c.stderr);
}

#[test]
fn import_reads_key_info_a_bare_list_stdin_and_team_shapes() {
    let o = run(&["key", "import", &fixture("key-info.json")], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc = yaml_to_json(&o.stdout);
    assert_eq!(doc["keys"][0]["token"], Value::from(sha256("sk-import-info-5150")));
    assert_eq!(doc["keys"][0]["rpm_limit"], 7);

    let d = dir("key-import-shapes");
    let h = sha256("sk-bare");
    let bare = write(&d, "bare.json", &format!(r#"[{{"token": "{}", "key_alias": "bare", "models": "gpt-4o", "team_id": "t1"}}]"#, h.to_uppercase()));
    let v2 = write(&d, "teams.json", r#"{"teams": [{"team_id": "t1", "models": ["gpt-4o"], "blocked": true}], "total": 1, "page": 1}"#);
    let o = run(&["key", "import", &bare, "--teams", &v2, "--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        json(&o.stdout),
        serde_json::json!({"teams": [{"team_id": "t1", "models": ["gpt-4o"], "blocked": true}],
                           "keys": [{"token": h, "key_alias": "bare", "team_id": "t1", "models": ["gpt-4o"]}]})
    );
    let info = write(&d, "team-info.json", r#"{"team_id": "t2", "team_info": {"team_id": "t2", "team_alias": "Two", "spend": 1.5}}"#);
    let o = run(&["key", "import", "--teams", &info, "--format", "json"], &[]);
    assert_eq!(json(&o.stdout), serde_json::json!({"teams": [{"team_id": "t2", "team_alias": "Two"}]}));
    assert!(o.stderr.contains("teams: spend (1)"), "{}", o.stderr);

    // A key whose team is not imported: kept, with a note naming the field.
    let o = run(&["key", "import", &bare], &[]);
    assert_eq!(o.code, 0);
    assert!(o.stderr.contains("[0].team_id: team `t1` is not among the imported teams"), "{}", o.stderr);

    // A team export given as the key file is named as such.
    let o = run(&["key", "import", &v2], &[]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("this is a team export: pass it as --teams FILE"), "{}", o.stderr);

    // stdin.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_llm-router"));
    let mut child = cmd
        .args(["key", "import", "-", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    use std::io::Write as _;
    child.stdin.take().map(|mut s| s.write_all(format!(r#"{{"keys": [{{"token": "{h}"}}], "total_count": 1}}"#).as_bytes()));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&String::from_utf8_lossy(&out.stdout)), serde_json::json!({"keys": [{"token": h}]}));
}

#[test]
fn bad_entries_are_refused_with_their_field_path_and_never_printed() {
    let o = run(&["key", "import", &fixture("bad-keys.json")], &[]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let f = fixture("bad-keys.json");
    for want in [
        "error: keys[1].token: is a raw key",
        "error: keys[2].token: must be LiteLLM's SHA-256 hash of the key, 64 hex digits",
        "error: keys[3].expires: must be an ISO 8601 time",
        "error: keys[3].rpm_limit: must be a whole number from 0 to 4294967295, got -5",
        "error: keys[4]: is only a token",
        "error: keys[5].token: is the same key as keys[0]",
    ] {
        assert!(o.stderr.lines().any(|l| l.starts_with(&format!("{f}: {want}"))), "{want} not in\n{}", o.stderr);
    }
    assert!(o.stderr.contains("llm-router: key import: 1 key imported; 5 entries refused"), "{}", o.stderr);
    // The raw key is nowhere, and only the good entry is printed.
    for text in [&o.stdout, &o.stderr] {
        assert!(!text.contains("sk-this-is-a-raw-key"), "{text}");
    }
    let doc = yaml_to_json(&o.stdout);
    assert_eq!(doc["keys"], serde_json::json!([{"token": sha256("sk-import-good-1"), "key_alias": "good"}]));

    let d = dir("key-import-bad");
    let raw_api_key = write(&d, "raw.json", &format!(r#"[{{"token": "{}", "api_key": "sk-live-secret-1"}}, {{"api_key": "Bearer sk-live-secret-2"}}]"#, sha256("x")));
    let o = run(&["key", "import", &raw_api_key], &[]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("[0].api_key: is a raw key") && o.stderr.contains("[1].api_key: is a raw key"), "{}", o.stderr);
    assert!(!o.stderr.contains("sk-live") && !o.stdout.contains("sk-live"), "{}{}", o.stdout, o.stderr);
    let not_json = write(&d, "nope.json", "keys: [sk-live-secret-3]");
    let o = run(&["key", "import", &not_json], &[]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("not JSON") && !o.stderr.contains("sk-live"), "{}", o.stderr);
    let teams = write(&d, "teams.json", r#"[{"team_id": "a"}, {"team_id": "a"}, {"team_alias": "no id"}, {"team_id": "b", "rpm_limit": "many"}]"#);
    let o = run(&["key", "import", "--teams", &teams], &[]);
    assert_eq!(o.code, 1);
    for want in ["error: [1].team_id: `a` is already the team_id of [0]", "error: [2].team_id: is required", "error: [3].rpm_limit: must be a whole number"] {
        assert!(o.stderr.contains(want), "{want} not in\n{}", o.stderr);
    }
    assert_eq!(yaml_to_json(&o.stdout), serde_json::json!({"teams": [{"team_id": "a"}]}));
    let o = run(&["key", "import"], &[]);
    assert_eq!(o.code, 2);
    let o = run(&["key", "import", "-", "--teams", "-"], &[]);
    assert_eq!(o.code, 2);
    let o = run(&["key", "import", &d.join("missing.json").display().to_string()], &[]);
    assert_eq!(o.code, 1);
}

#[test]
fn keys_read_from_the_environment_are_distinct_when_only_placeholders_stand_in_for_them() {
    // `check --allow-missing-env` and `envoy` (which needs no secret to generate) stand a placeholder in
    // for unset variables: one per variable, or two `key: os.environ/...` entries (or the master key and
    // a key) would read as the same key.
    let d = dir("env-keys");
    let cfg = write(
        &d,
        "config.yaml",
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_base: \"http://127.0.0.1:18001/v1\", api_key: os.environ/P}\n\
         general_settings: {master_key: os.environ/MASTER}\n\
         keys:\n  - {key: os.environ/A, key_alias: a}\n  - {key: os.environ/B, key_alias: b}\n",
    );
    let c = run(&["check", &cfg, "--allow-missing-env"], &[]);
    assert_eq!(c.code, 0, "{}{}", c.stdout, c.stderr);
    let e = run(&["envoy", &cfg, "--no-failover"], &[]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert!(!e.stdout.contains("llm-router-placeholder"), "a placeholder was written into the bootstrap");
}

#[test]
fn the_demo_s_keys_config_passes() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let env = [("OPENAI_API_KEY", "a"), ("ANTHROPIC_API_KEY", "b"), ("DEMO_MASTER_KEY", "c"), ("DEMO_RESEARCH_KEY", "d"), ("DEMO_SUPPORT_KEY", "e")];
    let out = run(&["check", &format!("{root}/examples/demo-keys.yaml")], &env);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("ok: 3 deployments in 3 model groups"), "{}", out.stdout);
}

#[test]
fn a_line_break_cannot_smuggle_yaml_into_the_entry() {
    let o = run(&["key", "new", "--alias", "x\nkeys: []"], &[]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("--alias: control characters"), "{}", o.stderr);
    let o = run(&["key", "new", "--models", "a,b\nc"], &[]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let d = dir("key-import-name");
    let f = write(&d, "odd\nkeys: [].json", &format!(r#"[{{"token": "{}"}}]"#, sha256("sk-odd")));
    let o = run(&["key", "import", &f], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(yaml_to_json(&o.stdout), serde_json::json!({"keys": [{"token": sha256("sk-odd")}]}));
}
