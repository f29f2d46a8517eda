//! YAML as LiteLLM reads it (PyYAML's `yaml.safe_load`), into a tree that remembers where every
//! node and key was written.
//!
//! saphyr-parser supplies events with positions; this module builds the tree and applies the
//! YAML 1.1 rules PyYAML applies and a YAML 1.2 library would not:
//! - plain scalars: `yes`/`No`/`on`/`OFF`/`True` are booleans, `0o17`-style octal is `017`,
//!   `1:30` is sexagesimal 90, `1_000` is 1000, `1e5` (no dot) is a string, `.5` a float;
//! - unquoted timestamps (`api_version: 2024-02-01`) become dates in PyYAML; JSON has no dates,
//!   so they are kept as the text the user wrote;
//! - `<<:` merge keys (a mapping, or a list of mappings where earlier ones win; explicit keys win
//!   over merged ones; keys in PyYAML's order: merged first, a list's last mapping's first),
//!   anchors and aliases;
//! - one document only (`safe_load` refuses a second one); unknown tags are refused;
//! - tabs only inside quoted and block scalars and comments: PyYAML separates tokens with spaces
//!   only, so `timeout: 30<TAB>` does not load in LiteLLM; it is an error here too;
//! - no indentation inside flow collections: PyYAML reads `fallbacks: [` / `{...}` / `]` with the
//!   lines (or the closing bracket) at the key's column or less; saphyr-parser (YAML 1.2) does
//!   not, so those lines are re-read indented (see [`parse`]); the same for the continuation
//!   lines of a quoted scalar (`b: "x` / `y"`);
//! - `! 12` (the non-specific tag) resolves as a plain scalar, quoted or not (PyYAML: 12); an
//!   unquoted `=` value (YAML 1.1's value key) is refused, a `=` key is the text `=`.
//!
//! Kept different on purpose (tests/e2e/test_yaml_pyyaml.py says which): `!!binary` stays the
//! base64 text (PyYAML gives bytes, which have no JSON form); keys `1` and `true` in one mapping
//! stay two keys (in Python `True == 1`, so PyYAML keeps one); a flow mapping's implicit key
//! spanning lines (`{b` / `: 1}`) loads here, while PyYAML refuses it.
//!
//! A key written twice in one mapping (at any depth) is loaded as PyYAML loads it — the last value
//! wins, at the first key's place — and reported as a warning naming both lines: PyYAML keeps the
//! last one silently, which is how deployments get lost.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput, Tag};
use std::collections::HashMap;

/// A position in one of the files of a configuration (`file` indexes the caller's file list).
/// `line` and `col` are 1-based; `line == 0` means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub file: usize,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub value: Node,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// A short description of the node's type for messages ("a list", "a string", ...).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A problem found while reading, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub loc: Loc,
    pub message: String,
}

/// How plain (unquoted) scalars are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// PyYAML's YAML 1.1 resolver (LiteLLM reads its config with `yaml.safe_load`).
    Yaml11,
    /// JSON: only `true`, `false`, `null` and JSON numbers are not strings.
    Json,
}

/// The result of parsing one file. `root` is `None` for an empty document (PyYAML: `None`) or
/// when a syntax error stopped parsing (then `errors` says where).
#[derive(Debug, Default)]
pub struct Parsed {
    pub root: Option<Node>,
    pub errors: Vec<Problem>,
    /// Loaded as PyYAML loads it, but worth telling (duplicate keys).
    pub warnings: Vec<Problem>,
}

/// The type of a plain scalar, by the YAML 1.1 rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

const MAX_DEPTH: usize = 256;
/// Bound on nodes after alias expansion ("billion laughs").
const MAX_NODES: usize = 2_000_000;

