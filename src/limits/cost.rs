//! What a request costs, in nano-USD: the serving deployment's per-token prices
//! (`model_info.input_cost_per_token` / `output_cost_per_token`, or the same keys in
//! `litellm_params`, as LiteLLM reads custom prices) times the tokens.
//!
//! Why this exists: a budget reserves the worst case at admission and settles the actual cost
//! when the response's usage is known, and both must price the same way. LiteLLM's
//! `completion_cost` also knows every public model's price from its bundled price map; the
//! router ships no price map, so a deployment without prices costs 0 against budgets — the
//! loader warns about each such deployment when some budget exists (`config/mod.rs`).
//!
//! Worst case: the input estimate (body bytes / 4, `openai::request_facts`) plus the output cap
//! (`max_completion_tokens`, `max_tokens`, else [`super::plan::DEFAULT_OUTPUT_TOKENS`]). A
//! response that uses more (a larger prompt than estimated, a provider that ignores the cap,
//! no cap and a longer answer) settles above its reservation: the `(c − r)⁺` term of the bounds
//! in the module docs of `limits`.

use super::counter::usd_to_nanos;
use super::plan::DEFAULT_OUTPUT_TOKENS;
use crate::config::ModelInfo;
use crate::openai::Usage;

/// USD per token, input and output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub input: f64,
    pub output: f64,
}

impl Prices {
    /// The deployment's prices; `None` when it sets neither (it then costs nothing).
    pub fn of(info: &ModelInfo) -> Option<Prices> {
        match (info.input_cost_per_token, info.output_cost_per_token) {
            (None, None) => None,
            (i, o) => Some(Prices { input: i.unwrap_or(0.0), output: o.unwrap_or(0.0) }),
        }
    }

    fn nanos(&self, input: u64, output: u64) -> u64 {
        // f64 keeps 53 bits: exact for any realistic token count; rounded up, never under.
        usd_to_nanos(input as f64 * self.input + output as f64 * self.output)
    }
}

/// The reservation of a request: its worst-case cost.
pub fn worst_case_nanos(prices: Option<Prices>, input_estimate: u64, max_output: Option<u64>) -> u64 {
    prices.map_or(0, |p| p.nanos(input_estimate, max_output.unwrap_or(DEFAULT_OUTPUT_TOKENS)))
}

/// The actual cost of a response with this usage.
pub fn actual_nanos(prices: Option<Prices>, usage: &Usage) -> u64 {
    prices.map_or(0, |p| p.nanos(usage.input_tokens, usage.output_tokens))
}

/// Nano-USD as an exact decimal in USD: `0.0000015`, `3`, `0` (no float rounding: the access log
/// and `llm-router spend` sum these exactly). `u64`, not `u128`: 128-bit division costs the wasm
/// module 1.6 kB (measured).
pub fn usd(nanos: u64) -> String {
    let (int, frac) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    if frac == 0 {
        return int.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(i: Option<f64>, o: Option<f64>) -> ModelInfo {
        ModelInfo { input_cost_per_token: i, output_cost_per_token: o, ..ModelInfo::default() }
    }

    #[test]
    fn prices_times_tokens_in_nano_usd() {
        // gpt-4o list prices: $2.50 / $10 per million tokens.
        let p = Prices::of(&info(Some(2.5e-6), Some(1e-5)));
        assert_eq!(actual_nanos(p, &Usage { input_tokens: 1000, output_tokens: 500 }), 2_500_000 + 5_000_000);
        assert_eq!(worst_case_nanos(p, 1000, Some(100)), 2_500_000 + 1_000_000);
        assert_eq!(worst_case_nanos(p, 0, None), DEFAULT_OUTPUT_TOKENS * 10_000);
        assert_eq!(actual_nanos(Prices::of(&info(None, Some(1e-6))), &Usage { input_tokens: 7, output_tokens: 3 }), 3_000);
    }

    #[test]
    fn unpriced_deployments_cost_nothing_and_sub_nano_costs_round_up() {
        assert_eq!(Prices::of(&info(None, None)), None);
        assert_eq!(actual_nanos(None, &Usage { input_tokens: 1 << 40, output_tokens: 1 }), 0);
        assert_eq!(worst_case_nanos(None, 10, Some(10)), 0);
        let tiny = Prices::of(&info(Some(1e-12), None));
        assert_eq!(actual_nanos(tiny, &Usage { input_tokens: 1, output_tokens: 0 }), 1, "a priced token is never free");
    }
}
