//! Reading a LiteLLM/DeltaLLM config file the way LiteLLM's proxy does, into the JSON the filter
//! takes, remembering where each field was written so the loader's field paths can be shown as
//! `file:line:col`.
//!
//! LiteLLM (`ProxyConfig._get_config_from_file` / `_process_includes`): `yaml.safe_load` the file;
//! if it has `include:`, it must be a list of paths (relative to the config's directory); each
//! included file is loaded and, key by key, a list value is appended to the main config's list of
//! the same key (that is how included `model_list`s add deployments) and any other value replaces
//! the main config's; then `include` is removed. Includes of included files are not followed.

use crate::value::Value;
use crate::yaml::{self, Entry, Kind as NodeKind, Loc, Node, Schema};
pub use llm_router::config::Kind;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem to show the operator: where (file position and/or field path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub severity: Severity,
    pub loc: Option<Loc>,
    /// The field path in the loader's notation (`model_list[1].litellm_params.weight`).
    pub field: Option<String>,
    pub message: String,
    /// What a warning is about, as the loader marks it (a key without effect, a skipped
    /// deployment, anything else): `check` summarises by it without parsing messages.
    pub kind: Kind,
}

impl Diag {
    pub fn error(loc: Option<Loc>, message: impl Into<String>) -> Diag {
        Diag { severity: Severity::Error, loc, field: None, message: message.into(), kind: Kind::Problem }
    }

    pub fn warning(loc: Option<Loc>, message: impl Into<String>) -> Diag {
        Diag { severity: Severity::Warning, loc, field: None, message: message.into(), kind: Kind::Problem }
    }
}

/// The files a config was read from (index 0: the main file), as the user named them.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub names: Vec<String>,
}

impl Files {
    /// `file:line:col` (or just `file` when the position is unknown).
    pub fn at(&self, loc: Option<Loc>) -> String {
        let Some(loc) = loc else { return self.names.first().cloned().unwrap_or_default() };
        let name = self.names.get(loc.file).map(String::as_str).unwrap_or("?");
        if loc.line == 0 {
            name.to_string()
        } else {
            format!("{name}:{}:{}", loc.line, loc.col)
        }
    }

    /// One line per problem, compiler style: `config.yaml:14:7: error: model_list[1]...: reason`.
    pub fn render(&self, d: &Diag) -> String {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &d.field {
            Some(field) => format!("{}: {level}: {field}: {}", self.at(d.loc), d.message),
            None => format!("{}: {level}: {}", self.at(d.loc), d.message),
        }
    }
}

impl fmt::Display for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names.join(", "))
    }
}

/// A config read into the filter's JSON shape.
#[derive(Debug, Clone)]
pub struct Source {
    pub files: Files,
    /// The whole config after includes, as the filter will see it (`os.environ/` kept as written).
    pub value: Value,
    /// Field path (loader notation) → where it was written.
    pub index: HashMap<String, Loc>,
}

impl Source {
    /// Where the field at `path` (or its nearest written ancestor) was written.
    pub fn locate(&self, path: &str) -> Option<Loc> {
        let mut p = path;
        loop {
            if let Some(loc) = self.index.get(p) {
                return Some(*loc);
            }
            let cut = p.rfind(['.', '['])?;
            p = p.get(..cut)?;
        }
    }

    /// The JSON text handed to the filter (and embedded in generated configs).
    pub fn json(&self) -> String {
        self.value.to_json_pretty()
    }

    /// Sets `envoy_settings.failover`, which tells the filter whether Envoy carries the failover
    /// wiring: a generated bootstrap knows, so it overrides what the file says.
    pub fn declare_failover(&mut self, on: bool) {
        let Value::Map(top) = &mut self.value else { return };
        let settings = match top.iter_mut().find(|(k, _)| k == "envoy_settings") {
            Some((_, v)) => v,
            None => {
                top.push(("envoy_settings".to_string(), Value::Map(Vec::new())));
                match top.last_mut() {
                    Some((_, v)) => v,
                    None => return,
                }
            }
        };
        if !matches!(settings, Value::Map(_)) {
            *settings = Value::Map(Vec::new());
        }
        if let Value::Map(entries) = settings {
            match entries.iter_mut().find(|(k, _)| k == "failover") {
                Some((_, v)) => *v = Value::Bool(on),
                None => entries.push(("failover".to_string(), Value::Bool(on))),
            }
        }
    }
}

