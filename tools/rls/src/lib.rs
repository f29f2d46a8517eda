//! llm-router-rls: an Envoy rate limit service (`ShouldRateLimit`) over Limitador's engine and
//! its Redis storage, implementing `docs/design/global-limits.md` (exact, all-or-nothing
//! admission, per-descriptor addends, peeks and negative hits, per-descriptor statuses).
//!
//! * `service`: the gRPC handler and its semantics;
//! * `index`: why a descriptor's lookup does not grow with the number of limits;
//! * `decrement`: negative hits on Limitador's counter keys (a pinned copy of its key format);
//! * `limits_file`: Limitador's limits file, and its reload.

pub mod decrement;
pub mod index;
pub mod limits_file;
pub mod service;

use limitador::storage::redis::AsyncRedisStorage;
use limitador::storage::AsyncStorage;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Connects to Redis and builds the service (limits not loaded yet).
pub async fn connect(redis_url: &str, hold_ttl: Duration) -> Result<service::Rls, String> {
    let client = redis::Client::open(redis_url).map_err(|e| format!("{redis_url}: {e}"))?;
    // Bounded waits: a Redis that is down must become UNAVAILABLE quickly (the router's own
    // timeout is 50 ms by default), not a call parked on reconnection back-off.
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_millis(500))
        .set_response_timeout(Duration::from_millis(1000))
        .set_number_of_retries(1)
        .set_factor(50);
    let conn = redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| format!("{redis_url}: {e}"))?;
    let storage = AsyncRedisStorage::new_with_conn_manager(conn.clone())
        .await
        .map_err(|e| format!("{redis_url}: {e}"))?;
    let limiter = limitador::AsyncRateLimiterBuilder::new(AsyncStorage::with_counter_storage(
        Box::new(storage),
    ))
    .reservation_limits(limitador::reservation::ReservationLimits {
        max_fraction: 1.0,
        max_ttl: hold_ttl,
    })
    .build();
    Ok(service::Rls::new(limiter, conn, hold_ttl))
}

/// Polls the limits file's mtime every second; a change reloads it. A file that does not
/// parse (or cannot be installed) keeps the previous limits and logs why.
/// `seen` is the mtime of the version already loaded (read before loading it).
pub async fn watch(rls: Arc<service::Rls>, path: PathBuf, mut seen: Option<std::time::SystemTime>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = limits_file::mtime(&path);
        if now == seen || now.is_none() {
            continue;
        }
        seen = now;
        reload(&rls, &path).await;
    }
}

async fn reload(rls: &service::Rls, path: &Path) {
    match limits_file::load(path) {
        Ok(limits) => match rls.configure(limits).await {
            Ok(n) => eprintln!("llm-router-rls: reloaded {}, {n} limits", path.display()),
            Err(e) => eprintln!("llm-router-rls: reload failed, keeping the previous limits: {e}"),
        },
        Err(e) => eprintln!("llm-router-rls: reload failed, keeping the previous limits: {e}"),
    }
}
