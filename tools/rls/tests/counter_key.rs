//! Pins `decrement::counter_key` to the key limitador 0.14's Redis storage really writes:
//! increment through limitador (the service in-process), then read that exact key from Redis.

mod common;
use common::*;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use limitador::limit::Context;
use llm_router_rls::{decrement, index::Index, limits_file};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn counter_key_is_the_key_limitador_increments() {
    let redis = Redis::start();
    let rls = llm_router_rls::connect(&redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let generic = "- namespace: llm_router\n  name: g\n  max_value: 100\n  seconds: 60\n  conditions: [\"descriptors[0]['team'].startsWith('t')\"]\n  variables: [\"descriptors[0]['team']\"]\n";
    let yaml = [limit("tpm", "api_key", "k", 1000, 60), generic.to_owned()].concat();
    rls.configure(limits_file::parse(&yaml).unwrap())
        .await
        .unwrap();

    let req = RateLimitRequest {
        domain: "llm_router".into(),
        descriptors: vec![
            desc("tpm", "api_key", "k", Some(7), false),
            desc("tpm", "team", "t9", Some(3), false),
        ],
        hits_addend: 0,
    };
    let r = rls.should_rate_limit(req).await.unwrap();
    assert_eq!(r.overall_code, OK);

    let (_, limits) = Index::build(limits_file::parse(&yaml).unwrap()).unwrap();
    let ctx = |pairs: &[(&str, &str)]| {
        let mut ctx = Context::default();
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ctx.list_binding("descriptors".into(), vec![map]);
        ctx
    };
    let indexed = decrement::counter_key(&limits[0], &ctx(&[("limit", "tpm"), ("api_key", "k")]))
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(indexed.clone()).unwrap(),
        "namespace:{llm_router\u{1f}api_key=k\u{1f}limit=tpm},counter:{\"limit\":{\"namespace\":\"llm_router\\u001fapi_key=k\\u001flimit=tpm\",\"seconds\":60,\"conditions\":[\"descriptors[0]['api_key'] == 'k'\",\"descriptors[0]['limit'] == 'tpm'\"],\"variables\":[]},\"set_variables\":{},\"remaining\":null,\"expires_in\":null}"
    );
    let qualified = decrement::counter_key(&limits[1], &ctx(&[("limit", "tpm"), ("team", "t9")]))
        .unwrap()
        .unwrap();

    let mut conn = redis.connection();
    let get = |conn: &mut redis::Connection, key: &[u8]| -> Option<u64> {
        redis::cmd("GET").arg(key).query(conn).unwrap()
    };
    assert_eq!(
        get(&mut conn, &indexed),
        Some(7),
        "limitador's key for an indexed limit"
    );
    // The limit's counter set (limitador's `key_for_counters_of_limit`) holds the counter, and
    // the commit released the hold.
    let set = decrement::limit_set_key(&limits[0]).unwrap();
    let member: bool = redis::cmd("SISMEMBER")
        .arg(&set)
        .arg(&indexed)
        .query(&mut conn)
        .unwrap();
    assert!(member, "limitador's counter set of the limit");
    let mut holds = indexed.clone();
    holds.extend_from_slice(b",reservations");
    let held: u64 = redis::cmd("HLEN").arg(&holds).query(&mut conn).unwrap();
    assert_eq!(held, 0, "no hold left after the commit");
    assert_eq!(
        get(&mut conn, &qualified),
        Some(3),
        "limitador's key for a limit with a variable"
    );
}