/// Reads `path` (YAML, or JSON when it ends in `.json`), follows `include:`, and converts.
/// Returns the source (unless the main file could not be read or parsed) and every problem.
pub fn read(path: &Path) -> (Option<Source>, Vec<Diag>) {
    let mut files = Files { names: vec![path.display().to_string()] };
    let mut diags = Vec::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diag::error(None, format!("cannot read the config: {e}")));
            return (None, diags);
        }
    };
    let root = parse_file(&text, 0, schema_for(path), &mut diags);
    if diags.iter().any(|d| d.severity == Severity::Error) && root.is_none() {
        return (None, diags);
    }
    let mut root = root.unwrap_or(Node { kind: NodeKind::Null, loc: Loc { file: 0, line: 1, col: 1 } });
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    apply_includes(&mut root, &base_dir, &mut files, &mut diags);
    let mut index = HashMap::new();
    let value = to_value(&root, "", &mut index);
    (Some(Source { files, value, index }), diags)
}

fn schema_for(path: &Path) -> Schema {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => Schema::Json,
        _ => Schema::Yaml11,
    }
}

fn parse_file(text: &str, file: usize, schema: Schema, diags: &mut Vec<Diag>) -> Option<Node> {
    if schema == Schema::Json {
        // serde_json gives the JSON verdict (and its messages); the YAML parser then supplies
        // key order, positions and duplicate keys. JSON it cannot read (e.g. `\ud83d` surrogate
        // escapes) is taken from serde_json without positions.
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                diags.push(Diag::error(Some(Loc { file, line: e.line(), col: e.column() }), format!("invalid JSON: {e}")));
                return None;
            }
        };
        let parsed = yaml::parse(text, file, Schema::Json);
        if parsed.root.is_some() || parsed.errors.is_empty() {
            diags.extend(parsed.errors.into_iter().map(|p| Diag::error(Some(p.loc), p.message)));
            diags.extend(parsed.warnings.into_iter().map(|p| Diag::warning(Some(p.loc), p.message)));
            return parsed.root;
        }
        return Some(from_json(value, Loc { file, line: 0, col: 0 }));
    }
    let parsed = yaml::parse(text, file, schema);
    diags.extend(parsed.errors.into_iter().map(|p| Diag::error(Some(p.loc), p.message)));
    diags.extend(parsed.warnings.into_iter().map(|p| Diag::warning(Some(p.loc), p.message)));
    parsed.root
}

fn from_json(v: serde_json::Value, loc: Loc) -> Node {
    let kind = match Value::from(v) {
        Value::Map(entries) => NodeKind::Map(
            entries
                .into_iter()
                .map(|(k, v)| Entry { key: k, key_loc: loc, value: from_value(v, loc) })
                .collect(),
        ),
        other => from_value(other, loc).kind,
    };
    Node { kind, loc }
}

fn from_value(v: Value, loc: Loc) -> Node {
    let kind = match v {
        Value::Null => NodeKind::Null,
        Value::Bool(b) => NodeKind::Bool(b),
        Value::Int(i) => NodeKind::Int(i),
        Value::Float(f) => NodeKind::Float(f),
        Value::Str(s) => NodeKind::Str(s),
        Value::Seq(items) => NodeKind::Seq(items.into_iter().map(|i| from_value(i, loc)).collect()),
        Value::Map(entries) => NodeKind::Map(entries.into_iter().map(|(k, v)| Entry { key: k, key_loc: loc, value: from_value(v, loc) }).collect()),
    };
    Node { kind, loc }
}

