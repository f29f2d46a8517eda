//! Limits core for issue 12 (virtual keys): `rpm_limit`, `tpm_limit`, `max_parallel_requests`
//! and budgets (`max_budget` over `budget_duration`, `soft_budget`) per key, team, user and
//! key-per-model (`model_rpm_limit`, `model_tpm_limit`, `model_max_budget`), exact across the
//! workers of one Envoy.
//!
//! Wiring: [`plan`] builds each key's list of limits at config time (key, team — or the user
//! for a key without a team — and key-per-model; parallel, rpm, tpm, budgets),
//! `shell/router_stream.rs` admits in the body phase (each failover pass on its own; a replay
//! counts no request) and settles in `on_log`, [`cost`] prices the worst case and the actual
//! usage, [`reply`] makes the 429s and the `x-ratelimit-*` / budget headers. No proxy-wasm here:
//! the store is a trait.
//!
//! # Layers
//!
//! * [`window`]: LiteLLM's duration strings and the windows counters live in (`FirstHit` 60 s
//!   windows for rpm/tpm as LiteLLM's `parallel_request_limiter_v3.py`; calendar-aligned UTC
//!   windows for budgets as its `get_next_standardized_reset_time`; sources in that module).
//! * [`counter`]: one record per (limit kind, scope, id): `1 <start_ms> <end_ms> <used>
//!   <reserved>`; the pure transitions admit / settle / roll.
//! * [`store`]: [`CasStore`], read with a token / write if the token still matches — exactly
//!   proxy-wasm shared data, and every [`crate::health::Store`] (so `Host::shared()`) already
//!   is one.
//! * [`admit`]: [`Admitting`] and [`Settling`], state machines whose every step is one store
//!   operation; [`admit()`] / [`settle()`] run them to the end; [`Limiter`] is the seam the request
//!   path will call, [`Local`] its shared-data implementation.
//!
//! # Keys in shared data
//!
//! `llm_router.v1.limit.<rpm|tpm|parallel|budget>.<key|team|user|key_model>.<id>`, the id being
//! the key's SHA-256 hex (never a raw key), the `team_id`, the `user_id`, or `<key hash>/<model
//! group>`. Keyed by hash, so a config reload or a key rotation that keeps the hash keeps the
//! counters and the spend; `pipeline/reload.rs` empties the records a new config no longer
//! names, and `host/root.rs` creates a record only when it is absent, so a reload never resets
//! one it keeps. Keys must be created empty at configure time
//! (`MemCas::with_keys` in tests): creating a key is the one write CAS cannot protect (an
//! absent key has no token, so two first writers both succeed and one count is lost — the
//! test `absent_keys_race_which_is_why_configure_creates_them` shows it). One record per
//! limit instead of one per scope keeps contention per limit and the records tiny.
//!
//! # Admission, compensation, settlement
//!
//! A request carries a plan: every limit that applies to it (LiteLLM checks them all,
//! independently: v3 builds one descriptor each for `api_key`, `user`, `team`, `team_member`,
//! `end_user`, `model_per_key` and refuses on the first over limit — there is no override
//! between key and team limits; for budgets LiteLLM's docs add that a key in a team spends the
//! team budget rather than the user's personal one, which is the plan builder's business).
//! Admission walks the plan: for each limit one CAS update that checks and reserves (rpm:
//! consume 1; tpm: reserve the token estimate; parallel: reserve 1 slot; budget: reserve the
//! worst-case cost in nano-USD). A refusal releases, newest first, everything reserved so far
//! (compensation), so a refused request leaves every counter as it found it; the [`Refusal`]
//! names the limit, its limit, what remains and when its window resets (`retry-after`,
//! `x-ratelimit-*`, the `budget_exceeded` message). A [`Reservation`] lists per limit what
//! remains (headers on successful responses too), which budgets reached `soft_budget` (a
//! header and a metric, never a refusal) and which limits were skipped (`FailOpen`).
//! [`settle()`] consumes the reservation (it is not `Clone`: settling twice does not compile)
//! and replaces each reservation by the actual tokens / cost (unknown usage: the reservation
//! counts as consumed), releasing the parallel slot — in the window that admitted the request;
//! a window that has rolled since is not charged. Each held amount is applied by exactly one
//! successful CAS write. The request path keeps the reservation in an `Option` and settles it
//! with `take()` from whichever callback ends the stream first (`on_log` at the latest).
//!
//! Failure policy: bounded CAS retries ([`MAX_CAS_RETRIES`]); a store failure or exhausted
//! retries either skip the limit (`FailOpen`) or refuse (`FailClosed`) — a parameter, so issue
//! 13's per-kind defaults (budgets closed, rate limits open) are the caller's choice. Releases
//! and settlements that fail are given up and leave the counter high: safe, never an overshoot.
//!
//! # Bounds (proved here, checked by `props.rs` over interleaved CAS steps)
//!
//! Model: a record's value changes only by successful conditional writes, and a write succeeds
//! only if no write happened since its read, so each write applies one transition to the value
//! just before it: per record the transitions are atomic and totally ordered, whatever the
//! interleaving of workers. Let `taken = used + reserved` of a window, `L` the limit, `a` an
//! admission's amount, `r` a reservation and `c` its actual amount. Transitions: *roll* (a later
//! window: taken = 0), *admit* (`Check::Fits`: only if `taken + a ≤ L`; `Check::BelowLimit`:
//! only if `taken < L`; then `taken += a`), *release* (`taken -= a` of an amount this window
//! holds), *settle* (`taken += c − r`, only in the window holding `r`). A held amount leaves its
//! list after its one successful write, so it is subtracted at most once, and only from the
//! window that added it.
//!
//! 1. `Check::Fits` with every `c ≤ r`: **`taken ≤ L` at all times in every window, so spend
//!    (`used`) ≤ `max_budget`: no overshoot under any concurrency.** Induction over the writes:
//!    roll gives 0; admit checks it; release and settle (`c − r ≤ 0`) do not increase taken.
//!    If some `c > r`, the bound is `L + Σ (c − r)⁺` over the requests settled in the window:
//!    only an under-reservation can overshoot, by exactly its excess.
//! 2. `Check::BelowLimit` (LiteLLM's own rule: refuse once spend ≥ max_budget): `taken <
//!    L + max a + Σ (c − r)⁺` — admit starts from `taken ≤ L − 1`, nothing else increases taken
//!    beyond the excess. Concurrent requests overshoot by at most **one** reservation (the
//!    largest), not one per worker: after the crossing admission no other admission passes.
//! 3. rpm (`a = 1`, consumed at admission, undone only by compensation): admitted requests per
//!    window ≤ `rpm_limit`, by 1. Requests sharing a plan at one instant get exactly
//!    `min(n, every rpm limit)`: a refusal at limit j happens while `L_j` requests hold j; each
//!    of them is admitted or refused at a later limit while it is full; the last limit's holds
//!    are never undone, so by induction from the last limit at least `min L` are admitted.
//! 4. parallel (`a = 1`, `c = 0`, windows are epochs of `E` = [`window::PARALLEL_EPOCH_MS`] whose
//!    record carries the previous epoch's holds, `Window::Epoch`): every hold younger than `E` was
//!    admitted in the record's epoch or the one before, so it is counted; hence slots held by
//!    requests that run at most `E` ≤ `max_parallel_requests` at every instant (1), and every
//!    admitted request's slot is released by its settlement, once (from the carried count when
//!    its epoch has passed): 0 when all have settled. A hold whose release is lost is forgotten
//!    after one to two epochs (so is the slot of a stream running longer than `E`: it may then
//!    be admitted past, by one per such stream).
//!
//! Not covered by the bounds: a limit skipped under `FailOpen` while the store fails; the race
//! on absent keys (see above); requests whose windows are computed from clocks read at
//! different moments — records only move forward (a lagging read counts in the newer window,
//! never resets it back), so a request admitted just before a reset counts in the old window
//! and settles there. Refusals can be *transient false refusals*: with unequal amounts (tokens,
//! cost) a request that a later limit refuses holds room on an earlier limit for the moment of
//! its admission, and others may be refused meanwhile (safe direction; order the plan with the
//! most likely refusals first — parallel and rpm before tpm and budgets — to shorten it).
//! A parallel slot whose settlement is lost (a VM that dies mid-stream, or a release given up after
//! [`MAX_CAS_RETRIES`]) comes back after 15 to 30 minutes (bound 4; the failed settlement is
//! logged); LiteLLM's v3 counter expires with its 60 s window, which also frees the slots of
//! streams running longer than a minute. Counters live in one Envoy's shared data: they reset when Envoy restarts and multiply with
//! replicas — unless a rate limit service is configured.
//!
//! # Beyond one Envoy: [`global`]
//!
//! With `envoy_settings.rate_limit_service`, these local limits are the first, cheap gate and the
//! rate limit service the second, asynchronous one: an RLS is not a CAS map, and this filter
//! reaches it only through a gRPC callout, so it is not a [`Limiter`] behind the same call but a
//! second admission the stream waits for (`shell/router_stream.rs`). Each [`Limit`] of the plan
//! becomes one RLS descriptor with its amount as `hits_addend`; the end of the stream reports the
//! difference; a refusal there undoes the local admission ([`cancel`]). The plan, the refusal (429,
//! headers, messages) and the settle-once discipline are shared.

// The step-wise machines are driven by the property tests; the request path runs them to the end.
#![allow(dead_code, unused_imports)]

mod admit;
pub mod cost;
mod counter;
pub mod global;
pub mod plan;
#[cfg(test)]
mod props;
pub mod reply;
mod store;
mod window;

pub use admit::{
    admit, cancel, settle, Actual, Admitting, Demand, Kind, Limit, Limiter, Local, OnUnavailable, Progress, Reason, Refusal, Reservation, Scope, Settled, Settling, Status,
    KEY_PREFIX, MAX_CAS_RETRIES,
};
pub use counter::{usd_to_nanos, Check, Record};
pub use store::{CasStore, Versioned, Written};
pub use window::{is_none, parse, Duration, DurationError, Span, Unit, Window};
