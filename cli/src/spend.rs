//! `llm-router spend ACCESS_LOG...`: requests, tokens and cost from Envoy access logs, grouped.
//!
//! Reads the JSON access-log lines of `envoy/access-log-json.yaml` (`llm-router envoy
//! --access-log json`): one JSON object per line with the router's filter-state fields
//! (`key_alias`, `team_id`, `user_id`, `tags`, `model_group`, `prompt_tokens`,
//! `completion_tokens`, `cost_usd`) and Envoy's `start_time`, `path`. The default text line
//! (`ACCESS_LOG_FORMAT`: `[start] "METHOD PATH PROTO" CODE FLAGS DURms k=v ...`) is read too: it
//! has the group and the tokens but no key, team or cost (those count as `-` and 0), and any
//! `key_alias=`, `team_id=`, `user_id=`, `tags=`, `cost_usd=` fields a custom text format adds
//! are taken. Lines that are neither are skipped and counted on stderr (a mixed Envoy log, with
//! its own log lines between the access-log lines, can be read as it is).
//!
//! A *request* is a line the router routed (`model_group` set) that is not a failed failover
//! pass (those end at an internal redirect, path `/__llm_router/failover...`, and carry no
//! usage): one per client request. Cost is summed exactly: each `cost_usd` decimal string is
//! parsed into integer nano-USD (digits beyond the ninth decimal are rounded half up) and the
//! sums are integers, printed back as exact decimals.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

const USAGE: &str = "\
Usage: llm-router spend ACCESS_LOG... [--by key|team|model|day|user|tag[,...]] [--format table|csv|json]
                        [--since DATE] [--until DATE]

ACCESS_LOG: files of Envoy access-log lines (`-`: stdin), JSON (llm-router envoy --access-log json) or the
default text format. --by groups (combinable: --by team,day); without it one total. DATE: YYYY-MM-DD
(whole days, UTC; --until includes that day) or an RFC 3339 UTC time (2026-12-01T10:00:00Z).
";

/// The failover path: lines of failed passes (they end at the internal redirect).
const FAILOVER_PATH: &str = "/__llm_router/failover";
/// What a missing value reads as in a group.
const NONE: &str = "-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Key,
    Team,
    Model,
    Day,
    User,
    Tag,
}