pub fn parse(text: &str, file: usize, schema: Schema) -> Parsed {
    let first = attempt(text, file, schema, &HashMap::new());
    // PyYAML ignores indentation inside flow collections (`fallbacks: [` ... `  ]` with the `]`
    // at the key's column); saphyr-parser, following YAML 1.2, refuses lines there that are not
    // indented past the enclosing block. Such lines are re-read indented past the outermost open
    // bracket — which changes nothing else, as leading spaces inside flow collections (and in
    // their quoted scalars' continuation lines) are not content — and positions are mapped back.
    // The re-read is kept only when every line it indented lies inside a flow collection.
    let mut blocked = first.flow_indent_error;
    let mut shift: HashMap<usize, usize> = HashMap::new();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let mut last: Option<Attempt> = None;
    for _ in 0..256 {
        let Some((open_line, open_col, error_line)) = blocked else { break };
        let pad = open_col + 1;
        let mut changed = false;
        for line in open_line + 1..=error_line {
            if shift.contains_key(&line) {
                continue;
            }
            if let Some(l) = lines.get_mut(line - 1) {
                l.insert_str(0, &" ".repeat(pad));
                shift.insert(line, pad);
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let next = attempt(&lines.join("\n"), file, schema, &shift);
        blocked = next.flow_indent_error;
        last = Some(next);
    }
    // Every indented line must lie in a flow collection (closed, or still open at the error), or
    // be one where indentation means nothing: blank, a comment, or one that starts with a closing
    // bracket (a collection's end event can carry the position of its last item).
    let neutral = |l: usize| {
        let t = text.split('\n').nth(l - 1).unwrap_or("").trim_start();
        t.is_empty() || t.starts_with(['#', ']', '}'])
    };
    let in_flow = |a: &Attempt, l: usize| {
        neutral(l) || a.flow_lines.iter().any(|&(o, c)| o < l && l <= c) || a.open_flows.iter().any(|&(o, _)| o < l)
    };
    match last {
        Some(next) if shift.keys().all(|&l| in_flow(&next, l)) => next.parsed,
        _ => first.parsed,
    }
}

/// The line (1-based) of the quote closing the quoted scalar that opens at `line`/`col` (0-based).
fn closing_quote(lines: &[&str], line: usize, col: usize) -> Option<usize> {
    let first = lines.get(line.checked_sub(1)?)?;
    let quote = first.chars().nth(col)?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let mut escaped = false;
    let mut pending_single = false;
    for (n, text) in lines.iter().enumerate().skip(line - 1) {
        let skip = if n + 1 == line { col + 1 } else { 0 };
        for c in text.chars().skip(skip).chain(std::iter::once('\n')) {
            if quote == '"' {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => return Some(n + 1),
                    _ => {}
                }
            } else if pending_single {
                if c != '\'' {
                    return Some(n + 1);
                }
                pending_single = false;
            } else if c == '\'' {
                pending_single = true;
            }
        }
    }
    None
}

/// The line and column of the bracket still open at the end of line `before` (1-based), looking
/// back from it: a guess (brackets in quotes count too) that [`parse`] verifies.
fn open_bracket(lines: &[&str], before: usize) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for line in (1..=before).rev() {
        let text = lines.get(line - 1)?;
        let chars: Vec<char> = text.chars().collect();
        for (col, c) in chars.iter().enumerate().rev() {
            match c {
                ']' | '}' => depth += 1,
                '[' | '{' if depth == 0 => return Some((line, col)),
                '[' | '{' => depth -= 1,
                _ => {}
            }
        }
    }
    None
}

struct Attempt {
    parsed: Parsed,
    /// The parse stopped at an indentation error inside a flow collection: (line, column) of the
    /// outermost open bracket (1-based line, 0-based column) and the error's line.
    flow_indent_error: Option<(usize, usize, usize)>,
    /// The flow collections read: (line of the opening bracket, line of the closing one).
    flow_lines: Vec<(usize, usize)>,
    /// The flow collections open when a syntax error stopped the parse.
    open_flows: Vec<(usize, usize)>,
}

fn attempt(text: &str, file: usize, schema: Schema, shift: &HashMap<usize, usize>) -> Attempt {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        lines: text.split('\n').collect(),
        shift: shift.clone(),
        error_line: 0,
        error_col: 0,
        file,
        schema,
        anchors: HashMap::new(),
        nodes: 0,
        flows: Vec::new(),
        flow_lines: Vec::new(),
        verbatim: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let mut flow_indent_error = None;
    let root = match b.document() {
        Ok(root) => {
            if schema == Schema::Yaml11 {
                if let Some(p) = b.tab(text) {
                    b.errors.push(p);
                }
            }
            root
        }
        Err(p) => {
            let raw_line = b.error_line;
            if p.message == "invalid YAML: invalid indentation in quoted scalar" {
                // PyYAML does not look at the indentation of a quoted scalar's continuation lines
                // (`b: "x` / `y"`): re-read them indented past the opening quote.
                let col = b.error_col;
                if let Some(end) = closing_quote(&b.lines, raw_line, col) {
                    if end > raw_line {
                        flow_indent_error = Some((raw_line, col, end));
                    }
                }
            } else if p.message.starts_with("invalid YAML: invalid indentation") {
                // The bracket still open before the error line, from the text: the parser's own
                // record may lag (the scanner reads a flow collection that may be a key to its
                // end before the parser sees its bracket). [`parse`] verifies the re-read.
                let open = open_bracket(&b.lines, raw_line.saturating_sub(1)).or_else(|| b.flows.first().copied());
                if let Some((line, col)) = open {
                    if raw_line > line {
                        flow_indent_error = Some((line, col, raw_line));
                    }
                }
            }
            b.errors.push(p);
            None
        }
    };
    Attempt { parsed: Parsed { root, errors: b.errors, warnings: b.warnings }, flow_indent_error, flow_lines: b.flow_lines, open_flows: b.flows }
}

