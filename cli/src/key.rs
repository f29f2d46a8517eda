//! `llm-router key new` and `llm-router key import`: the config entries of virtual keys (`keys`)
//! and teams (`teams`), made here rather than by hand.
//!
//! - `key new` draws a raw key from the OS's CSPRNG (`sk-` + 32 url-safe characters, 192 bits;
//!   LiteLLM's own are `sk-` + `secrets.token_urlsafe(16)`), prints it once on **stderr** and the
//!   `keys:` entry, holding only its SHA-256 (`token`, the filter's own `key_hash`), on stdout:
//!   `llm-router key new --alias app > keys/app.yaml` shows the key on the terminal and writes
//!   nothing secret to the file.
//! - `key import` turns LiteLLM's key export (`GET /key/list?return_full_object=true`, a bare list
//!   of `LiteLLM_VerificationToken` rows, or `GET /key/info`), team export (`GET /team/list`,
//!   `/v2/team/list`, `/team/info`) and user export (`GET /user/list`, `/user/info`: the budgets
//!   of keys without a team) into `keys:` / `teams:` / `users:` entries. Field names are LiteLLM's
//!   (`litellm/proxy/_types.py`, `litellm/models/verification_token.py`): an export holds the
//!   hash in `token`, kept as it is; per-model limits and tags live in `metadata`
//!   (`generate_key_helper_fn`), and a key's `litellm_budget_table` supplies the limits the key
//!   itself leaves unset (`LiteLLM_VerificationTokenView.__init__`). What the router has no use
//!   for is dropped, named once on stderr. A raw key is never printed: an entry whose `token`
//!   is a raw `sk-` key is refused with a message that does not repeat it.
//!
//! Both write YAML (or JSON) a config can `include:` (its `keys`/`teams` lists are appended to the
//! main file's), or that is pasted under the config's own `keys:`.

use crate::value::Value;
use llm_router::cli_api::{is_no_duration, key_hash, parse_duration, parse_hex, parse_time_ms};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

/// What the command line can fail with: a usage error (exit 2) or a failure (exit 1).
#[derive(Debug)]
pub enum Error {
    Usage(String),
    Failed(String),
}

fn w(e: std::io::Error) -> Error {
    Error::Failed(e.to_string())
}

/// LiteLLM's team id of the admin UI's session tokens (`UI_SESSION_TOKEN_TEAM_ID` in
/// `litellm/constants.py`; `/key/list` leaves them out unless asked): not keys a client holds.
const UI_SESSION_TEAM: &str = "litellm-dashboard";

/// Random bytes in a new key: 24 bytes, 32 url-safe base64 characters.
const KEY_BYTES: usize = 24;

/// `llm-router key new|import ...`.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Error> {
    match args.split_first() {
        Some((c, rest)) if c == "new" => new(rest, out, err),
        Some((c, rest)) if c == "import" => import(rest, out, err),
        Some((c, _)) => Err(Error::Usage(format!("unknown key command `{c}` (key new, key import)"))),
        None => Err(Error::Usage("key: missing command (key new, key import)".into())),
    }
}

/// Options with values (`--x V`, `--x=V`), switches, positionals (`-` is one).
struct Args {
    values: Vec<(String, String)>,
    positionals: Vec<String>,
}

