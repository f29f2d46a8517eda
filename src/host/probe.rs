//! The probe shell: ticks the lease, dispatches due probes with `dispatch_http_call` straight
//! to the deployment's cluster (never through the router's own listener), and hands each answer
//! to [`crate::probe::finish`].
//!
//! Every VM's root context (each worker and the main thread) ticks; the lease in shared data
//! lets exactly one of them probe. State here is per root context: a config reload creates new
//! root contexts with their own holder ids and a higher config generation, which take the lease
//! from the old configuration's holder at once (that one keeps ticking while its listener drains).

use super::shared::{ensure_key, SharedData};
use super::root::HostVm;
use crate::config::RouterConfig;
use crate::health::{keys, parse_retry_after};
use crate::probe::{self, Answer, Lease, Planned, ProbeRequest, Schedule};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

thread_local! {
    /// Whether this VM also runs the upstream role (same `vm_id`). Measured on Envoy 1.40: a
    /// callout to a cluster whose upstream filter runs in the calling VM creates that filter's
    /// HTTP context synchronously, re-entering the VM inside `on_tick`; the SDK's dispatcher is
    /// already borrowed there and panics ("RefCell already mutably borrowed"), which breaks the
    /// VM. Such a VM therefore never probes.
    static UPSTREAM_ROLE_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Called when the upstream role is configured in this VM.
pub fn note_upstream_role() {
    UPSTREAM_ROLE_HERE.with(|f| f.set(true));
}

/// One root context's prober.
pub struct Probes {
    cfg: Rc<RouterConfig>,
    /// Random per root context: the lease's holder id.
    me: u64,
    /// This configuration's generation: a newer configuration takes the lease over.
    generation: u64,
    requests: Vec<ProbeRequest>,
    schedule: Schedule,
    holding: bool,
    /// Set when this VM must not probe (see [`UPSTREAM_ROLE_HERE`]).
    off: bool,
    /// The previous tick, to size the lease by the tick period actually observed (another
    /// feature may set a different period for this root context; the last setter wins).
    last_tick_ms: Option<u64>,
    /// Dispatched probes by callout token: (index into `requests`, dispatch time).
    in_flight: HashMap<u32, (usize, u64)>,
}

/// Plans the probes and starts the tick when `background_health_checks` is on; logs one line
/// per deployment that cannot be probed. `raw` is the plugin configuration as Envoy gave it.
pub fn configure(cfg: &Rc<RouterConfig>, vm: &HostVm, raw: &[u8]) -> Option<Probes> {
    if !cfg.health_checks.enabled {
        return None;
    }
    let mut requests = Vec::new();
    for planned in probe::plan(cfg) {
        match planned {
            Planned::Probe(r) => requests.push(r),
            Planned::Skip { id, reason } => log::info!("llm-router: health probes: deployment {id} {reason}; not probed"),
        }
    }
    ensure_key(keys::PROBE_LEASE);
    ensure_key(keys::PROBE_CONFIG);
    let generation = probe::generation(&SharedData, crate::failover::siphash24(0, 0, raw));
    for r in &requests {
        ensure_key(&keys::probe(&r.id));
    }
    if let Err(status) = hostcalls::set_tick_period(Duration::from_millis(probe::TICK_MS)) {
        log::error!("llm-router: health probes disabled: cannot set the tick period: {status:?}");
        return None;
    }
    let me = vm.rng.borrow_mut().next_u64();
    log::info!(
        "llm-router: health probes every {} s for {} deployment(s) (holder id {me:016x}, config generation {generation})",
        cfg.health_checks.interval_secs,
        requests.len()
    );
    Some(Probes { cfg: cfg.clone(), me, generation, requests, schedule: Schedule::default(), holding: false, off: false, last_tick_ms: None, in_flight: HashMap::new() })
}

/// One tick: renew or take the lease; when holding, dispatch the probes that are due.
pub fn on_tick(probes: &mut Option<Probes>) {
    let Some(p) = probes else { return };
    if p.off {
        return;
    }
    if UPSTREAM_ROLE_HERE.with(Cell::get) {
        log::error!(
            "llm-router: background health probes are off: the upstream role (root_id {}) runs in this VM; \
             give its filter its own vm_config.vm_id so probes do not re-enter the router's VM",
            super::root::UPSTREAM_ROOT_ID
        );
        p.off = true;
        if p.holding {
            probe::release(&SharedData, p.me);
            p.holding = false;
        }
        return;
    }
    let now = super::now_ms();
    let period = p.last_tick_ms.map_or(probe::TICK_MS, |last| now.saturating_sub(last)).clamp(probe::TICK_MS, probe::MAX_TICK_MS);
    p.last_tick_ms = Some(now);
    let holding = probe::tick(&SharedData, p.me, p.generation, now, probe::LEASE_TICKS * period) == Lease::Holding;
    if holding != p.holding {
        log::info!(
            "llm-router: health probes: holder {:016x} {} the lease",
            p.me,
            if holding { "took" } else { "lost" }
        );
        p.holding = holding;
    }
    if !holding {
        p.schedule.disarm();
        return;
    }
    let interval_ms = (p.cfg.health_checks.interval_secs * 1000.0).round() as u64;
    for i in p.schedule.due(p.requests.len(), now, interval_ms) {
        // A probe still waiting for its answer is not sent again.
        if p.in_flight.values().any(|(j, _)| *j == i) {
            continue;
        }
        let Some(r) = p.requests.get(i) else { continue };
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        match hostcalls::dispatch_http_call(&r.cluster, headers, Some(&r.body), vec![], Duration::from_millis(r.timeout_ms)) {
            Ok(token) => {
                p.in_flight.insert(token, (i, now));
            }
            // Measured: an unknown cluster gives BadArgument; a cluster without a healthy endpoint
            // gives InternalFailure (Envoy's local reply happens inside the call). Both are the
            // deployment's connect failure, as its live requests would fail the same way.
            Err(status) => {
                log::warn!("llm-router: health probe of deployment {} not sent (cluster {}): {status:?}", r.id, r.cluster);
                record(p, i, Answer::NotSent, now);
            }
        }
    }
}

/// A callout finished: read `:status` (absent when Envoy reports a failure) and, for a short 5xx,
/// the body (to recognise Envoy's own local replies), and record it.
/// Returns false when the token is not one of ours.
pub fn on_response(probes: &mut Option<Probes>, token: u32, num_headers: usize, body_size: usize) -> bool {
    let Some(p) = probes else { return false };
    let Some((i, started)) = p.in_flight.remove(&token) else { return false };
    let now = super::now_ms();
    let header = |name: &str| hostcalls::get_map_value(MapType::HttpCallResponseHeaders, name).ok().flatten();
    let status = if num_headers == 0 { None } else { header(":status").and_then(|s| s.parse::<u16>().ok()) };
    let answer = match status {
        Some(status) => Answer::Status {
            status,
            retry_after_ms: parse_retry_after(header("retry-after").as_deref(), header("retry-after-ms").as_deref(), now),
            details: if status >= 500 && body_size <= probe::outcome::MAX_LOCAL_REPLY_BYTES {
                match hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size) {
                    Ok(Some(body)) => probe::outcome::local_reply_details(&body),
                    _ => None,
                }
            } else {
                None
            },
        },
        None => Answer::None {
            elapsed_ms: now.saturating_sub(started),
            timeout_ms: p.requests.get(i).map_or(0, |r| r.timeout_ms),
        },
    };
    record(p, i, answer, now);
    true
}

fn record(p: &Probes, i: usize, answer: Answer, now: u64) {
    let Some(r) = p.requests.get(i) else { return };
    match probe::finish(&SharedData, &p.cfg, r.index, answer, now) {
        Ok(value) if value.ends_with(" ok") => log::debug!("llm-router: health probe of deployment {}: {value}", r.id),
        Ok(value) => log::info!("llm-router: health probe of deployment {} failed: {value}", r.id),
        Err(_) => log::warn!("llm-router: health probe of deployment {}: recording the result failed", r.id),
    }
}
