//! The request side: decide from the headers whether the router handles the request, then —
//! once the body is buffered — resolve its model, pick a deployment and plan the rewrite.
//!
//! The body is never parsed into a tree: one validating scan finds the top-level `model`
//! (and the keys `default_params` may add), and one splice writes the new body.
//!
//! `head.rs` decides at the request headers, `attempt.rs` orchestrates the body phase (first
//! attempt, failover passes), `rewrite.rs` plans what the upstream request looks like.

mod attempt;
mod head;
mod rewrite;
#[cfg(test)]
mod tests;

pub use attempt::{on_body, Env, FailedAttempt};
pub use head::{identifies, on_head, HeadDecision, LocalReply, Pending, ReplayCheck, RequestHead, TAGS_HEADER};
pub use rewrite::{Forward, PER_TRY_TIMEOUT_HEADER};

use crate::openai::ApiError;

/// A local reply: an OpenAI-shaped error plus any extra headers (`retry-after`, `allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub error: ApiError,
    pub headers: Vec<(&'static str, String)>,
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Reply {
        Reply { error, headers: Vec::new() }
    }
}

