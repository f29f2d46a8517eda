//! `llm-router spend`: totals from the fixture access logs (tests/fixtures/spend), as the binary prints them.

mod common;
use common::{json, run};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/spend/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn json_log_by_team_and_day_as_a_table() {
    let out = run(&["spend", &fixture("access.json.log"), "--by", "team,day"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "team     day         requests  prompt_tokens  completion_tokens   cost_usd\n\
         -        2026-12-02         1             10                 10  0.0000045\n\
         finance  2026-12-01         2           1300                350    0.00675\n\
         support  2026-12-01         1             80                 20   0.000024\n\
         support  2026-12-02         1             10                 10  0.0000045\n\
         total                       5           1400                390   0.006783\n"
    );
    // The Envoy log line and the truncated JSON line are skipped and counted.
    assert_eq!(out.stderr, "llm-router spend: skipped 2 of 9 lines: not access-log lines this tool reads\n");
}

#[test]
fn by_key_model_user_tag_as_csv_and_json() {
    let out = run(&["spend", &fixture("access.json.log"), "--by=key", "--format", "csv"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "key,requests,prompt_tokens,completion_tokens,cost_usd\n\
         finance-app,2,1300,350,0.00675\n\
         keys[2],1,10,10,0.0000045\n\
         support-bot,2,90,30,0.0000285\n"
    );
    let out = run(&["spend", &fixture("access.json.log"), "--by", "tag", "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let j = json(&out.stdout);
    let tags: Vec<(String, u64, String)> = j["groups"]
        .as_array()
        .map(|g| g.iter().map(|r| (r["tag"].as_str().unwrap_or("").to_string(), r["requests"].as_u64().unwrap_or(0), r["cost_usd"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    assert_eq!(
        tags,
        vec![
            ("-".into(), 1, "0.0000045".into()),
            ("prod".into(), 3, "0.006774".into()),
            ("reports".into(), 1, "0.006".into()),
            ("staging".into(), 1, "0.0000045".into()),
        ]
    );
    assert_eq!(j["total"]["cost_nanousd"], 6_783_000);
    assert_eq!(j["skipped_lines"], 2);
    let out = run(&["spend", &fixture("access.json.log"), "--by", "model,user", "--format", "csv", "--since", "2026-12-01", "--until", "2026-12-01"], &[]);
    assert_eq!(
        out.stdout,
        "model,user,requests,prompt_tokens,completion_tokens,cost_usd\ngpt-4o,alice,2,1300,350,0.00675\ngpt-4o-mini,-,1,80,20,0.000024\n"
    );
    assert!(out.stderr.contains("2 routed lines outside --since/--until"), "{}", out.stderr);
}

#[test]
fn text_log_has_tokens_but_no_cost_and_usage_errors() {
    let out = run(&["spend", &fixture("access.text.log"), "--by", "model", "--format", "csv"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "model,requests,prompt_tokens,completion_tokens,cost_usd\na,0,0,0,0\nb,1,9,8,0\ngpt-4o,1,12,8,0\n");
    assert_eq!(out.stderr, "");
    assert_eq!(run(&["spend", "--by", "colour", &fixture("access.text.log")], &[]).code, 2);
    assert_eq!(run(&["spend"], &[]).code, 2);
    let missing = run(&["spend", "/nonexistent/access.log"], &[]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("/nonexistent/access.log"), "{}", missing.stderr);
}