fn apply_includes(root: &mut Node, base_dir: &Path, files: &mut Files, diags: &mut Vec<Diag>) {
    let NodeKind::Map(entries) = &mut root.kind else { return };
    let Some(pos) = entries.iter().position(|e| e.key == "include") else { return };
    let include = entries.remove(pos);
    let items = match include.value.kind {
        NodeKind::Seq(items) => items,
        NodeKind::Null => Vec::new(),
        _ => {
            diags.push(Diag::error(Some(include.value.loc), "'include' must be a list of file paths (as LiteLLM requires)"));
            return;
        }
    };
    for item in items {
        let NodeKind::Str(rel) = &item.kind else {
            diags.push(Diag::error(Some(item.loc), format!("an include must be a file path, got {}", item.kind_name())));
            continue;
        };
        let path: PathBuf = base_dir.join(rel);
        let file = files.names.len();
        files.names.push(path.display().to_string());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diag::error(Some(item.loc), format!("included file {}: {e}", path.display())));
                continue;
            }
        };
        let Some(included) = parse_file(&text, file, schema_for(&path), diags) else {
            if !diags.iter().any(|d| d.loc.is_some_and(|l| l.file == file)) {
                diags.push(Diag::error(Some(item.loc), format!("included file {} is empty (LiteLLM needs a mapping)", path.display())));
            }
            continue;
        };
        let NodeKind::Map(inc_entries) = included.kind else {
            diags.push(Diag::error(Some(included.loc), format!("an included file must be a mapping, got {}", included.kind_name())));
            continue;
        };
        for e in inc_entries {
            if e.key == "include" {
                diags.push(Diag::warning(Some(e.key_loc), "`include` inside an included file is not followed (LiteLLM only reads the main file's includes)"));
                continue;
            }
            match entries.iter_mut().find(|m| m.key == e.key) {
                Some(main) => match (&mut main.value.kind, e.value.kind) {
                    (NodeKind::Seq(main_items), NodeKind::Seq(more)) => main_items.extend(more),
                    (_, NodeKind::Seq(_)) => diags.push(Diag::error(
                        Some(e.key_loc),
                        format!("`{}` is a list here but {} in {} (line {}); LiteLLM can only append a list to a list", e.key, main.value.kind_name(), files.names.first().map(String::as_str).unwrap_or("?"), main.key_loc.line),
                    )),
                    (_, kind) => {
                        diags.push(Diag::warning(
                            Some(e.key_loc),
                            format!("`{}` replaces the one at {} (an included file's value wins, except lists, which are appended)", e.key, files.at(Some(main.key_loc))),
                        ));
                        main.key_loc = e.key_loc;
                        main.value = Node { kind, loc: e.value.loc };
                    }
                },
                None => entries.push(e),
            }
        }
    }
}

/// The plain value of a parsed YAML tree (key order kept).
pub fn node_value(node: &Node) -> Value {
    to_value(node, "", &mut HashMap::new())
}

/// Converts the tree, recording each field's position under its loader path: a mapping entry at
/// its key (`router_settings.timeout` → the `timeout:` line), a list item at the item.
fn to_value(node: &Node, path: &str, index: &mut HashMap<String, Loc>) -> Value {
    match &node.kind {
        NodeKind::Null => Value::Null,
        NodeKind::Bool(b) => Value::Bool(*b),
        NodeKind::Int(i) => Value::Int(*i),
        NodeKind::Float(f) => Value::Float(*f),
        NodeKind::Str(s) => Value::Str(s.clone()),
        NodeKind::Seq(items) => Value::Seq(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let p = format!("{path}[{i}]");
                    if item.loc.line > 0 {
                        index.insert(p.clone(), item.loc);
                    }
                    to_value(item, &p, index)
                })
                .collect(),
        ),
        NodeKind::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|e| {
                    let p = if path.is_empty() { e.key.clone() } else { format!("{path}.{}", e.key) };
                    if e.key_loc.line > 0 {
                        index.insert(p.clone(), e.key_loc);
                    }
                    (e.key.clone(), to_value(&e.value, &p, index))
                })
                .collect(),
        ),
    }
}
