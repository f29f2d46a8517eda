//! `llm-router check`: validates a config with the filter's own loader and reports, as text for
//! people (problem lines, then what will serve) or as one JSON document for CI.
//!
//! Exit status, the contract CI scripts rely on (USAGE and the READMEs say the same):
//! 0 the filter accepts the config (warnings allowed), 1 it refuses it or it cannot be read,
//! 3 it loads but has warnings and `--strict` was given. Usage errors (2) are the caller's.

use crate::env::Env;
use crate::plan::{self, EnvMode, Validated};
use crate::source::{self, Diag, Files, Severity};
use crate::summary::{plural, Summary};
use crate::value::Value;
use std::io::{self, Write};
use std::path::PathBuf;

/// The filter accepts the config (there may be warnings).
pub const EXIT_OK: i32 = 0;
/// The filter refuses the config, or it cannot be read.
pub const EXIT_REFUSED: i32 = 1;
/// `--strict`: the config loads but has warnings.
pub const EXIT_WARNINGS: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub struct Options {
    pub config: PathBuf,
    pub env: Env,
    pub allow_missing_env: bool,
    /// Write the JSON the filter takes to stdout (the report then goes to stderr). Text only.
    pub print_json: bool,
    pub format: Format,
    pub strict: bool,
}

/// Everything `check` found: the problems in file order, and what loads.
struct Report {
    files: Files,
    diags: Vec<Diag>,
    /// The summary, when the filter accepts the config.
    summary: Option<Summary>,
}

impl Report {
    fn count(&self, severity: Severity) -> usize {
        self.diags.iter().filter(|d| d.severity == severity).count()
    }

    fn main(&self) -> String {
        self.files.at(None)
    }
}

pub fn run(o: &Options, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<i32> {
    let (source, mut diags) = source::read(&o.config);
    let files = source.as_ref().map(|s| s.files.clone()).unwrap_or_else(|| Files { names: vec![o.config.display().to_string()] });
    let mut validated: Option<Validated> = None;
    if let Some(src) = &source {
        let mode = if o.allow_missing_env { EnvMode::Placeholders } else { EnvMode::Strict };
        let v = plan::validate(src, &o.env, mode);
        diags.extend(v.diags.iter().cloned());
        validated = Some(v);
    }
    plan::sort(&mut diags);
    let has_errors = diags.iter().any(|d| d.severity == Severity::Error);
    let summary = match (&source, &validated) {
        (Some(src), Some(v)) if !has_errors => v.config.as_ref().map(|cfg| {
            let endpoints = plan::endpoints(cfg, src).unwrap_or_default();
            Summary::new(cfg, &endpoints, &diags, &v.env_refs)
        }),
        _ => None,
    };
    let report = Report { files, diags, summary };
    match o.format {
        Format::Json => writeln!(out, "{}", to_json(&report).to_json_pretty())?,
        Format::Text => {
            let stream: &mut dyn Write = if o.print_json { &mut *err } else { &mut *out };
            write_text(&report, o.allow_missing_env, stream)?;
            if o.print_json {
                if let Some(src) = &source {
                    writeln!(out, "{}", src.json())?;
                }
            }
        }
    }
    Ok(match (report.count(Severity::Error), report.count(Severity::Warning)) {
        (0, w) if o.strict && w > 0 => EXIT_WARNINGS,
        (0, _) => EXIT_OK,
        _ => EXIT_REFUSED,
    })
}

/// Problem lines (`file:line:col: error|warning: path: message`), the summary, and the verdict
/// line (`file: ok: N deployments in M model groups, ...` or `file: E errors, W warnings`).
fn write_text(r: &Report, allow_missing_env: bool, w: &mut dyn Write) -> io::Result<()> {
    let main = r.main();
    for d in &r.diags {
        writeln!(w, "{}", r.files.render(d))?;
    }
    if !allow_missing_env && r.diags.iter().any(|d| d.message.starts_with("environment variable ")) {
        writeln!(w, "{main}: note: set the variables (or pass --env-file FILE), or check without them using --allow-missing-env")?;
    }
    let (errors, warnings) = (r.count(Severity::Error), r.count(Severity::Warning));
    match &r.summary {
        Some(s) => {
            write!(w, "{}", s.text(&main))?;
            writeln!(
                w,
                "{main}: ok: {} in {}, {}{}",
                plural(s.deployments, "deployment", "deployments"),
                plural(s.groups.len(), "model group", "model groups"),
                plural(s.clusters.len(), "upstream cluster", "upstream clusters"),
                if warnings > 0 { format!(", {}", plural(warnings, "warning", "warnings")) } else { String::new() }
            )?;
            if !s.env.is_empty() {
                writeln!(w, "{main}: note: the filter reads these environment variables: {}", s.env.join(", "))?;
            }
        }
        None => writeln!(w, "{main}: {}, {}", plural(errors, "error", "errors"), plural(warnings, "warning", "warnings"))?,
    }
    Ok(())
}

/// `{"ok", "errors", "warnings", "summary"}`; `summary` is null when the config is refused.
fn to_json(r: &Report) -> Value {
    let diags = |severity: Severity| Value::seq(r.diags.iter().filter(|d| d.severity == severity).map(|d| diag_json(&r.files, d)));
    Value::map([
        ("ok", Value::from(r.summary.is_some())),
        ("errors", diags(Severity::Error)),
        ("warnings", diags(Severity::Warning)),
        ("summary", r.summary.as_ref().map(Summary::to_value).unwrap_or(Value::Null)),
    ])
}

/// One problem: field path (null for a YAML-level problem), message, file, line and column
/// (null when unknown; the file is then the main config). Warnings say their kind.
fn diag_json(files: &Files, d: &Diag) -> Value {
    let opt_str = |s: Option<&str>| s.map(Value::from).unwrap_or(Value::Null);
    let pos = d.loc.filter(|l| l.line > 0);
    let file = d.loc.and_then(|l| files.names.get(l.file)).or(files.names.first()).map(String::as_str);
    let mut entries = vec![
        ("path", opt_str(d.field.as_deref())),
        ("message", Value::from(d.message.as_str())),
        ("file", opt_str(file)),
        ("line", pos.map(|l| Value::from(l.line as u64)).unwrap_or(Value::Null)),
        ("column", pos.map(|l| Value::from(l.col as u64)).unwrap_or(Value::Null)),
    ];
    if d.severity == Severity::Warning {
        let kind = match d.kind {
            source::Kind::Problem => "problem",
            source::Kind::Ignored => "ignored",
            source::Kind::Skipped => "skipped",
        };
        entries.push(("kind", Value::from(kind)));
    }
    Value::map(entries)
}