struct Builder<'a> {
    parser: Parser<'a, StrInput<'a>>,
    lines: Vec<&'a str>,
    /// Spaces added in front of a line (1-based) to read it (see [`parse`]).
    shift: HashMap<usize, usize>,
    /// The (unmapped) line of the syntax error that stopped the parse.
    error_line: usize,
    error_col: usize,
    /// The open flow collections: (line, column) of their brackets.
    flows: Vec<(usize, usize)>,
    flow_lines: Vec<(usize, usize)>,
    /// Where quoted and block scalars were written (character indices, end exclusive).
    verbatim: Vec<(usize, usize)>,
    file: usize,
    schema: Schema,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl<'a> Builder<'a> {
    fn at(&self, line: usize, col: usize) -> Loc {
        let shift = self.shift.get(&line).copied().unwrap_or(0);
        Loc { file: self.file, line, col: col.saturating_sub(shift) + 1 }
    }

    fn loc(&self, span: &Span) -> Loc {
        self.at(span.start.line(), span.start.col())
    }

    fn scan_error(&mut self, e: &ScanError) -> Problem {
        let m = e.marker();
        self.error_line = m.line();
        self.error_col = m.col();
        Problem {
            loc: self.at(m.line(), m.col()),
            message: format!("invalid YAML: {}", e.info()),
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), Problem> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(self.scan_error(&e)),
            None => Err(Problem { loc: Loc { file: self.file, line: 0, col: 0 }, message: "invalid YAML: unexpected end of input".into() }),
        }
    }

    fn document(&mut self) -> Result<Option<Node>, Problem> {
        let mut root = None;
        let mut documents = 0;
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(Problem {
                            loc: self.loc(&span),
                            message: "expected a single document in the stream, found a second one (LiteLLM reads one)".into(),
                        });
                    }
                }
                other => {
                    let node = self.node(other, span, 0)?;
                    // `safe_load` of an empty document is None, like an absent config.
                    root = Some(node);
                }
            }
        }
    }

    fn count(&mut self, n: usize, span: &Span) -> Result<(), Problem> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Problem { loc: self.loc(span), message: format!("document too large: more than {MAX_NODES} nodes after expanding aliases") });
        }
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem { loc: self.loc(&span), message: format!("nesting deeper than {MAX_DEPTH} levels") });
        }
        let loc = self.loc(&span);
        let nodes_before = self.nodes;
        let (node, anchor) = match ev {
            Event::Alias(id) => {
                let Some((node, size)) = self.anchors.get(&id).cloned() else {
                    return Err(Problem { loc, message: "invalid YAML: alias to an unknown anchor".into() });
                };
                self.count(size, &span)?;
                return Ok(node);
            }
            Event::Scalar(value, style, anchor, tag) => {
                self.count(1, &span)?;
                if style != ScalarStyle::Plain {
                    self.verbatim.push((span.start.index(), span.end.index()));
                    if matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted) {
                        // Its continuation lines: where indentation means nothing (see [`parse`]).
                        self.flow_lines.push((span.start.line(), span.end.line()));
                    }
                }
                let kind = self.scalar(&value, style, tag.as_deref(), loc);
                (Node { kind, loc }, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.count(1, &span)?;
                self.collection_tag(tag.as_deref(), "seq", loc);
                let flow = self.open_flow(&span);
                let mut items = Vec::new();
                let end = loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break span;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                };
                self.close_flow(flow, &end);
                (Node { kind: Kind::Seq(items), loc }, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                self.count(1, &span)?;
                self.collection_tag(tag.as_deref(), "map", loc);
                let flow = self.open_flow(&span);
                let (kind, end) = self.mapping(depth)?;
                self.close_flow(flow, &end);
                (Node { kind, loc }, anchor)
            }
            _ => return Err(Problem { loc, message: "invalid YAML: unexpected event".into() }),
        };
        if anchor > 0 {
            let size = self.nodes.saturating_sub(nodes_before);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        Ok(node)
    }

    /// The first tab PyYAML refuses: it separates tokens with spaces only ("found character '\\t'
    /// that cannot start any token"), so a tab is only allowed inside quoted and block scalars
    /// and comments (saphyr-parser, YAML 1.2, also takes tabs as separating white space).
    fn tab(&self, text: &str) -> Option<Problem> {
        let (mut line, mut col) = (1, 0);
        let chars: Vec<char> = text.chars().collect();
        // A quoted scalar's span may take in the white space after its closing quote.
        let mut verbatim: Vec<(usize, usize)> = self
            .verbatim
            .iter()
            .map(|&(start, end)| match chars.get(start) {
                Some(&q @ ('"' | '\'')) => {
                    let last = chars.get(start + 1..end.min(chars.len())).and_then(|inner| inner.iter().rposition(|&c| c == q));
                    (start, last.map_or(end, |p| start + 1 + p + 1))
                }
                _ => (start, end),
            })
            .collect();
        verbatim.sort_unstable();
        let mut spans = verbatim.iter().peekable();
        let (mut comment, mut prev_blank) = (false, true);
        for (i, &c) in chars.iter().enumerate() {
            while spans.peek().is_some_and(|&&(_, end)| end <= i) {
                spans.next();
            }
            let inside = spans.peek().is_some_and(|&&(start, end)| start <= i && i < end);
            if c == '\n' {
                (line, col, comment, prev_blank) = (line + 1, 0, false, true);
                continue;
            }
            if !inside && !comment {
                if c == '#' && prev_blank {
                    comment = true;
                } else if c == '\t' {
                    return Some(Problem {
                        loc: self.at(line, col),
                        message: "invalid YAML: a tab character outside quotes, block scalars and comments, which LiteLLM's PyYAML refuses (\"found character '\\t' that cannot start any token\"); use spaces".into(),
                    });
                }
            }
            prev_blank = c == ' ' || c == '\t' || c == '\r';
            col += 1;
        }
        None
    }

    /// Notes a flow collection (its event starts at its bracket) as open; true when it is one.
    fn open_flow(&mut self, span: &Span) -> bool {
        let (line, col) = (span.start.line(), span.start.col());
        let bracket = line.checked_sub(1).and_then(|l| self.lines.get(l)).and_then(|l| l.chars().nth(col));
        let flow = matches!(bracket, Some('[' | '{'));
        if flow {
            self.flows.push((line, col));
        }
        flow
    }

    fn collection_tag(&mut self, tag: Option<&Tag>, expected: &str, loc: Loc) {
        if let Some(tag) = tag {
            let core = tag.is_yaml_core_schema() && tag.suffix == expected;
            let non_specific = tag.handle.is_empty() && tag.suffix == "!";
            if !core && !non_specific {
                self.errors.push(Problem { loc, message: format!("unsupported tag `{}` (yaml.safe_load cannot read it)", show_tag(tag)) });
            }
        }
    }

    fn close_flow(&mut self, flow: bool, end: &Span) {
        if flow {
            if let Some((line, _)) = self.flows.pop() {
                self.flow_lines.push((line, end.start.line()));
            }
        }
    }

    fn mapping(&mut self, depth: usize) -> Result<(Kind, Span), Problem> {
        let mut explicit: Vec<Entry> = Vec::new();
        let mut merged: Vec<Entry> = Vec::new();
        let end = loop {
            let (ev, span) = self.next()?;
            if matches!(ev, Event::MappingEnd) {
                break span;
            }
            let is_merge_key = matches!(&ev, Event::Scalar(v, ScalarStyle::Plain, _, tag)
                if v.as_ref() == "<<" && tag.as_deref().is_none_or(|t| t.is_yaml_core_schema() && t.suffix == "merge"));
            // PyYAML: a plain `=` (YAML 1.1's value key) is the text `=` as a key, an error as a value.
            let key = if matches!(&ev, Event::Scalar(v, ScalarStyle::Plain, _, None) if v.as_ref() == "=") {
                Node { kind: Kind::Str("=".into()), loc: self.loc(&span) }
            } else {
                self.node(ev, span, depth + 1)?
            };
            let (vev, vspan) = self.next()?;
            let value = self.node(vev, vspan, depth + 1)?;
            if is_merge_key {
                let contribution = self.merge_source(&value);
                for e in contribution {
                    match merged.iter_mut().find(|m| m.key == e.key) {
                        // A later `<<` wins over an earlier one (PyYAML applies them in order).
                        Some(m) => *m = e,
                        None => merged.push(e),
                    }
                }
                continue;
            }
            let Some(name) = key_string(&key) else {
                self.errors.push(Problem { loc: key.loc, message: format!("a mapping key must be a plain value, not {}", key.kind_name()) });
                continue;
            };
            let entry = Entry { key: name, key_loc: key.loc, value };
            match explicit.iter_mut().find(|e| e.key == entry.key) {
                Some(first) => {
                    self.warnings.push(Problem {
                        loc: entry.key_loc,
                        message: format!(
                            "duplicate key `{}` (first at line {}, again at line {}); LiteLLM keeps only this last one",
                            entry.key, first.key_loc.line, entry.key_loc.line
                        ),
                    });
                    first.value = entry.value;
                }
                None => explicit.push(entry),
            }
        };
        if merged.is_empty() {
            return Ok((Kind::Map(explicit), end));
        }
        for e in explicit {
            match merged.iter_mut().find(|m| m.key == e.key) {
                Some(m) => *m = e,
                None => merged.push(e),
            }
        }
        Ok((Kind::Map(merged), end))
    }

    /// The entries a `<<:` value contributes: a mapping's, or a list of mappings' (earlier wins).
    fn merge_source(&mut self, value: &Node) -> Vec<Entry> {
        match &value.kind {
            Kind::Map(entries) => entries.clone(),
            Kind::Seq(items) => {
                // PyYAML takes the mappings last to first, a later one's value replacing an
                // earlier one's at its place: the first mapping's values win, in the key order
                // of the last.
                let mut out: Vec<Entry> = Vec::new();
                for item in items.iter().rev() {
                    match &item.kind {
                        Kind::Map(entries) => {
                            for e in entries {
                                match out.iter_mut().find(|o| o.key == e.key) {
                                    Some(o) => o.value = e.value.clone(),
                                    None => out.push(e.clone()),
                                }
                            }
                        }
                        _ => self.errors.push(Problem {
                            loc: item.loc,
                            message: format!("`<<` merges mappings, but this list item is {}", item.kind_name()),
                        }),
                    }
                }
                out
            }
            _ => {
                self.errors.push(Problem {
                    loc: value.loc,
                    message: format!("`<<` needs a mapping or a list of mappings (e.g. `<<: *defaults`), got {}", value.kind_name()),
                });
                Vec::new()
            }
        }
    }

    fn scalar(&mut self, value: &str, style: ScalarStyle, tag: Option<&Tag>, loc: Loc) -> Kind {
        let text = || Kind::Str(value.to_string());
        let resolved = |r: Result<Scalar, String>, errors: &mut Vec<Problem>| match r {
            Ok(Scalar::Null) => Kind::Null,
            Ok(Scalar::Bool(b)) => Kind::Bool(b),
            Ok(Scalar::Int(i)) => Kind::Int(i),
            Ok(Scalar::Float(f)) => Kind::Float(f),
            Ok(Scalar::Str) => Kind::Str(value.to_string()),
            Err(message) => {
                errors.push(Problem { loc, message });
                Kind::Str(value.to_string())
            }
        };
        match tag {
            None if style == ScalarStyle::Plain && value == "=" && self.schema == Schema::Yaml11 => {
                self.errors.push(Problem { loc, message: "`=` unquoted is YAML 1.1's value key, which yaml.safe_load cannot construct (quote it)".into() });
                text()
            }
            None if style == ScalarStyle::Plain => match self.schema {
                Schema::Yaml11 => resolved(resolve_plain(value), &mut self.errors),
                Schema::Json => resolved(Ok(resolve_json(value)), &mut self.errors),
            },
            None => text(),
            // PyYAML resolves a `!`-tagged scalar, quoted or not, as a plain one (`! "12"` is 12).
            Some(t) if t.handle.is_empty() && t.suffix == "!" => match self.schema {
                Schema::Yaml11 => resolved(resolve_plain(value), &mut self.errors),
                Schema::Json => text(),
            },
            Some(t) if t.is_yaml_core_schema() => {
                let want = |ok: fn(&Scalar) -> bool, r: Result<Scalar, String>| match r {
                    Ok(s) if ok(&s) => Ok(s),
                    Ok(_) | Err(_) => Err(format!("`{value}` is not a valid !!{}", t.suffix)),
                };
                match t.suffix.as_str() {
                    "str" | "binary" | "timestamp" => text(),
                    "null" => Kind::Null,
                    "bool" => resolved(want(|s| matches!(s, Scalar::Bool(_)), resolve_plain(value)), &mut self.errors),
                    "int" => resolved(want(|s| matches!(s, Scalar::Int(_)), resolve_plain(value)), &mut self.errors),
                    "float" => {
                        let r = match resolve_plain(value) {
                            Ok(Scalar::Int(i)) => Ok(Scalar::Float(i as f64)),
                            other => other,
                        };
                        resolved(want(|s| matches!(s, Scalar::Float(_)), r), &mut self.errors)
                    }
                    _ => {
                        self.errors.push(Problem { loc, message: format!("unsupported tag `{}` (yaml.safe_load cannot read it)", show_tag(t)) });
                        text()
                    }
                }
            }
            Some(t) => {
                self.errors.push(Problem { loc, message: format!("unsupported tag `{}` (yaml.safe_load cannot read it)", show_tag(t)) });
                text()
            }
        }
    }
}

