//! Configuration diagnostics: every problem carries the field path it was found at, so an
//! operator reading Envoy's log knows which line of their `config.yaml` to fix.

use std::fmt;

/// One problem with the plugin configuration, e.g. `model_list[1].litellm_params.weight: must be >= 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
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
        self.errors.push(Problem { path: path.into(), reason: reason.into() });
    }

    pub fn warn(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(Problem { path: path.into(), reason: reason.into() });
    }
}