impl Dim {
    fn parse(s: &str) -> Option<Dim> {
        Some(match s {
            "key" => Dim::Key,
            "team" => Dim::Team,
            "model" => Dim::Model,
            "day" => Dim::Day,
            "user" => Dim::User,
            "tag" => Dim::Tag,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dim::Key => "key",
            Dim::Team => "team",
            Dim::Model => "model",
            Dim::Day => "day",
            Dim::User => "user",
            Dim::Tag => "tag",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// One access-log line the router routed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// `start_time` as Envoy prints it (`2026-12-01T10:00:00.123Z`).
    pub time: Option<String>,
    pub key: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub tags: Vec<String>,
    pub model: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_nanos: u64,
    /// One client request (not a failed failover pass).
    pub request: bool,
}

/// What one line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Routed(Entry),
    /// A well-formed access-log line the router did not route (a local reply, a pass-through).
    Other,
    /// An empty line.
    Blank,
    Unparseable,
}

/// `cost_usd` as a decimal (`0.0000015`, `12`, `1.5e-6`) → nano-USD. Digits past the ninth
/// decimal are rounded half up. None: not a non-negative decimal, or beyond u64.
pub fn parse_usd_nanos(s: &str) -> Option<u64> {
    let s = s.trim();
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (s.get(..i)?, s.get(i + 1..)?.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^(exp − frac.len()); nano = value × 10^9.
    let digits: String = int.chars().chain(frac.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let shift = i64::from(exp) - i64::try_from(frac.len()).ok()? + 9;
    if digits.is_empty() {
        return Some(0);
    }
    if shift >= 0 {
        if usize::try_from(shift).ok()?.saturating_add(digits.len()) > 20 {
            return None;
        }
        let base: u64 = digits.parse().ok()?;
        return base.checked_mul(10u64.checked_pow(u32::try_from(shift).ok()?)?);
    }
    let drop = usize::try_from(-shift).ok()?;
    if drop > digits.len() {
        // Below a tenth of a nano-USD: rounds to 0.
        return Some(0);
    }
    let keep = digits.len().saturating_sub(drop);
    let head = digits.get(..keep)?;
    let base: u64 = if head.is_empty() { 0 } else { head.parse().ok()? };
    let round_up = digits.as_bytes().get(keep).is_some_and(|d| *d >= b'5');
    base.checked_add(u64::from(round_up))
}

/// Nano-USD as an exact decimal in USD (`0.0000015`, `3`), formatted as the filter formats a
/// request's; a total beyond u64 nano-USD ($18.4 billion) saturates, as `cost_nanousd` does.
pub fn usd(nanos: u128) -> String {
    llm_router::cli_api::usd(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn none_if_dash(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty() && s != NONE)
}

fn split_tags(v: Option<String>) -> Vec<String> {
    none_if_dash(v).map(|s| s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()).unwrap_or_default()
}

fn count(v: Option<String>) -> u64 {
    none_if_dash(v).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn is_request(path: Option<&str>) -> bool {
    !path.is_some_and(|p| p.starts_with(FAILOVER_PATH))
}

/// A JSON line's field as text: a string as it is, a number as written, null/absent as None.
fn json_field(obj: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<String> {
    match obj.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn entry(get: &dyn Fn(&str) -> Option<String>, model_key: &str) -> Line {
    let Some(model) = none_if_dash(get(model_key)) else { return Line::Other };
    let cost_nanos = match none_if_dash(get("cost_usd")) {
        Some(c) => match parse_usd_nanos(&c) {
            Some(n) => n,
            None => return Line::Unparseable,
        },
        None => 0,
    };
    Line::Routed(Entry {
        time: none_if_dash(get("start_time")),
        key: none_if_dash(get("key_alias")),
        team: none_if_dash(get("team_id")),
        user: none_if_dash(get("user_id")),
        tags: split_tags(get("tags")),
        model: Some(model),
        prompt_tokens: count(get("prompt_tokens")),
        completion_tokens: count(get("completion_tokens")),
        cost_nanos,
        request: is_request(get("path").as_deref()),
    })
}

/// One access-log line, JSON or the default text format.
pub fn parse_line(line: &str) -> Line {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Line::Blank;
    }
    if line.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(obj)) => entry(&|k| json_field(&obj, k), "model_group"),
            _ => Line::Unparseable,
        };
    }
    match parse_text(line) {
        Some(fields) => entry(&|k| fields.get(k).cloned(), "group"),
        None => Line::Unparseable,
    }
}

/// `[START] "METHOD PATH PROTO" CODE FLAGS DURms k=v k=v ...` → fields (`start_time`, `path`,
/// and every `k=v`).
fn parse_text(line: &str) -> Option<BTreeMap<String, String>> {
    let rest = line.strip_prefix('[')?;
    let (start, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut req = request.split(' ');
    let (_method, path, _proto) = (req.next()?, req.next()?, req.next()?);
    let mut words = rest.split(' ');
    let code = words.next()?;
    let _flags = words.next()?;
    let duration = words.next()?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !duration.strip_suffix("ms")?.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut fields = BTreeMap::new();
    fields.insert("start_time".to_string(), start.to_string());
    fields.insert("path".to_string(), path.to_string());
    for w in words {
        if let Some((k, v)) = w.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    Some(fields)
}

/// Sums of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_nanos: u128,
}

impl Totals {
    fn add(&mut self, e: &Entry) {
        self.requests = self.requests.saturating_add(u64::from(e.request));
        self.prompt_tokens = self.prompt_tokens.saturating_add(e.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(e.completion_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(u128::from(e.cost_nanos));
    }
}

/// A time bound: a day (whole UTC day) or an exact time, compared as Envoy's ISO 8601 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Day(String),
    Time(String),
}

impl Bound {
    pub fn parse(s: &str) -> Option<Bound> {
        let b = s.as_bytes();
        let is_day = |d: &[u8]| {
            d.len() == 10
                && d.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
        };
        if is_day(b) {
            return Some(Bound::Day(s.to_string()));
        }
        // RFC 3339 in UTC: YYYY-MM-DDTHH:MM:SS[.fff]Z
        let ok = b.len() >= 20
            && b.get(..10).is_some_and(is_day)
            && b.get(10) == Some(&b'T')
            && b.last() == Some(&b'Z')
            && b.get(11..19).is_some_and(|t| t.iter().enumerate().all(|(i, c)| if i == 2 || i == 5 { *c == b':' } else { c.is_ascii_digit() }));
        ok.then(|| Bound::Time(s.to_string()))
    }
}

/// Whether `time` (Envoy's `2026-12-01T10:00:00.123Z`) is within the bounds. Compared as text
/// with the fraction normalised, which is chronological for UTC times of this shape.
fn within(time: &str, since: Option<&Bound>, until: Option<&Bound>) -> bool {
    let day = time.get(..10).unwrap_or(time);
    let norm = normalise_time(time);
    let after = match since {
        None => true,
        Some(Bound::Day(d)) => day >= d.as_str(),
        Some(Bound::Time(t)) => norm >= normalise_time(t),
    };
    let before = match until {
        None => true,
        Some(Bound::Day(d)) => day <= d.as_str(),
        Some(Bound::Time(t)) => norm <= normalise_time(t),
    };
    after && before
}

/// `...:SS[.f*]Z` → `...:SS.fffffffff` (nine fraction digits), so times compare as text.
fn normalise_time(t: &str) -> String {
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (head, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut f: String = frac.chars().take(9).collect();
    while f.len() < 9 {
        f.push('0');
    }
    format!("{head}.{f}")
}

/// The report: per group (values in `by` order) the totals, and the grand total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub by: Vec<Dim>,
    pub groups: BTreeMap<Vec<String>, Totals>,
    pub total: Totals,
    pub lines: u64,
    pub routed: u64,
    pub skipped: u64,
    /// Routed lines left out by --since/--until (or without a time while those are given).
    pub out_of_range: u64,
}

impl Report {
    pub fn new(by: Vec<Dim>) -> Report {
        Report { by, ..Report::default() }
    }

    /// Reads one line into the report.
    pub fn add_line(&mut self, line: &str, since: Option<&Bound>, until: Option<&Bound>) {
        let parsed = parse_line(line);
        if parsed != Line::Blank {
            self.lines = self.lines.saturating_add(1);
        }
        let e = match parsed {
            Line::Routed(e) => e,
            Line::Unparseable => {
                self.skipped = self.skipped.saturating_add(1);
                return;
            }
            Line::Other | Line::Blank => return,
        };
        if since.is_some() || until.is_some() {
            match &e.time {
                Some(t) if within(t, since, until) => {}
                _ => {
                    self.out_of_range = self.out_of_range.saturating_add(1);
                    return;
                }
            }
        }
        self.routed = self.routed.saturating_add(1);
        self.total.add(&e);
        if self.by.is_empty() {
            return;
        }
        // The cartesian product of each dimension's values (tags: one row per tag).
        let mut keys: Vec<Vec<String>> = vec![Vec::new()];
        for d in &self.by {
            let values: Vec<String> = match d {
                Dim::Key => vec![e.key.clone().unwrap_or_else(|| NONE.into())],
                Dim::Team => vec![e.team.clone().unwrap_or_else(|| NONE.into())],
                Dim::User => vec![e.user.clone().unwrap_or_else(|| NONE.into())],
                Dim::Model => vec![e.model.clone().unwrap_or_else(|| NONE.into())],
                Dim::Day => vec![e.time.as_deref().and_then(|t| t.get(..10)).unwrap_or(NONE).to_string()],
                Dim::Tag if e.tags.is_empty() => vec![NONE.into()],
                Dim::Tag => {
                    let mut t = e.tags.clone();
                    t.sort();
                    t.dedup();
                    t
                }
            };
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    values.iter().map(move |v| {
                        let mut k = k.clone();
                        k.push(v.clone());
                        k
                    })
                })
                .collect();
        }
        for k in keys {
            self.groups.entry(k).or_default().add(&e);
        }
    }

    fn header(&self) -> Vec<String> {
        let mut h: Vec<String> = self.by.iter().map(|d| d.name().to_string()).collect();
        h.extend(["requests", "prompt_tokens", "completion_tokens", "cost_usd"].map(String::from));
        h
    }

    fn row(key: &[String], t: &Totals) -> Vec<String> {
        let mut r = key.to_vec();
        r.extend([t.requests.to_string(), t.prompt_tokens.to_string(), t.completion_tokens.to_string(), usd(t.cost_nanos)]);
        r
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.table(),
            Format::Csv => self.csv(),
            Format::Json => format!("{}\n", self.json()),
        }
    }

    fn table(&self) -> String {
        let mut rows = vec![self.header()];
        for (k, t) in &self.groups {
            rows.push(Self::row(k, t));
        }
        let mut total_key = vec![String::new(); self.by.len()];
        if let Some(first) = total_key.first_mut() {
            *first = "total".to_string();
        }
        if !self.by.is_empty() {
            rows.push(Self::row(&total_key, &self.total));
        } else {
            rows.push(Self::row(&[], &self.total));
        }
        let cols = rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|v| v.chars().count()).max().unwrap_or(0)).collect();
        let dims = self.by.len();
        let mut out = String::new();
        for r in &rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (v, w))| if i < dims { format!("{v:<w$}") } else { format!("{v:>w$}") })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    fn csv(&self) -> String {
        let cell = |v: &str| {
            if v.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        };
        let line = |r: Vec<String>| r.iter().map(|v| cell(v)).collect::<Vec<_>>().join(",") + "\n";
        let mut out = line(self.header());
        if self.by.is_empty() {
            out.push_str(&line(Self::row(&[], &self.total)));
        }
        for (k, t) in &self.groups {
            out.push_str(&line(Self::row(k, t)));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let totals = |t: &Totals| {
            let mut m = Map::new();
            m.insert("requests".into(), json!(t.requests));
            m.insert("prompt_tokens".into(), json!(t.prompt_tokens));
            m.insert("completion_tokens".into(), json!(t.completion_tokens));
            m.insert("cost_usd".into(), json!(usd(t.cost_nanos)));
            m.insert("cost_nanousd".into(), json!(u64::try_from(t.cost_nanos).unwrap_or(u64::MAX)));
            m
        };
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|(k, t)| {
                let mut m = Map::new();
                for (d, v) in self.by.iter().zip(k) {
                    m.insert(d.name().into(), json!(v));
                }
                m.extend(totals(t));
                Value::Object(m)
            })
            .collect();
        json!({
            "by": self.by.iter().map(|d| d.name()).collect::<Vec<_>>(),
            "groups": groups,
            "total": Value::Object(totals(&self.total)),
            "lines": self.lines,
            "skipped_lines": self.skipped,
        })
    }
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub files: Vec<String>,
    pub by: Vec<Dim>,
    pub format: Format,
    pub since: Option<Bound>,
    pub until: Option<Bound>,
}

pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options { files: Vec::new(), by: Vec::new(), format: Format::Table, since: None, until: None };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if !name.starts_with("--") {
            o.files.push(arg.clone());
            continue;
        }
        let mut value = || inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| format!("{name} needs a value"));
        match name {
            "--by" => {
                for d in value()?.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                    let dim = Dim::parse(d).ok_or_else(|| format!("--by: `{d}` is not one of key, team, model, day, user, tag"))?;
                    if !o.by.contains(&dim) {
                        o.by.push(dim);
                    }
                }
            }
            "--format" => {
                o.format = match value()?.as_str() {
                    "table" => Format::Table,
                    "csv" => Format::Csv,
                    "json" => Format::Json,
                    other => return Err(format!("--format must be table, csv or json, not `{other}`")),
                }
            }
            "--since" | "--until" => {
                let v = value()?;
                let b = Bound::parse(&v).ok_or_else(|| format!("{name}: `{v}` is not YYYY-MM-DD or an RFC 3339 UTC time (…T10:00:00Z)"))?;
                if name == "--since" {
                    o.since = Some(b);
                } else {
                    o.until = Some(b);
                }
            }
            "--help" => return Err(String::new()),
            _ => return Err(format!("unknown option `{arg}`")),
        }
    }
    if o.files.is_empty() {
        return Err("missing ACCESS_LOG (a file, or - for stdin)".into());
    }
    Ok(o)
}