fn show_tag(t: &Tag) -> String {
    if t.is_yaml_core_schema() {
        format!("!!{}", t.suffix)
    } else {
        format!("{}{}", t.handle, t.suffix)
    }
}

/// A key as JSON spells it (Python's `json.dumps` turns `True`/`1`/`None` keys into strings).
fn key_string(key: &Node) -> Option<String> {
    Some(match &key.kind {
        Kind::Str(s) => s.clone(),
        Kind::Null => "null".into(),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => crate::value::format_float(*f),
        Kind::Seq(_) | Kind::Map(_) => return None,
    })
}

fn resolve_json(s: &str) -> Scalar {
    match s {
        "null" => Scalar::Null,
        "true" => Scalar::Bool(true),
        "false" => Scalar::Bool(false),
        _ => {
            let number = s.strip_prefix('-').unwrap_or(s);
            let json_number = number.starts_with(|c: char| c.is_ascii_digit())
                && number.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c));
            if json_number {
                if let Ok(i) = s.parse::<i128>() {
                    return Scalar::Int(i);
                }
                if let Ok(f) = s.parse::<f64>() {
                    if f.is_finite() {
                        return Scalar::Float(f);
                    }
                }
            }
            Scalar::Str
        }
    }
}

/// Types a plain scalar as PyYAML's resolver does (YAML 1.1). `Err` for values that are numbers
/// in YAML 1.1 but have no JSON form (`.inf`, `.nan`) or that PyYAML itself fails to construct.
pub fn resolve_plain(s: &str) -> Result<Scalar, String> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Scalar::Null),
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => return Ok(Scalar::Bool(true)),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => return Ok(Scalar::Bool(false)),
        _ => {}
    }
    if is_int_11(s) {
        return construct_int(s).map(Scalar::Int).ok_or_else(|| format!("`{s}` is an integer YAML 1.1 cannot construct"));
    }
    if is_float_11(s) {
        return match construct_float(s) {
            Some(f) if f.is_finite() => Ok(Scalar::Float(f)),
            _ => Err(format!("`{s}` is a YAML 1.1 float with no JSON form (quote it if it is meant as text)")),
        };
    }
    Ok(Scalar::Str)
}

fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..).unwrap_or("")),
        Some(b'+') => (false, s.get(1..).unwrap_or("")),
        _ => (false, s),
    }
}

fn all(s: &str, f: impl Fn(char) -> bool) -> bool {
    s.chars().all(f)
}

/// `[0-5]?[0-9]` groups after `:` (sexagesimal).
fn sexagesimal_tail(parts: &[&str]) -> bool {
    !parts.is_empty()
        && parts.iter().all(|p| {
            let b = p.as_bytes();
            match b {
                [d] => d.is_ascii_digit(),
                [a, d] => (b'0'..=b'5').contains(a) && d.is_ascii_digit(),
                _ => false,
            }
        })
}

/// PyYAML's int pattern:
/// `[-+]?0b[0-1_]+ | [-+]?0[0-7_]+ | [-+]?(?:0|[1-9][0-9_]*) | [-+]?0x[0-9a-fA-F_]+ | [-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+`
fn is_int_11(s: &str) -> bool {
    let (_, body) = split_sign(s);
    if let Some(bin) = body.strip_prefix("0b") {
        return !bin.is_empty() && all(bin, |c| c == '0' || c == '1' || c == '_');
    }
    if let Some(hex) = body.strip_prefix("0x") {
        return !hex.is_empty() && all(hex, |c| c.is_ascii_hexdigit() || c == '_');
    }
    if body == "0" {
        return true;
    }
    if let Some(oct) = body.strip_prefix('0') {
        return !oct.is_empty() && all(oct, |c| ('0'..='7').contains(&c) || c == '_');
    }
    let mut parts = body.split(':');
    let head = parts.next().unwrap_or("");
    let head_ok = head.starts_with(|c: char| ('1'..='9').contains(&c)) && all(head, |c| c.is_ascii_digit() || c == '_');
    let tail: Vec<&str> = parts.collect();
    head_ok && (tail.is_empty() || sexagesimal_tail(&tail))
}

