//! Configuration diagnostics: every problem carries the field path it was found at, so an
//! operator reading Envoy's log knows which line of their `config.yaml` to fix.

use std::fmt;

/// What a warning is about, so tools can summarise (`llm-router check --format json`) without
/// parsing messages. Errors are always [`Kind::Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something wrong or worth knowing.
    Problem,
    /// A key the router does not act on: accepted, removed before anything reads it, never resolved.
    Ignored,
    /// A deployment that cannot be served (unsupported provider, unknown credential, ...).
    Skipped,
}

/// One problem with the plugin configuration, e.g. `model_list[1].litellm_params.weight: must be >= 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
    pub kind: Kind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Collects errors (the config is refused) and warnings (logged, config still loads).
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Diagnostics {
    pub fn error(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(Problem { path: path.into(), reason: reason.into(), kind: Kind::Problem });
    }

    pub fn warn(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.warn_as(Kind::Problem, path, reason);
    }

    /// A key the router accepts but does not act on.
    pub fn ignored(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.warn_as(Kind::Ignored, path, reason);
    }

    pub fn warn_as(&mut self, kind: Kind, path: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(Problem { path: path.into(), reason: reason.into(), kind });
    }

    /// Moves `other`'s problems into this one (errors at the end).
    pub fn extend(&mut self, other: Diagnostics) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }
}