fn read_into(report: &mut Report, reader: &mut dyn BufRead, o: &Options) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        // A line that is not UTF-8 cannot be one of ours: it is counted as unparseable.
        match std::str::from_utf8(&buf) {
            Ok(line) => report.add_line(line, o.since.as_ref(), o.until.as_ref()),
            Err(_) => {
                report.lines = report.lines.saturating_add(1);
                report.skipped = report.skipped.saturating_add(1);
            }
        }
    }
}

/// Runs `spend ARGS`; `stdin` is read for `-`. Exit status: 0, 1 (a file cannot be read), 2 (usage).
pub fn run(args: &[String], stdin: &mut dyn BufRead, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(msg) if msg.is_empty() => {
            let _ = write!(out, "{USAGE}");
            return 0;
        }
        Err(msg) => {
            let _ = writeln!(err, "llm-router spend: {msg}\n\n{USAGE}");
            return 2;
        }
    };
    let mut report = Report::new(o.by.clone());
    for f in &o.files {
        let result = if f == "-" {
            read_into(&mut report, stdin, &o)
        } else {
            match std::fs::File::open(f) {
                Ok(file) => read_into(&mut report, &mut std::io::BufReader::new(file), &o),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            let _ = writeln!(err, "llm-router spend: {f}: {e}");
            return 1;
        }
    }
    if out.write_all(report.render(o.format).as_bytes()).is_err() {
        return 1;
    }
    if report.skipped > 0 {
        let _ = writeln!(err, "llm-router spend: skipped {} of {} lines: not access-log lines this tool reads", report.skipped, report.lines);
    }
    if report.out_of_range > 0 {
        let _ = writeln!(err, "llm-router spend: {} routed lines outside --since/--until (or without a start time)", report.out_of_range);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON_A: &str = r#"{"start_time":"2026-12-01T10:00:00.123Z","path":"/v1/chat/completions","status":200,"duration_ms":12,"model_group":"gpt-4o","deployment":"a1","key_alias":"finance-app","team_id":"finance","user_id":"alice","tags":"prod,eu","prompt_tokens":"10","completion_tokens":"5","cost_usd":"0.0000015","request_id":"r1"}"#;
    const JSON_B: &str = r#"{"start_time":"2026-12-02T09:00:00Z","path":"/v1/chat/completions","status":200,"model_group":"mini","key_alias":"support-bot","team_id":null,"user_id":null,"tags":null,"prompt_tokens":"7","completion_tokens":"3","cost_usd":"0.1","request_id":"r2"}"#;
    const TEXT: &str = "[2026-12-01T11:00:00.000Z] \"POST /v1/chat/completions HTTP/1.1\" 200 - 4ms deployment=b1 group=b attempts=3 fallback_from=a prompt_tokens=9 completion_tokens=8 upstream=outbound|41317||127.0.0.1 request_id=630bb259";
    const FAILOVER_PASS: &str = "[2026-12-01T11:00:00.000Z] \"POST /__llm_router/failover?status=500&state=x HTTP/1.1\" 307 - 1ms deployment=a1 group=a attempts=1 fallback_from=- prompt_tokens=- completion_tokens=- upstream=passthrough request_id=630bb259";

    #[test]
    fn decimal_costs_parse_exactly_into_nano_usd() {
        assert_eq!(parse_usd_nanos("0.0000015"), Some(1_500));
        assert_eq!(parse_usd_nanos("12"), Some(12_000_000_000));
        assert_eq!(parse_usd_nanos("0"), Some(0));
        assert_eq!(parse_usd_nanos("0.000000001"), Some(1));
        assert_eq!(parse_usd_nanos(".5"), Some(500_000_000));
        assert_eq!(parse_usd_nanos("1.5e-6"), Some(1_500));
        assert_eq!(parse_usd_nanos("2E3"), Some(2_000_000_000_000));
        assert_eq!(parse_usd_nanos("0.0000000014"), Some(1), "rounded half up past the ninth decimal");
        assert_eq!(parse_usd_nanos("0.0000000015"), Some(2));
        assert_eq!(parse_usd_nanos("0.0000000005"), Some(1));
        assert_eq!(parse_usd_nanos("0.00000000049"), Some(0));
        assert_eq!(parse_usd_nanos("1e-30"), Some(0));
        assert_eq!(parse_usd_nanos("0.00000000005"), Some(0));
        for bad in ["", ".", "-1", "1.2.3", "abc", "1e", "0x10", "1e400"] {
            assert_eq!(parse_usd_nanos(bad), None, "{bad}");
        }
        assert_eq!(usd(1_500), "0.0000015");
        assert_eq!(usd(3_000_000_000), "3");
        assert_eq!(usd(0), "0");
        assert_eq!(usd(100_000_000_001), "100.000000001");
    }

    #[test]
    fn ten_thousand_small_costs_sum_exactly() {
        // 0.1 + 0.2 in f64 is 0.30000000000000004; in nano-USD it is exact.
        let mut r = Report::new(vec![]);
        for _ in 0..10_000 {
            r.add_line(&JSON_B.replace("\"0.1\"", "\"0.000000123\""), None, None);
        }
        assert_eq!(usd(r.total.cost_nanos), "0.00123");
        let mut r = Report::new(vec![]);
        r.add_line(&JSON_B.replace("\"0.1\"", "\"0.2\""), None, None);
        r.add_line(JSON_B, None, None);
        assert_eq!(usd(r.total.cost_nanos), "0.3");
    }

    #[test]
    fn json_and_text_lines() {
        let Line::Routed(a) = parse_line(JSON_A) else { panic!("not routed") };
        assert_eq!(a.key.as_deref(), Some("finance-app"));
        assert_eq!(a.team.as_deref(), Some("finance"));
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(a.tags, vec!["prod", "eu"]);
        assert_eq!((a.prompt_tokens, a.completion_tokens, a.cost_nanos, a.request), (10, 5, 1_500, true));
        let Line::Routed(t) = parse_line(TEXT) else { panic!("text not routed") };
        assert_eq!((t.model.as_deref(), t.key.as_deref(), t.prompt_tokens, t.completion_tokens, t.cost_nanos), (Some("b"), None, 9, 8, 0));
        assert_eq!(t.time.as_deref(), Some("2026-12-01T11:00:00.000Z"));
        let Line::Routed(f) = parse_line(FAILOVER_PASS) else { panic!("failover pass") };
        assert!(!f.request, "a failed failover pass is not a request");
        assert_eq!(parse_line(r#"{"path":"/v1/models","model_group":null}"#), Line::Other);
        assert_eq!(parse_line("[x] \"GET /not-routed HTTP/1.1\" 404 - 0ms deployment=- group=- attempts=-"), Line::Other);
        assert_eq!(parse_line("   "), Line::Blank);
        for bad in ["[2026-12-02 02:36:05.898][18024][info][main] starting", "{not json", "[1,2]", r#"{"model_group":"g","cost_usd":"lots"}"#] {
            assert_eq!(parse_line(bad), Line::Unparseable, "{bad}");
        }
        // Numbers where strings were expected (a hand-made format) are read too.
        let Line::Routed(n) = parse_line(r#"{"model_group":"g","prompt_tokens":3,"cost_usd":0.25}"#) else { panic!("numbers") };
        assert_eq!((n.prompt_tokens, n.cost_nanos), (3, 250_000_000));
    }

    fn report(by: &[Dim], lines: &[&str], since: Option<&str>, until: Option<&str>) -> Report {
        let mut r = Report::new(by.to_vec());
        let (s, u) = (since.and_then(Bound::parse), until.and_then(Bound::parse));
        for l in lines {
            r.add_line(l, s.as_ref(), u.as_ref());
        }
        r
    }

    #[test]
    fn groups_combine_and_tags_fan_out() {
        let r = report(&[Dim::Team, Dim::Day], &[JSON_A, JSON_B, JSON_A, TEXT, "garbage"], None, None);
        assert_eq!(r.skipped, 1);
        assert_eq!(r.total, Totals { requests: 4, prompt_tokens: 36, completion_tokens: 21, cost_nanos: 100_003_000 });
        let keys: Vec<&Vec<String>> = r.groups.keys().collect();
        assert_eq!(keys, vec![&vec!["-".to_string(), "2026-12-01".into()], &vec!["-".into(), "2026-12-02".into()], &vec!["finance".into(), "2026-12-01".into()]]);
        let r = report(&[Dim::Tag], &[JSON_A, JSON_B], None, None);
        assert_eq!(r.groups.len(), 3, "eu, prod, -");
        assert_eq!(r.groups.get(&vec!["eu".to_string()]).map(|t| t.requests), Some(1));
        assert_eq!(r.groups.get(&vec!["-".to_string()]).map(|t| t.cost_nanos), Some(100_000_000));
    }

    #[test]
    fn since_and_until() {
        assert_eq!(report(&[], &[JSON_A, JSON_B], Some("2026-12-02"), None).total.requests, 1);
        assert_eq!(report(&[], &[JSON_A, JSON_B], None, Some("2026-12-01")).total.requests, 1);
        assert_eq!(report(&[], &[JSON_A, JSON_B], Some("2026-12-01T10:00:00.2Z"), None).total.requests, 1);
        assert_eq!(report(&[], &[JSON_A, JSON_B], Some("2026-12-01T10:00:00.123Z"), Some("2026-12-02T09:00:00Z")).total.requests, 2);
        let r = report(&[], &[JSON_A, r#"{"model_group":"g"}"#], Some("2026-01-01"), None);
        assert_eq!((r.total.requests, r.out_of_range), (1, 1));
        assert_eq!(Bound::parse("2026-1-01"), None);
        assert_eq!(Bound::parse("2026-12-01T10:00:00+01:00"), None);
    }

    #[test]
    fn renders_table_csv_json() {
        let r = report(&[Dim::Key], &[JSON_A, JSON_B], None, None);
        assert_eq!(
            r.render(Format::Table),
            "key          requests  prompt_tokens  completion_tokens   cost_usd\n\
             finance-app         1             10                  5  0.0000015\n\
             support-bot         1              7                  3        0.1\n\
             total               2             17                  8  0.1000015\n"
        );
        assert_eq!(
            r.render(Format::Csv),
            "key,requests,prompt_tokens,completion_tokens,cost_usd\nfinance-app,1,10,5,0.0000015\nsupport-bot,1,7,3,0.1\n"
        );
        let j: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap_or_default();
        assert_eq!(j["total"]["cost_usd"], "0.1000015");
        assert_eq!(j["total"]["cost_nanousd"], 100_001_500);
        assert_eq!(j["groups"][0]["key"], "finance-app");
        let none = report(&[], &[JSON_A], None, None);
        assert_eq!(none.render(Format::Csv), "requests,prompt_tokens,completion_tokens,cost_usd\n1,10,5,0.0000015\n");
    }

    #[test]
    fn arguments() {
        let a = |s: &[&str]| parse_args(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let o = a(&["x.log", "--by", "team,day", "--by=model", "--format", "csv", "-"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.by, vec![Dim::Team, Dim::Day, Dim::Model]);
        assert_eq!(o.files, vec!["x.log", "-"]);
        assert_eq!(o.format, Format::Csv);
        assert!(a(&["--by", "team"]).is_err(), "no file");
        assert!(a(&["x", "--by", "colour"]).is_err());
        assert!(a(&["x", "--format", "xml"]).is_err());
        assert!(a(&["x", "--since", "yesterday"]).is_err());
        assert!(a(&["x", "--frobnicate"]).is_err());
    }

    #[test]
    fn stdin_and_skipped_count() {
        let mut input = std::io::Cursor::new(format!("{JSON_A}\nnot a log line\n{JSON_B}\n\u{0}\u{ff}\n").into_bytes());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&["-".to_string(), "--format".into(), "json".into()], &mut input, &mut out, &mut err);
        assert_eq!(code, 0);
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(j["total"]["requests"], 2);
        assert_eq!(String::from_utf8_lossy(&err), "llm-router spend: skipped 2 of 4 lines: not access-log lines this tool reads\n");
        let code = run(&["/nonexistent/x.log".to_string()], &mut std::io::empty(), &mut out, &mut err);
        assert_eq!(code, 1);
    }
}