impl Args {
    fn parse(args: &[String], with_value: &[&str]) -> Result<Args, Error> {
        let (mut values, mut positionals) = (Vec::new(), Vec::new());
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg.starts_with('-') && arg != "-" {
                let (name, inline) = match arg.split_once('=') {
                    Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                    _ => (arg.clone(), None),
                };
                if !with_value.contains(&name.as_str()) {
                    return Err(Error::Usage(format!("unknown option `{arg}`")));
                }
                let v = match inline {
                    Some(v) => v,
                    None => it.next().cloned().ok_or_else(|| Error::Usage(format!("{name} needs a value")))?,
                };
                values.push((name, v));
            } else {
                positionals.push(arg.clone());
            }
        }
        Ok(Args { values, positionals })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Result<bool, Error> {
        match self.get("--format") {
            None | Some("yaml") => Ok(false),
            Some("json") => Ok(true),
            Some(other) => Err(Error::Usage(format!("--format must be yaml or json, not `{other}`"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// key new

fn new(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Error> {
    let a = Args::parse(
        args,
        &["--alias", "--team", "--models", "--rpm", "--tpm", "--max-parallel", "--max-budget", "--budget-duration", "--expires", "--format"],
    )?;
    if let Some(p) = a.positionals.first() {
        return Err(Error::Usage(format!("unexpected argument `{p}` (key new takes options only)")));
    }
    let json = a.json()?;
    let text = |flag: &str| -> Result<Option<String>, Error> {
        match a.get(flag) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(Error::Usage(format!("{flag}: empty value"))),
            Some(v) if v.chars().any(char::is_control) => Err(Error::Usage(format!("{flag}: control characters (a line break?) in the value"))),
            Some(v) => Ok(Some(v.to_string())),
        }
    };
    let count = |flag: &str| -> Result<Option<u64>, Error> {
        a.get(flag).map(|v| parse_count(v).map_err(|m| Error::Usage(format!("{flag}: `{v}` {m}")))).transpose()
    };
    let alias = text("--alias")?;
    let team = text("--team")?;
    let models = match a.get("--models") {
        None => None,
        Some(list) => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            if names.iter().any(|n| n.chars().any(char::is_control)) {
                return Err(Error::Usage("--models: control characters (a line break?) in a model name".into()));
            }
            if names.iter().any(|n| n.is_empty()) {
                return Err(Error::Usage(format!("--models: `{list}` has an empty model name (a comma-separated list: gpt-4o,gpt-4o-mini)")));
            }
            Some(names.into_iter().map(str::to_string).collect::<Vec<_>>())
        }
    };
    let (rpm, tpm, parallel) = (count("--rpm")?, count("--tpm")?, count("--max-parallel")?);
    let max_budget = a
        .get("--max-budget")
        .map(|v| v.trim().parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 0.0).ok_or_else(|| Error::Usage(format!("--max-budget: `{v}` is not an amount in USD (a number >= 0)"))))
        .transpose()?;
    let duration = a
        .get("--budget-duration")
        .map(|d| check_duration(d).map(|_| d.trim().to_string()).map_err(|m| Error::Usage(format!("--budget-duration: `{d}` {m}"))))
        .transpose()?;
    if duration.is_some() && max_budget.is_none() {
        return Err(Error::Usage("--budget-duration is the period after which --max-budget resets: give --max-budget too".into()));
    }
    let expires = match a.get("--expires") {
        None => None,
        Some(t) => match parse_time_ms(t) {
            Some(ms) => Some((t.trim().to_string(), ms)),
            None => return Err(Error::Usage(format!("--expires: `{t}` is not an ISO 8601 time such as 2026-12-31T23:59:59Z"))),
        },
    };

    let raw = random_key()?;
    let mut entry: Vec<(&str, Value)> = vec![("token", Value::from(hex(&key_hash(&raw))))];
    if let Some(v) = &alias {
        entry.push(("key_alias", Value::from(v.as_str())));
    }
    if let Some(v) = &team {
        entry.push(("team_id", Value::from(v.as_str())));
    }
    if let Some(m) = models {
        entry.push(("models", Value::seq(m.into_iter().map(Value::from))));
    }
    if let Some((t, _)) = &expires {
        entry.push(("expires", Value::from(t.as_str())));
    }
    for (k, v) in [("rpm_limit", rpm), ("tpm_limit", tpm), ("max_parallel_requests", parallel)] {
        if let Some(n) = v {
            entry.push((k, Value::from(n)));
        }
    }
    if let Some(b) = max_budget {
        entry.push(("max_budget", Value::Float(b)));
    }
    if let Some(d) = duration {
        entry.push(("budget_duration", Value::from(d)));
    }
    let doc = Value::map([("keys", Value::seq([Value::map(entry)]))]);
    let name = alias.as_deref().map(|a| format!(" `{a}`")).unwrap_or_default();
    if json {
        writeln!(out, "{}", doc.to_json_pretty()).map_err(w)?;
    } else {
        write!(out, "# virtual key{name}, made by `llm-router key new`: `token` is the key's SHA-256 (the raw key is in no file)\n{}", doc.to_yaml()).map_err(w)?;
    }
    // The raw key, once, on stderr: stdout can go to a file while the key shows on the terminal.
    writeln!(err, "llm-router: new virtual key{name} (shown only now; the config holds only its SHA-256 as `token`):\nkey: {raw}").map_err(w)?;
    if let Some(t) = &team {
        writeln!(err, "llm-router: note: team_id `{t}` must be defined in the config's `teams` (the loader refuses an unknown team)").map_err(w)?;
    }
    if let Some((_, ms)) = expires {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        if u128::from(ms) <= now {
            writeln!(err, "llm-router: warning: --expires is in the past: the key is refused as expired_key from the start").map_err(w)?;
        }
    }
    if max_budget.is_some() {
        writeln!(
            err,
            "llm-router: note: spend against max_budget is priced by the deployments' input_cost_per_token / output_cost_per_token (a deployment without prices costs 0)"
        )
        .map_err(w)?;
    }
    Ok(0)
}

/// `sk-` + [`KEY_BYTES`] bytes of the OS's CSPRNG (getrandom: getrandom(2), /dev/urandom, ...),
/// url-safe base64 without padding.
fn random_key() -> Result<String, Error> {
    let mut buf = [0u8; KEY_BYTES];
    getrandom::getrandom(&mut buf).map_err(|e| Error::Failed(format!("the operating system's random number generator failed: {e}")))?;
    Ok(format!("sk-{}", base64url(&buf)))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk.first().copied().unwrap_or(0), chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            if let Some(c) = ALPHABET.get(idx) {
                out.push(char::from(*c));
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A limit as the loader reads one (`fields::Section::count`): a whole number, 0 to 2^32-1.
fn parse_count(v: &str) -> Result<u64, &'static str> {
    match v.trim().parse::<u64>() {
        Ok(n) if n <= u64::from(u32::MAX) => Ok(n),
        _ => Err("is not a whole number from 0 to 4294967295"),
    }
}

/// A budget period, checked by the loader's own parser (`llm_router::limits::parse`: LiteLLM's
/// `duration_in_seconds` forms `30s`, `30m`, `24h`, `30d`, `1w`, `1mo`). `none`/`null` (LiteLLM's "no
/// period") is refused here: the flag or the field is then better left out.
pub fn check_duration(d: &str) -> Result<(), String> {
    if is_no_duration(d) {
        return Err("is not a budget period: leave it out for a budget that never resets".into());
    }
    parse_duration(d.trim()).map(|_| ()).map_err(|e| format!("is not a budget period: {e}"))
}

// ---------------------------------------------------------------------------------------------
// key import

/// A problem with one entry of an export, at its field path.
struct Refusal {
    path: String,
    message: String,
}

/// A refusal, with the file it is in.
struct Refused {
    file: String,
    path: String,
    message: String,
}

fn import(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Error> {
    let a = Args::parse(args, &["--teams", "--users", "--format"])?;
    let json = a.json()?;
    if a.positionals.len() > 1 {
        return Err(Error::Usage(format!("unexpected argument `{}` (one key export FILE; teams go in --teams FILE)", a.positionals.get(1).map_or("", |s| s.as_str()))));
    }
    let keys_file = a.positionals.first().cloned();
    let teams_file = a.get("--teams").map(str::to_string);
    let users_file = a.get("--users").map(str::to_string);
    if keys_file.is_none() && teams_file.is_none() && users_file.is_none() {
        return Err(Error::Usage(
            "key import: missing FILE (LiteLLM's /key/list export, or - for stdin; --teams FILE for /team/list, --users FILE for /user/list)".into(),
        ));
    }
    if [&keys_file, &teams_file, &users_file].iter().filter(|f| f.as_deref() == Some("-")).count() > 1 {
        return Err(Error::Usage("key import: only one of FILE, --teams FILE and --users FILE can be - (stdin)".into()));
    }

    let mut refused: Vec<Refused> = Vec::new();
    let mut refused_entries = 0;
    let mut dropped: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();

    let mut teams: Vec<Value> = Vec::new();
    let mut team_ids: Vec<String> = Vec::new();
    let mut team_paths: Vec<String> = Vec::new();
    if let Some(f) = &teams_file {
        let doc = read_json(f)?;
        let items = team_items(&doc).map_err(|m| Error::Failed(format!("{}: {m}", shown(f))))?;
        for (path, item) in items {
            let mut r = Vec::new();
            if let Some((id, entry)) = team_entry(&path, &item, &team_ids, &team_paths, &mut r, &mut dropped) {
                if r.is_empty() {
                    team_ids.push(id);
                    team_paths.push(path.clone());
                    teams.push(entry);
                }
            }
            refused_entries += usize::from(!r.is_empty());
            refused.extend(r.into_iter().map(|x| Refused { file: shown(f), path: x.path, message: x.message }));
        }
    }

    let mut users: Vec<Value> = Vec::new();
    if let Some(f) = &users_file {
        let doc = read_json(f)?;
        let items = user_items(&doc).map_err(|m| Error::Failed(format!("{}: {m}", shown(f))))?;
        let mut ids: Vec<(String, String)> = Vec::new();
        let mut without_budget = 0;
        for (path, item) in items {
            let mut r = Vec::new();
            match user_entry(&path, &item, &ids, &mut r, &mut dropped) {
                Some((id, entry)) if r.is_empty() => {
                    ids.push((id, path.clone()));
                    users.push(entry);
                }
                None if r.is_empty() => without_budget += 1,
                _ => {}
            }
            refused_entries += usize::from(!r.is_empty());
            refused.extend(r.into_iter().map(|x| Refused { file: shown(f), path: x.path, message: x.message }));
        }
        if without_budget > 0 {
            notes.push(format!("{}: left out {without_budget} user(s) without max_budget or soft_budget (a user entry holds only a budget)", shown(f)));
        }
    }

    let mut keys: Vec<Value> = Vec::new();
    if let Some(f) = &keys_file {
        let doc = read_json(f)?;
        let items = key_items(&doc).map_err(|m| Error::Failed(format!("{}: {m}", shown(f))))?;
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut aliases: HashMap<String, String> = HashMap::new();
        let mut ui_sessions = 0;
        for (path, item) in items {
            if item.get("team_id").and_then(Json::as_str) == Some(UI_SESSION_TEAM) {
                ui_sessions += 1;
                continue;
            }
            let mut r = Vec::new();
            let entry = key_entry(&path, &item, &mut r, &mut dropped);
            if let Some(e) = entry.filter(|_| r.is_empty()) {
                if let Some(first) = seen.get(&e.token) {
                    r.push(Refusal { path: format!("{path}.token"), message: format!("is the same key as {first}") });
                } else if let Some(first) = e.alias.as_ref().and_then(|al| aliases.get(al)) {
                    r.push(Refusal { path: format!("{path}.key_alias"), message: format!("is already the key_alias of {first}") });
                } else {
                    seen.insert(e.token.clone(), path.clone());
                    if let Some(al) = &e.alias {
                        aliases.insert(al.clone(), path.clone());
                    }
                    if let Some(t) = e.team.as_ref().filter(|t| !team_ids.contains(t)) {
                        notes.push(format!(
                            "{}: {path}.team_id: team `{t}` is not among the imported teams: the config must define it in `teams` (or import it with --teams FILE)",
                            shown(f)
                        ));
                    }
                    keys.push(e.value);
                }
            }
            refused_entries += usize::from(!r.is_empty());
            refused.extend(r.into_iter().map(|x| Refused { file: shown(f), path: x.path, message: x.message }));
        }
        if ui_sessions > 0 {
            notes.push(format!("{}: skipped {ui_sessions} admin-UI session token(s) (team_id {UI_SESSION_TEAM}): not keys a client holds", shown(f)));
        }
    }

    let mut doc: Vec<(&str, Value)> = Vec::new();
    if teams_file.is_some() {
        doc.push(("teams", Value::Seq(teams.clone())));
    }
    if users_file.is_some() {
        doc.push(("users", Value::Seq(users.clone())));
    }
    if keys_file.is_some() {
        doc.push(("keys", Value::Seq(keys.clone())));
    }
    let doc = Value::map(doc);
    if json {
        writeln!(out, "{}", doc.to_json_pretty()).map_err(w)?;
    } else {
        let from: Vec<String> = keys_file.iter().chain(teams_file.iter()).chain(users_file.iter()).map(|f| comment_safe(&shown(f))).collect();
        let counts = given_counts(&[(&keys_file, keys.len(), "key", "keys"), (&teams_file, teams.len(), "team", "teams"), (&users_file, users.len(), "user", "users")]);
        write!(
            out,
            "# imported by `llm-router key import` from {}: {}{}\n{}",
            from.join(" and "),
            counts.join(", "),
            if keys_file.is_some() { " (keys as LiteLLM's SHA-256 hashes; no raw key)" } else { "" },
            doc.to_yaml()
        )
        .map_err(w)?;
    }
    for r in &refused {
        writeln!(err, "{}: error: {}: {}", r.file, r.path, r.message).map_err(w)?;
    }
    for n in &notes {
        writeln!(err, "{n}").map_err(w)?;
    }
    if !dropped.is_empty() {
        let mut parts: Vec<String> = Vec::new();
        for section in ["keys", "teams", "users"] {
            let names: Vec<String> = dropped.iter().filter(|((s, _), _)| *s == section).map(|((_, f), n)| format!("{f} ({n})")).collect();
            if !names.is_empty() {
                parts.push(format!("{section}: {}", names.join(", ")));
            }
        }
        writeln!(err, "llm-router: key import: dropped fields llm-router has no use for (entries with a value): {}", parts.join("; ")).map_err(w)?;
    }
    let mut counts = given_counts(&[(&keys_file, keys.len(), "key", "keys"), (&teams_file, teams.len(), "team", "teams"), (&users_file, users.len(), "user", "users")]);
    let last = counts.pop().unwrap_or_default();
    let all = if counts.is_empty() { last } else { format!("{} and {last}", counts.join(", ")) };
    writeln!(
        err,
        "llm-router: key import: {all} imported{}",
        if refused_entries == 0 { String::new() } else { format!("; {} refused (left out of the output)", plural(refused_entries, "entry", "entries")) }
    )
    .map_err(w)?;
    Ok(if refused_entries == 0 { 0 } else { 1 })
}

/// `text` for a `#` comment line: a line break would end the comment and start YAML.
fn comment_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// "N keys", "N teams", ... for the sections a file was given for.
fn given_counts(sections: &[(&Option<String>, usize, &str, &str)]) -> Vec<String> {
    sections.iter().filter(|(f, ..)| f.is_some()).map(|(_, n, one, many)| plural(*n, one, many)).collect()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn shown(f: &str) -> String {
    if f == "-" {
        "<stdin>".into()
    } else {
        f.to_string()
    }
}

fn read_json(f: &str) -> Result<Json, Error> {
    let text = if f == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Error::Failed(format!("<stdin>: {e}")))?;
        s
    } else {
        std::fs::read_to_string(f).map_err(|e| Error::Failed(format!("{f}: {e}")))?
    };
    // serde_json's message names the line and column only, never the text.
    serde_json::from_str(&text).map_err(|e| Error::Failed(format!("{}: not JSON: {e}", shown(f))))
}

/// The key entries of an export, each with its path in the file.
fn key_items(doc: &Json) -> Result<Vec<(String, Json)>, String> {
    match doc {
        Json::Array(items) => Ok(items.iter().enumerate().map(|(i, v)| (format!("[{i}]"), v.clone())).collect()),
        Json::Object(m) => match (m.get("keys"), m.get("info"), m.get("token")) {
            (Some(Json::Array(items)), _, _) => Ok(items.iter().enumerate().map(|(i, v)| (format!("keys[{i}]"), v.clone())).collect()),
            // GET /key/info: the key as it was asked for (LiteLLM pops `token` from `info`).
            (_, Some(Json::Object(info)), _) => {
                let mut entry = info.clone();
                if let Some(k) = m.get("key") {
                    entry.insert("token".into(), k.clone());
                }
                Ok(vec![("info".into(), Json::Object(entry))])
            }
            (_, _, Some(_)) => Ok(vec![("key".into(), doc.clone())]),
            _ if m.contains_key("teams") || m.contains_key("team_id") => Err("this is a team export: pass it as --teams FILE".into()),
            _ => Err(EXPECTED_KEYS.into()),
        },
        _ => Err(EXPECTED_KEYS.into()),
    }
}

const EXPECTED_KEYS: &str = "not a LiteLLM key export: expected {\"keys\": [...]} (GET /key/list?return_full_object=true), a list of keys, or {\"key\": ..., \"info\": {...}} (GET /key/info)";

/// The team entries of an export: `/team/list` (a list), `/v2/team/list` (`{"teams": [...]}`),
/// `/team/info` (`{"team_id": ..., "team_info": {...}}`) or one team.
fn team_items(doc: &Json) -> Result<Vec<(String, Json)>, String> {
    export_items(doc, ["teams", "team_info", "team_id", "team"], EXPECTED_TEAMS)
}

const EXPECTED_TEAMS: &str = "not a LiteLLM team export: expected a list of teams (GET /team/list), {\"teams\": [...]} (GET /v2/team/list) or {\"team_id\": ..., \"team_info\": {...}} (GET /team/info)";

/// The user entries of an export: `GET /user/list` (`{"users": [...], "total": ...}`), a list,
/// `GET /user/info` (`{"user_id": ..., "user_info": {...}}`) or one user.
fn user_items(doc: &Json) -> Result<Vec<(String, Json)>, String> {
    const EXPECTED: &str = "not a LiteLLM user export: expected {\"users\": [...]} (GET /user/list), a list of users or {\"user_id\": ..., \"user_info\": {...}} (GET /user/info)";
    export_items(doc, ["users", "user_info", "user_id", "user"], EXPECTED)
}

/// The entries of a LiteLLM list/info export, each with the path messages name it by: a bare
/// list, `{<list>: [...]}`, `{<info>: {...}}` (an info endpoint), or one entry (it has `<id>`).
/// `names` = [list field, info field, id field, the single entry's name].
fn export_items(doc: &Json, names: [&str; 4], expected: &str) -> Result<Vec<(String, Json)>, String> {
    let [list, info, id, one] = names;
    let numbered = |prefix: &str, items: &[Json]| items.iter().enumerate().map(|(i, v)| (format!("{prefix}[{i}]"), v.clone())).collect();
    match doc {
        Json::Array(items) => Ok(numbered("", items)),
        Json::Object(m) => match (m.get(list), m.get(info), m.get(id)) {
            (Some(Json::Array(items)), _, _) => Ok(numbered(list, items)),
            (_, Some(entry @ Json::Object(_)), _) => Ok(vec![(info.to_string(), entry.clone())]),
            (_, _, Some(_)) => Ok(vec![(one.to_string(), doc.clone())]),
            _ => Err(expected.into()),
        },
        _ => Err(expected.into()),
    }
}

/// A user's budget (`users[i]`: `user_id`, `max_budget`, `soft_budget`, `budget_duration`, the
/// budget table filling what the row leaves unset); None without a budget (nothing to import).
fn user_entry(
    path: &str,
    item: &Json,
    ids: &[(String, String)],
    r: &mut Vec<Refusal>,
    dropped: &mut BTreeMap<(&'static str, String), usize>,
) -> Option<(String, Value)> {
    let Json::Object(m) = item else {
        refuse(r, path.to_string(), format!("must be a user object, got {}", kind(item)));
        return None;
    };
    let at = |f: &str| format!("{path}.{f}");
    let id = required_id(m, "user_id", &at("user_id"), r)?;
    if let Some((_, first)) = ids.iter().find(|(u, _)| *u == id) {
        refuse(r, at("user_id"), format!("`{id}` is already the user_id of {first}"));
        return None;
    }
    let table = match non_null(m, "litellm_budget_table") {
        Some(Json::Object(b)) => Some(b),
        _ => None,
    };
    let own_or_table = |f: &str| -> (Option<&Json>, String) {
        match (non_null(m, f), table.and_then(|b| non_null(b, f))) {
            (Some(v), _) => (Some(v), at(f)),
            (None, Some(v)) => (Some(v), format!("{path}.litellm_budget_table.{f}")),
            (None, None) => (None, at(f)),
        }
    };
    let mut entry: Vec<(&str, Value)> = vec![("user_id", Value::from(id.as_str()))];
    budget_amounts(&own_or_table, &mut entry, r);
    let has_budget = entry.len() > 1;
    let (v, p) = own_or_table("budget_duration");
    duration_field(v, p, &mut entry, r);
    for (k, v) in m {
        if !["user_id", "max_budget", "soft_budget", "budget_duration", "litellm_budget_table"].contains(&k.as_str()) && has_value(v) {
            *dropped.entry(("users", k.clone())).or_insert(0) += 1;
        }
    }
    has_budget.then(|| (id, Value::map(entry)))
}

/// Fields of a key the import writes (in this order), beyond `token`.
const KEY_TEXT: &[&str] = &["key_alias", "team_id", "user_id"];
const LIMITS: &[&str] = &["rpm_limit", "tpm_limit", "max_parallel_requests"];
const BUDGETS: &[&str] = &["max_budget", "soft_budget"];
/// Consumed without being written as such (the hash's other home, the budget table).
const KEY_CONSUMED: &[&str] = &["token", "api_key", "litellm_budget_table", "metadata", "tags", "models", "aliases", "expires", "blocked",
    "budget_duration", "model_max_budget", "model_rpm_limit", "model_tpm_limit"];

struct KeyOut {
    token: String,
    alias: Option<String>,
    team: Option<String>,
    value: Value,
}

fn refuse(r: &mut Vec<Refusal>, path: String, message: impl Into<String>) {
    r.push(Refusal { path, message: message.into() });
}

/// Whether `s` is (or carries) a raw LiteLLM key rather than its hash.
fn looks_raw(s: &str) -> bool {
    let t = s.trim();
    let t = if t.len() > 7 && t.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")) { t.get(7..).unwrap_or(t) } else { t };
    t.starts_with("sk-")
}

/// A required, non-empty string id (`user_id`, `team_id`); refused at `path` otherwise.
fn required_id(m: &Map<String, Json>, field: &str, path: &str, r: &mut Vec<Refusal>) -> Option<String> {
    match non_null(m, field) {
        Some(Json::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        None | Some(Json::String(_)) => {
            refuse(r, path.to_string(), "is required");
            None
        }
        Some(other) => {
            refuse(r, path.to_string(), format!("must be a string, got {}", kind(other)));
            None
        }
    }
}

fn non_null<'a>(m: &'a Map<String, Json>, k: &str) -> Option<&'a Json> {
    m.get(k).filter(|v| !v.is_null())
}

fn key_entry(path: &str, item: &Json, r: &mut Vec<Refusal>, dropped: &mut BTreeMap<(&'static str, String), usize>) -> Option<KeyOut> {
    let m = match item {
        Json::Object(m) => m,
        Json::String(_) => {
            refuse(r, path.to_string(), "is only a token, not a key's settings: export with GET /key/list?return_full_object=true");
            return None;
        }
        other => {
            refuse(r, path.to_string(), format!("must be a key object, got {}", kind(other)));
            return None;
        }
    };
    let at = |f: &str| format!("{path}.{f}");
    // The hash: `token` (the database row, /key/list), else `api_key` (UserAPIKeyAuth hashes it).
    let token = match (non_null(m, "token"), non_null(m, "api_key")) {
        (Some(t), _) => Some(("token", t)),
        (None, Some(k)) => Some(("api_key", k)),
        (None, None) => None,
    };
    let token = match token {
        None => {
            refuse(r, path.to_string(), "has no token (LiteLLM's SHA-256 hash of the key)");
            None
        }
        Some((f, Json::String(s))) if looks_raw(s) => {
            refuse(r, at(f), "is a raw key, not LiteLLM's SHA-256 hash of one: not imported, and not printed (export hashes: GET /key/list)");
            None
        }
        Some((f, Json::String(s))) => match parse_hex(s.trim()) {
            Some(h) => Some(hex(&h)),
            None => {
                refuse(r, at(f), "must be LiteLLM's SHA-256 hash of the key, 64 hex digits");
                None
            }
        },
        Some((f, other)) => {
            refuse(r, at(f), format!("must be LiteLLM's SHA-256 hash of the key, got {}", kind(other)));
            None
        }
    };
    if let (Some(_), Some(Json::String(k))) = (non_null(m, "token"), non_null(m, "api_key")) {
        if looks_raw(k) {
            refuse(r, at("api_key"), "is a raw key: the entry is not imported, and the key is not printed");
        }
    }
    let meta = match non_null(m, "metadata") {
        None => Map::new(),
        Some(Json::Object(meta)) => meta.clone(),
        Some(other) => {
            refuse(r, at("metadata"), format!("must be a mapping, got {}", kind(other)));
            Map::new()
        }
    };
    let budget_table = match non_null(m, "litellm_budget_table") {
        Some(Json::Object(b)) => Some(b),
        _ => None,
    };

    let mut entry: Vec<(&str, Value)> = Vec::new();
    let mut texts: HashMap<&str, String> = HashMap::new();
    for f in KEY_TEXT {
        if let Some(s) = text_field(m, f, path, r) {
            texts.insert(f, s.clone());
            entry.push((f, Value::from(s)));
        }
    }
    if let Some(list) = string_list(m.get("models"), &at("models"), r).filter(|l| !l.is_empty()) {
        entry.push(("models", Value::seq(list.into_iter().map(Value::from))));
    }
    if let Some(aliases) = string_map(m.get("aliases"), &at("aliases"), r).filter(|a| !a.is_empty()) {
        entry.push(("aliases", Value::map(aliases.into_iter().map(|(k, v)| (k, Value::from(v))))));
    }
    match non_null(m, "expires") {
        None => {}
        Some(Json::String(t)) if parse_time_ms(t).is_some() => entry.push(("expires", Value::from(t.as_str()))),
        Some(Json::String(_)) => refuse(r, at("expires"), "must be an ISO 8601 time such as 2026-12-31T23:59:59Z"),
        Some(other) => refuse(r, at("expires"), format!("must be an ISO 8601 time string, got {}", kind(other))),
    }
    match non_null(m, "blocked") {
        None | Some(Json::Bool(false)) => {}
        Some(Json::Bool(true)) => entry.push(("blocked", Value::Bool(true))),
        Some(other) => refuse(r, at("blocked"), format!("must be true or false, got {}", kind(other))),
    }
    // Limits and budgets: the key's own, else its budget table's (LiteLLM_VerificationTokenView).
    let own_or_table = |f: &str| -> (Option<&Json>, String) {
        match (non_null(m, f), budget_table.and_then(|b| non_null(b, f))) {
            (Some(v), _) => (Some(v), at(f)),
            (None, Some(v)) => (Some(v), format!("{path}.litellm_budget_table.{f}")),
            (None, None) => (None, at(f)),
        }
    };
    for f in LIMITS {
        let (v, p) = own_or_table(f);
        if let Some(n) = v.and_then(|v| count(v, &p, r)) {
            entry.push((f, Value::from(n)));
        }
    }
    for f in ["model_rpm_limit", "model_tpm_limit"] {
        // Top level (a /key/generate-shaped file) wins over metadata (where LiteLLM stores them).
        let (v, p) = match non_null(m, f) {
            Some(v) => (Some(v), at(f)),
            None => (non_null(&meta, f), format!("{path}.metadata.{f}")),
        };
        if let Some(limits) = v.and_then(|v| count_map(v, &p, r)).filter(|l| !l.is_empty()) {
            entry.push((f, Value::map(limits.into_iter().map(|(k, n)| (k, Value::from(n))))));
        }
    }
    budget_amounts(&own_or_table, &mut entry, r);
    {
        let (v, p) = own_or_table("budget_duration");
        duration_field(v, p, &mut entry, r);
    }
    {
        let own = non_null(m, "model_max_budget").filter(|v| v.as_object().is_none_or(|o| !o.is_empty()));
        let (v, p) = match own {
            Some(v) => (Some(v), at("model_max_budget")),
            None => (budget_table.and_then(|b| non_null(b, "model_max_budget")), format!("{path}.litellm_budget_table.model_max_budget")),
        };
        match v {
            None => {}
            Some(Json::Object(o)) if o.is_empty() => {}
            Some(v @ Json::Object(_)) => entry.push(("model_max_budget", Value::from(v.clone()))),
            Some(other) => refuse(r, p, format!("must be a mapping of model names to budgets, got {}", kind(other))),
        }
    }
    let tags = match non_null(m, "tags") {
        Some(v) => string_list(Some(v), &at("tags"), r),
        None => string_list(meta.get("tags"), &format!("{path}.metadata.tags"), r),
    };
    if let Some(t) = tags.filter(|t| !t.is_empty()) {
        entry.push(("tags", Value::seq(t.into_iter().map(Value::from))));
    }
    let rest: Vec<(String, Value)> =
        meta.iter().filter(|(k, _)| !["model_rpm_limit", "model_tpm_limit", "tags"].contains(&k.as_str())).map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
    if !rest.is_empty() {
        entry.push(("metadata", Value::Map(rest)));
    }
    for (k, v) in m {
        let used = KEY_CONSUMED.contains(&k.as_str()) || KEY_TEXT.contains(&k.as_str()) || LIMITS.contains(&k.as_str()) || BUDGETS.contains(&k.as_str());
        if !used && has_value(v) {
            *dropped.entry(("keys", k.clone())).or_insert(0) += 1;
        }
    }
    // Every field was checked (all problems at once); without a hash there is no entry.
    let token = token?;
    entry.insert(0, ("token", Value::from(token.as_str())));
    Some(KeyOut { token, alias: texts.get("key_alias").cloned(), team: texts.get("team_id").cloned(), value: Value::map(entry) })
}

fn team_entry(path: &str, item: &Json, ids: &[String], paths: &[String], r: &mut Vec<Refusal>, dropped: &mut BTreeMap<(&'static str, String), usize>) -> Option<(String, Value)> {
    let Json::Object(m) = item else {
        refuse(r, path.to_string(), format!("must be a team object, got {}", kind(item)));
        return None;
    };
    let at = |f: &str| format!("{path}.{f}");
    let id = required_id(m, "team_id", &at("team_id"), r)?;
    if let Some(first) = ids.iter().position(|t| *t == id) {
        refuse(r, at("team_id"), format!("`{id}` is already the team_id of {}", paths.get(first).map_or("another team", |p| p.as_str())));
        return None;
    }
    let mut entry: Vec<(&str, Value)> = vec![("team_id", Value::from(id.as_str()))];
    if let Some(a) = text_field(m, "team_alias", path, r) {
        entry.push(("team_alias", Value::from(a)));
    }
    if let Some(list) = string_list(m.get("models"), &at("models"), r).filter(|l| !l.is_empty()) {
        entry.push(("models", Value::seq(list.into_iter().map(Value::from))));
    }
    match non_null(m, "blocked") {
        None | Some(Json::Bool(false)) => {}
        Some(Json::Bool(true)) => entry.push(("blocked", Value::Bool(true))),
        Some(other) => refuse(r, at("blocked"), format!("must be true or false, got {}", kind(other))),
    }
    for f in LIMITS {
        if let Some(n) = non_null(m, f).and_then(|v| count(v, &at(f), r)) {
            entry.push((f, Value::from(n)));
        }
    }
    for f in BUDGETS {
        match non_null(m, f) {
            None => {}
            Some(Json::Number(n)) if n.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0) => entry.push((f, Value::from(Json::Number(n.clone())))),
            Some(other) => refuse(r, at(f), format!("must be an amount in USD (a number >= 0), got {}", describe(other))),
        }
    }
    duration_field(non_null(m, "budget_duration"), at("budget_duration"), &mut entry, r);
    match non_null(m, "model_max_budget") {
        None => {}
        Some(Json::Object(o)) if o.is_empty() => {}
        Some(v @ Json::Object(_)) => entry.push(("model_max_budget", Value::from(v.clone()))),
        Some(other) => refuse(r, at("model_max_budget"), format!("must be a mapping of model names to budgets, got {}", kind(other))),
    }
    match non_null(m, "metadata") {
        None => {}
        Some(Json::Object(o)) if o.is_empty() => {}
        Some(v @ Json::Object(_)) => entry.push(("metadata", Value::from(v.clone()))),
        Some(other) => refuse(r, at("metadata"), format!("must be a mapping, got {}", kind(other))),
    }
    const TEAM_USED: &[&str] = &["team_id", "team_alias", "models", "blocked", "rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget",
        "soft_budget", "budget_duration", "model_max_budget", "metadata"];
    for (k, v) in m {
        if !TEAM_USED.contains(&k.as_str()) && has_value(v) {
            *dropped.entry(("teams", k.clone())).or_insert(0) += 1;
        }
    }
    Some((id, Value::map(entry)))
}

/// `budget_duration`: written when it is a period the loader reads; LiteLLM's "no period"
/// (`none`, `null`, empty) is left out.
/// The USD amounts of [`BUDGETS`] (the entry's own, else its budget table's, as `own_or_table`
/// finds them) into `entry`; anything but a number >= 0 is refused at its path.
fn budget_amounts<'j>(own_or_table: &dyn Fn(&str) -> (Option<&'j Json>, String), entry: &mut Vec<(&'static str, Value)>, r: &mut Vec<Refusal>) {
    for f in BUDGETS {
        let (v, p) = own_or_table(f);
        match v {
            None => {}
            Some(Json::Number(n)) if n.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0) => entry.push((f, Value::from(Json::Number(n.clone())))),
            Some(other) => refuse(r, p, format!("must be an amount in USD (a number >= 0), got {}", describe(other))),
        }
    }
}

fn duration_field(v: Option<&Json>, path: String, entry: &mut Vec<(&str, Value)>, r: &mut Vec<Refusal>) {
    match v {
        None => {}
        Some(Json::String(d)) if is_no_duration(d) => {}
        Some(Json::String(d)) => match check_duration(d) {
            Ok(()) => entry.push(("budget_duration", Value::from(d.trim()))),
            Err(m) => refuse(r, path, m),
        },
        Some(other) => refuse(r, path, format!("must be a budget period such as 30d, got {}", kind(other))),
    }
}

/// Whether a field carries anything (LiteLLM exports every column, most of them null or empty).
fn has_value(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
        Json::Bool(b) => *b,
        // `spend: 0.0`, `rotation_count: 0`: defaults, not information.
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::String(s) => !s.is_empty(),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

/// A number is shown (never a string: it could be anything, a key included).
fn describe(v: &Json) -> String {
    match v {
        Json::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

fn text_field(m: &Map<String, Json>, f: &str, path: &str, r: &mut Vec<Refusal>) -> Option<String> {
    match non_null(m, f) {
        None => None,
        Some(Json::String(s)) if s.is_empty() => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => {
            refuse(r, format!("{path}.{f}"), format!("must be a string, got {}", kind(other)));
            None
        }
    }
}

fn count(v: &Json, path: &str, r: &mut Vec<Refusal>) -> Option<u64> {
    let n = match v {
        Json::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64)),
        // The loader reads "500" as 500 too.
        Json::String(t) => t.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n <= u64::from(u32::MAX) => Some(n),
        _ => {
            refuse(r, path.to_string(), format!("must be a whole number from 0 to 4294967295, got {}", describe(v)));
            None
        }
    }
}

fn string_list(v: Option<&Json>, path: &str, r: &mut Vec<Refusal>) -> Option<Vec<String>> {
    match v {
        None | Some(Json::Null) => None,
        // One string reads as a one-element list, as the loader reads it.
        Some(Json::String(s)) => Some(vec![s.clone()]),
        Some(Json::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Json::String(s) => out.push(s.clone()),
                    other => refuse(r, format!("{path}[{i}]"), format!("must be a string, got {}", kind(other))),
                }
            }
            Some(out)
        }
        Some(other) => {
            refuse(r, path.to_string(), format!("must be a list of strings, got {}", kind(other)));
            None
        }
    }
}

fn string_map(v: Option<&Json>, path: &str, r: &mut Vec<Refusal>) -> Option<Vec<(String, String)>> {
    match v {
        None | Some(Json::Null) => None,
        Some(Json::Object(o)) => {
            let mut out = Vec::new();
            for (k, v) in o {
                match v {
                    Json::String(s) => out.push((k.clone(), s.clone())),
                    other => refuse(r, format!("{path}.{k}"), format!("must be a model name, got {}", kind(other))),
                }
            }
            Some(out)
        }
        Some(other) => {
            refuse(r, path.to_string(), format!("must be a mapping of model names, got {}", kind(other)));
            None
        }
    }
}

fn count_map(v: &Json, path: &str, r: &mut Vec<Refusal>) -> Option<Vec<(String, u64)>> {
    match v {
        Json::Object(o) => Some(o.iter().filter_map(|(k, n)| count(n, &format!("{path}.{k}"), r).map(|n| (k.clone(), n))).collect()),
        other => {
            refuse(r, path.to_string(), format!("must be a mapping of model names to limits, got {}", kind(other)));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_standard_alphabet_without_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
        assert_eq!(base64url(&[0u8; KEY_BYTES]).len(), 32);
    }

    #[test]
    fn durations_are_the_loader_s() {
        for ok in ["30s", "30m", "24h", "30d", "1w", "1mo", " 7d "] {
            assert!(check_duration(ok).is_ok(), "{ok}");
        }
        for bad in ["", "none", "30", "0d", "d", "30 d", "30d5", "1y", "-1d", "1.5h"] {
            assert!(check_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn raw_keys_are_recognised() {
        assert!(looks_raw("sk-1234"));
        assert!(looks_raw("Bearer sk-1234"));
        assert!(looks_raw(" sk-x "));
        assert!(!looks_raw("88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"));
    }
}
