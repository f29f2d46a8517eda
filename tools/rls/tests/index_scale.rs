//! The index property: with 4000 limits in one domain, a descriptor evaluates one limit.

mod common;
use common::*;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use llm_router_rls::limits_file;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[tokio::test]
async fn four_thousand_limits_one_evaluated_per_descriptor() {
    let redis = Redis::start();
    let rls = llm_router_rls::connect(&redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let mut yaml = String::new();
    for key in 0..1000 {
        for kind in ["rpm", "tpm", "parallel", "budget"] {
            yaml.push_str(&limit(
                kind,
                "api_key",
                &format!("h{key:04}"),
                1_000_000,
                60,
            ));
        }
    }
    let start = Instant::now();
    let n = rls
        .configure(limits_file::parse(&yaml).unwrap())
        .await
        .unwrap();
    assert_eq!(n, 4000);
    eprintln!(
        "index_scale: parsing and installing 4000 limits took {} ms",
        start.elapsed().as_millis()
    );

    for kind in ["rpm", "tpm", "parallel", "budget"] {
        let entries: BTreeMap<String, String> = [
            ("limit".to_owned(), kind.to_owned()),
            ("api_key".to_owned(), "h0421".to_owned()),
        ]
        .into();
        let namespaces = rls.namespaces_for("llm_router", &entries);
        assert_eq!(namespaces.len(), 1, "{kind}");
        assert_eq!(
            rls.limits_in(&namespaces[0]),
            1,
            "{kind}: one limit evaluated"
        );
    }
    // Nothing generic is left under the domain itself.
    assert_eq!(rls.limits_in(&"llm_router".into()), 0);

    // Native timing, reported, never asserted.
    let calls = 500;
    let start = Instant::now();
    for i in 0..calls {
        let req = RateLimitRequest {
            domain: "llm_router".into(),
            descriptors: vec![desc(
                "rpm",
                "api_key",
                &format!("h{:04}", i % 1000),
                Some(1),
                false,
            )],
            hits_addend: 0,
        };
        assert_eq!(rls.should_rate_limit(req).await.unwrap().overall_code, OK);
    }
    eprintln!(
        "index_scale: {} µs per one-descriptor call (4000 limits, in-process, Redis on loopback)",
        start.elapsed().as_micros() / calls
    );
}
