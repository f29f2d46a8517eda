//! Negative hits: Limitador has no decrement (every delta is a `u64`), so a refund is a Lua
//! script on the very key Limitador's Redis storage increments.
//!
//! The key format is private to limitador (`storage/keys.rs`, `key_for_counter`): for a limit
//! without an `id` (the limits file loader refuses ids) it is
//! `namespace:{<namespace>},counter:<serde_json of the Counter with remaining/expires_in unset>`.
//! [`counter_key`] rebuilds exactly that from limitador's public, serializable `Counter`; the
//! test `tests/counter_key.rs` pins it by incrementing through limitador and reading the key
//! back from Redis. Upgrading limitador past `=0.14.0` must keep that test green.

use limitador::counter::Counter;
use limitador::limit::{Context, Limit};
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

/// Limitador 0.14's Redis key of `limit`'s counter in `ctx` (`None`: a variable is unset, so
/// Limitador would not count it either).
pub fn counter_key(limit: &Limit, ctx: &Context<'_>) -> Result<Option<Vec<u8>>, String> {
    let counter = Counter::new(Arc::new(limit.clone()), ctx).map_err(|e| e.to_string())?;
    let Some(counter) = counter else {
        return Ok(None);
    };
    let json = serde_json::to_string(&counter).map_err(|e| e.to_string())?;
    Ok(Some(
        format!(
            "namespace:{{{}}},counter:{json}",
            limit.namespace().as_ref()
        )
        .into_bytes(),
    ))
}

/// Subtracts ARGV[1] from KEYS[1], clamped at 0, keeping its TTL (`KEEPTTL`, Redis ≥ 6).
/// An absent key (its window expired, or it was never hit) is left absent.
/// Returns `{value, pttl_ms}`, or `{-1, -2}` when absent. The value is written with `%.0f`:
/// Redis's Lua 5.1 would print a large number as `1e+15`, which `INCRBY` then refuses.
const SCRIPT_DECREMENT: &str = "
    local v = redis.call('get', KEYS[1])
    if not v then return {-1, -2} end
    local n = (tonumber(v) or 0) - tonumber(ARGV[1])
    if n < 0 then n = 0 end
    redis.call('set', KEYS[1], string.format('%.0f', n), 'KEEPTTL')
    return {n, redis.call('pttl', KEYS[1])}";

/// What a decrement left: the counter's value and the time until its window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub value: u64,
    pub expires_in: Option<Duration>,
}

/// Applies a refund of `amount` to the counter at `key`. `Ok(None)`: no counter (nothing to do).
pub async fn decrement(
    conn: &ConnectionManager,
    key: &[u8],
    amount: u64,
) -> redis::RedisResult<Option<Left>> {
    let mut conn = conn.clone();
    let (value, pttl): (i64, i64) = redis::Script::new(SCRIPT_DECREMENT)
        .key(key)
        .arg(amount)
        .invoke_async(&mut conn)
        .await?;
    if value < 0 {
        return Ok(None);
    }
    let expires_in = u64::try_from(pttl).ok().map(Duration::from_millis);
    Ok(Some(Left {
        value: value as u64,
        expires_in,
    }))
}

/// Limitador 0.14's Redis key of the set of `limit`'s counters (`key_for_counters_of_limit`,
/// same pin as [`counter_key`]).
pub fn limit_set_key(limit: &Limit) -> Result<Vec<u8>, String> {
    let json = serde_json::to_string(limit).map_err(|e| e.to_string())?;
    Ok(format!(
        "namespace:{{{}}},counters_of_limit:{json}",
        limit.namespace().as_ref()
    )
    .into_bytes())
}

/// One admitted reservation's counter, to commit.
#[derive(Debug, Clone)]
pub struct Commit {
    pub counter_key: Vec<u8>,
    pub limit_set_key: Vec<u8>,
    pub window_secs: u64,
    pub amount: u64,
    pub reservation_id: Option<String>,
}

/// Per counter: `INCRBY` (a new key gets its window and joins its limit's set, as limitador's
/// `SCRIPT_UPDATE_COUNTER` does) and the hold's release, for every counter in one script.
/// KEYS: triplets (counter, reservations, limit set); ARGV: triplets (window, amount, id|"").
const SCRIPT_COMMIT: &str = "
    for i = 1, #KEYS / 3 do
        local counter, holds, set = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
        local window, amount, id = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
        local c = redis.call('incrby', counter, amount)
        if c == tonumber(amount) then
            redis.call('expire', counter, window, 'NX')
            redis.call('sadd', set, counter)
        end
        if id ~= '' then redis.call('hdel', holds, id) end
    end
    return 1";

/// Commits every admitted reservation of a request **atomically**: limitador's
/// `commit_reservation` increments, then releases the hold in a second round trip, and a
/// concurrent `reserve` in between counts the amount twice (a false refusal near the limit).
pub async fn commit_all(conn: &ConnectionManager, commits: &[Commit]) -> redis::RedisResult<()> {
    if commits.is_empty() {
        return Ok(());
    }
    let script = redis::Script::new(SCRIPT_COMMIT);
    let mut invocation = script.prepare_invoke();
    for c in commits {
        let mut holds = c.counter_key.clone();
        holds.extend_from_slice(b",reservations");
        invocation
            .key(&c.counter_key)
            .key(holds)
            .key(&c.limit_set_key);
    }
    for c in commits {
        invocation
            .arg(c.window_secs)
            .arg(c.amount)
            .arg(c.reservation_id.as_deref().unwrap_or(""));
    }
    let mut conn = conn.clone();
    invocation.invoke_async::<i64>(&mut conn).await.map(|_| ())
}