fn construct_int(s: &str) -> Option<i128> {
    let cleaned: String = s.chars().filter(|&c| c != '_').collect();
    let (negative, body) = split_sign(&cleaned);
    let magnitude = if body == "0" {
        0
    } else if let Some(bin) = body.strip_prefix("0b") {
        i128::from_str_radix(bin, 2).ok()?
    } else if let Some(hex) = body.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = body.strip_prefix('0') {
        i128::from_str_radix(oct, 8).ok()?
    } else if body.contains(':') {
        let mut v: i128 = 0;
        for part in body.split(':') {
            v = v.checked_mul(60)?.checked_add(part.parse::<i128>().ok()?)?;
        }
        v
    } else {
        body.parse::<i128>().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// PyYAML's float pattern:
/// `[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)? | \.[0-9_]+(?:[eE][-+][0-9]+)?
///  | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]* | [-+]?\.(?:inf|Inf|INF) | \.(?:nan|NaN|NAN)`
fn is_float_11(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (_, body) = split_sign(s);
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let exponent_ok = |e: &str| {
        let e = e.strip_prefix(['-', '+']);
        matches!(e, Some(d) if !d.is_empty() && all(d, |c| c.is_ascii_digit()))
    };
    let digits_ = |d: &str| all(d, |c| c.is_ascii_digit() || c == '_');
    // `\.[0-9_]+(exp)?` takes no sign.
    if let Some(frac) = s.strip_prefix('.') {
        let (frac, exp) = match frac.find(['e', 'E']) {
            Some(i) => (frac.get(..i).unwrap_or(""), frac.get(i + 1..)),
            None => (frac, None),
        };
        return !frac.is_empty() && digits_(frac) && exp.is_none_or(exponent_ok);
    }
    let Some((int_part, rest)) = body.split_once('.') else { return false };
    if !int_part.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    if int_part.contains(':') {
        // Sexagesimal float: `[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*`
        let mut parts = int_part.split(':');
        let head = parts.next().unwrap_or("");
        let tail: Vec<&str> = parts.collect();
        return digits_(head) && sexagesimal_tail(&tail) && digits_(rest);
    }
    if !digits_(int_part) {
        return false;
    }
    match rest.find(['e', 'E']) {
        Some(i) => digits_(rest.get(..i).unwrap_or("")) && rest.get(i + 1..).is_some_and(exponent_ok),
        None => digits_(rest),
    }
}

fn construct_float(s: &str) -> Option<f64> {
    let cleaned: String = s.chars().filter(|&c| c != '_').collect::<String>().to_ascii_lowercase();
    let (negative, body) = split_sign(&cleaned);
    let sign = if negative { -1.0 } else { 1.0 };
    if body == ".inf" {
        return Some(sign * f64::INFINITY);
    }
    if body == ".nan" {
        return Some(f64::NAN);
    }
    if body.contains(':') {
        let mut v = 0.0;
        for part in body.split(':') {
            v = v * 60.0 + part.parse::<f64>().ok()?;
        }
        return Some(sign * v);
    }
    body.parse::<f64>().ok().map(|f| sign * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_plain_scalars() {
        let cases: &[(&str, Scalar)] = &[
            ("True", Scalar::Bool(true)),
            ("yes", Scalar::Bool(true)),
            ("OFF", Scalar::Bool(false)),
            ("~", Scalar::Null),
            ("", Scalar::Null),
            ("0", Scalar::Int(0)),
            ("017", Scalar::Int(15)),
            ("0x1F", Scalar::Int(31)),
            ("0b101", Scalar::Int(5)),
            ("1_000", Scalar::Int(1000)),
            ("-1:30", Scalar::Int(-90)),
            ("1.5", Scalar::Float(1.5)),
            ("1.", Scalar::Float(1.0)),
            (".5", Scalar::Float(0.5)),
            ("1.0e+3", Scalar::Float(1000.0)),
            ("1:30.5", Scalar::Float(90.5)),
            ("1e5", Scalar::Str),
            ("1.0e5", Scalar::Str),
            ("09", Scalar::Str),
            ("2024-02-01", Scalar::Str),
            ("y", Scalar::Str),
            ("1.2.3", Scalar::Str),
            ("gpt-4o", Scalar::Str),
        ];
        for (s, want) in cases {
            assert_eq!(resolve_plain(s).as_ref(), Ok(want), "{s}");
        }
        assert!(resolve_plain(".inf").is_err());
        assert!(resolve_plain(".NaN").is_err());
    }

    fn root(text: &str) -> (Option<Node>, Vec<Problem>) {
        let p = parse(text, 0, Schema::Yaml11);
        (p.root, p.errors)
    }

    #[test]
    fn merge_keys_and_anchors() {
        let (r, errors) = root("base: &b {x: 1, y: 2}\nother: &o {y: 3, z: 4}\nm:\n  <<: [*b, *o]\n  x: 9\n");
        assert!(errors.is_empty(), "{errors:?}");
        let m = r.as_ref().and_then(|r| r.get("m"));
        let Some(Node { kind: Kind::Map(entries), .. }) = m else { panic!("{m:?}") };
        let got: Vec<(String, Kind)> = entries.iter().map(|e| (e.key.clone(), e.value.kind.clone())).collect();
        // PyYAML's order: the last merged mapping's keys first, then the first's; explicit keys win.
        assert_eq!(got, vec![("y".into(), Kind::Int(2)), ("z".into(), Kind::Int(4)), ("x".into(), Kind::Int(9))]);
    }

    #[test]
    fn duplicate_keys_are_reported_with_lines() {
        // PyYAML: the last value wins, at the first key's place; we load the same and warn.
        let p = parse("a: 1\nb: 2\na: 3\nc:\n  d: 1\n  d: [x]\n", 0, Schema::Yaml11);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let lines: Vec<(usize, &str)> = p.warnings.iter().map(|w| (w.loc.line, w.message.as_str())).collect();
        assert_eq!(
            lines,
            [
                (3, "duplicate key `a` (first at line 1, again at line 3); LiteLLM keeps only this last one"),
                (6, "duplicate key `d` (first at line 5, again at line 6); LiteLLM keeps only this last one")
            ]
        );
        let r = p.root.as_ref();
        let Some(Node { kind: Kind::Map(top), .. }) = r else { panic!("{r:?}") };
        assert_eq!(top.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(r.and_then(|r| r.get("a").map(|n| n.kind.clone())), Some(Kind::Int(3)));
        let d = r.and_then(|r| r.get("c")).and_then(|c| c.get("d")).map(|n| n.kind.clone());
        assert!(matches!(d, Some(Kind::Seq(_))), "{d:?}");
    }

    #[test]
    fn flow_collections_ignore_indentation_as_pyyaml_does() {
        // The closing bracket at the key's column, at column 0, items at the key's column.
        for text in [
            "router_settings:\n  fallbacks: [\n    {\"a\": [\"b\"]}\n  ]\n",
            "router_settings:\n  fallbacks: [\n    {\"a\": [\"b\"]}\n]\n",
            "router_settings:\n  fallbacks: [\n  {\"a\": [\"b\"]}, # c\n  ]\n",
        ] {
            let (r, errors) = root(text);
            assert!(errors.is_empty(), "{text:?}: {errors:?}");
            let f = r.as_ref().and_then(|r| r.get("router_settings")).and_then(|s| s.get("fallbacks"));
            let Some(Node { kind: Kind::Seq(items), .. }) = f else { panic!("{text:?}: {f:?}") };
            assert_eq!(items.len(), 1);
            // Positions are those of the file as written.
            assert_eq!((items[0].loc.line, items[0].loc.col), (3, if text.contains("\n  {") { 3 } else { 5 }), "{text:?}");
        }
        // The scanner reads a flow collection that may be a key to its end before the parser sees
        // its bracket: the bracket is found in the text, and the re-read checked.
        let (r, errors) = root("- {\n  \"k\": [\"yes\"]\n}\n- [\n[],\n ]\n");
        assert!(errors.is_empty(), "{errors:?}");
        let Some(Node { kind: Kind::Seq(items), .. }) = &r else { panic!("{r:?}") };
        assert_eq!(items.len(), 2);
        // A flow collection after another on an earlier line: the bracket is the one still open.
        let (r, errors) = root("x:\n    m:\n    - {a: {b: 0}, c: 1}\n    - {\n    t: 1\n      }\n");
        assert!(errors.is_empty(), "{errors:?}");
        let m = r.as_ref().and_then(|r| r.get("x")).and_then(|x| x.get("m"));
        let Some(Node { kind: Kind::Seq(items), .. }) = m else { panic!("{m:?}") };
        assert_eq!(items.get(1).and_then(|i| i.get("t")).map(|t| t.kind.clone()), Some(Kind::Int(1)));
        // A comment after the last item, the closing bracket at column 0.
        let (r, errors) = root("a: {\n  's': [[]],  # note\n}\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(r.as_ref().and_then(|r| r.get("a")).and_then(|a| a.get("s")).is_some(), "{r:?}");
        // A block line is never re-read indented: `b:` stays an error (PyYAML's too).
        let (r, errors) = root("a: [1]\nb: {\nc: 1\n");
        assert!(r.is_none() && !errors.is_empty());
        // A real error after such a line keeps its own position.
        let (r, errors) = root("a:\n  b: [\n  1,\n  ]\n c: 2\n");
        assert!(r.is_none());
        assert_eq!(errors[0].loc.line, 5, "{errors:?}");
    }

    #[test]
    fn tabs_between_tokens_are_refused_as_pyyaml_refuses_them() {
        for (text, col) in [("a: 1\t\n", 5), ("a: x\t# c\n", 5), ("a: [1,\t2]\n", 7), ("a: \"x\"\t\n", 7)] {
            let (_, errors) = root(text);
            assert_eq!(errors.len(), 1, "{text:?}: {errors:?}");
            assert_eq!((errors[0].loc.line, errors[0].loc.col), (1, col), "{text:?}");
            assert!(errors[0].message.contains("tab"), "{text:?}: {errors:?}");
        }
        // saphyr-parser refuses this one itself (its own message).
        assert!(root("a:\t1\n").0.is_none());
        // Inside quotes, block scalars and comments a tab is content (or nothing).
        let (r, errors) = root("a: \"x\ty\"\nb: |\n  \tz\nc: 1 # \tnote\n'd\te': 'f\tg'\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.as_ref().and_then(|r| r.get("b")).map(|n| n.kind.clone()), Some(Kind::Str("\tz\n".into())));
        // JSON takes tabs as white space.
        assert!(parse("{\"a\": 1,\t\"b\": 2}\n", 0, Schema::Json).errors.is_empty());
    }

    #[test]
    fn non_specific_tags_and_the_value_key_as_pyyaml_reads_them() {
        let (r, errors) = root("a: ! \"12\"\nb: ! yes\n=: 1\n");
        assert!(errors.is_empty(), "{errors:?}");
        let get = |k: &str| r.as_ref().and_then(|r| r.get(k)).map(|n| n.kind.clone());
        assert_eq!((get("a"), get("b"), get("=")), (Some(Kind::Int(12)), Some(Kind::Bool(true)), Some(Kind::Int(1))));
        let (_, errors) = root("a: =\n");
        assert!(errors.len() == 1 && errors[0].message.contains("value key"), "{errors:?}");
        assert!(root("a: \"=\"\n").1.is_empty());
    }

    #[test]
    fn quoted_scalars_ignore_indentation_as_pyyaml_does() {
        let (r, errors) = root("a:\n  b: \"x\ny \\\"z\\\"\"\n  c: 'it''s\n   more'\n  d: 1\n");
        assert!(errors.is_empty(), "{errors:?}");
        let a = r.as_ref().and_then(|r| r.get("a"));
        let get = |k: &str| a.and_then(|a| a.get(k)).map(|n| n.kind.clone());
        assert_eq!(get("b"), Some(Kind::Str("x y \"z\"".into())));
        assert_eq!(get("c"), Some(Kind::Str("it's more".into())));
        assert_eq!(a.and_then(|a| a.get("d")).map(|n| n.loc.line), Some(6));
    }

    #[test]
    fn syntax_errors_and_multiple_documents() {
        let (r, errors) = root("a: 1\n b: 2\n");
        assert!(r.is_none());
        assert_eq!(errors[0].loc.line, 2);
        let (_, errors) = root("a: 1\n---\nb: 2\n");
        assert!(errors[0].message.contains("single document"));
        let (r, errors) = root("# only a comment\n");
        assert!(r.is_none() && errors.is_empty());
    }

    #[test]
    fn tags() {
        let (r, errors) = root("a: !!str 1\nb: !!int '7'\nc: !Ref x\n");
        assert_eq!(r.as_ref().and_then(|r| r.get("a")).map(|n| n.kind.clone()), Some(Kind::Str("1".into())));
        assert_eq!(r.as_ref().and_then(|r| r.get("b")).map(|n| n.kind.clone()), Some(Kind::Int(7)));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("!Ref"));
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let (r, errors) = root(&text);
        assert!(r.is_none());
        assert!(errors[0].message.contains("too large"), "{errors:?}");
    }
}
