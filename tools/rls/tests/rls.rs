//! The contract of docs/design/global-limits.md against the real binary and a real Redis.

mod common;
use common::*;

fn rpm_limits() -> String {
    [
        limit("rpm", "api_key", "k1", 25, 60),
        limit("tpm", "api_key", "k1", 1000, 60),
        limit("budget", "team", "t1", 100, 60),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpm_is_exact_under_concurrency() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &rpm_limits());
    // Two clients (two connections), 20 concurrent admissions each, against max 25.
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let client = rls.client().await;
        tasks.push(tokio::spawn(async move {
            let calls = (0..20).map(|_| {
                let mut c = client.clone();
                async move {
                    call(&mut c, vec![desc("rpm", "api_key", "k1", Some(1), false)])
                        .await
                        .unwrap()
                }
            });
            futures::future::join_all(calls).await
        }));
    }
    let mut ok = 0;
    let mut over = 0;
    for t in tasks {
        for r in t.await.unwrap() {
            match r.overall_code {
                OK => ok += 1,
                OVER_LIMIT => over += 1,
                c => panic!("code {c}"),
            }
        }
    }
    assert_eq!((ok, over), (25, 15));
    // The counter holds exactly what was admitted: a peek sees 0 remaining.
    let mut c = rls.client().await;
    let r = call(&mut c, vec![desc("rpm", "api_key", "k1", Some(0), false)])
        .await
        .unwrap();
    assert_eq!(r.overall_code, OK, "a peek at exactly the limit is OK");
    assert_eq!(r.statuses[0].limit_remaining, 0);
}

#[tokio::test]
async fn statuses_report_each_descriptor() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &rpm_limits());
    let mut c = rls.client().await;
    let r = call(
        &mut c,
        vec![
            desc("rpm", "api_key", "k1", None, false),
            desc("tpm", "api_key", "k1", Some(300), false),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.overall_code, OK);
    assert_eq!(r.statuses.len(), 2);
    let rpm = &r.statuses[0];
    assert_eq!(rpm.code, OK);
    let limit = rpm.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.unit, limit.name.as_str()),
        (25, 2, "rpm.api_key.k1")
    );
    assert_eq!(rpm.limit_remaining, 24);
    let reset = rpm.duration_until_reset.unwrap();
    assert!(reset.seconds > 50 && reset.seconds <= 60, "{reset:?}");
    assert_eq!(r.statuses[1].limit_remaining, 700);
}

#[tokio::test]
async fn refusal_is_all_or_nothing() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &rpm_limits());
    let mut c = rls.client().await;
    let refused = call(
        &mut c,
        vec![
            desc("rpm", "api_key", "k1", Some(1), false),
            desc("tpm", "api_key", "k1", Some(1001), false),
            desc("budget", "team", "t1", Some(10), false),
        ],
    )
    .await
    .unwrap();
    assert_eq!(refused.overall_code, OVER_LIMIT);
    let codes: Vec<i32> = refused.statuses.iter().map(|s| s.code).collect();
    assert_eq!(codes, [OK, OVER_LIMIT, OK]);
    assert_eq!(
        refused.statuses[1].current_limit.as_ref().unwrap().name,
        "tpm.api_key.k1"
    );
    // Nothing was charged, and no hold is left behind.
    let peek = call(
        &mut c,
        vec![
            desc("rpm", "api_key", "k1", Some(0), false),
            desc("tpm", "api_key", "k1", Some(0), false),
            desc("budget", "team", "t1", Some(0), false),
        ],
    )
    .await
    .unwrap();
    let left: Vec<u32> = peek.statuses.iter().map(|s| s.limit_remaining).collect();
    assert_eq!(left, [25, 1000, 100]);
    let full = call(
        &mut c,
        vec![desc("tpm", "api_key", "k1", Some(1000), false)],
    )
    .await
    .unwrap();
    assert_eq!(full.overall_code, OK, "the whole limit is still available");
}

#[tokio::test]
async fn peek_charges_nothing_and_refuses_only_over_the_limit() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &limit("budget", "user", "u", 10, 60));
    let mut c = rls.client().await;
    for _ in 0..3 {
        let r = call(&mut c, vec![desc("budget", "user", "u", Some(0), false)])
            .await
            .unwrap();
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OK, 10));
    }
    assert_eq!(
        call(&mut c, vec![desc("budget", "user", "u", Some(10), false)])
            .await
            .unwrap()
            .overall_code,
        OK
    );
    assert_eq!(
        call(&mut c, vec![desc("budget", "user", "u", Some(0), false)])
            .await
            .unwrap()
            .overall_code,
        OK
    );
    assert_eq!(
        call(&mut c, vec![desc("budget", "user", "u", Some(1), false)])
            .await
            .unwrap()
            .overall_code,
        OVER_LIMIT
    );
}

#[tokio::test]
async fn request_level_addend_applies_when_the_descriptor_has_none() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &limit("tpm", "team", "t", 10, 60));
    let mut c = rls.client().await;
    let req = |hits_addend| envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest {
        domain: "llm_router".into(),
        descriptors: vec![desc("tpm", "team", "t", None, false)],
        hits_addend,
    };
    let r = c.should_rate_limit(req(4)).await.unwrap().into_inner();
    assert_eq!(r.statuses[0].limit_remaining, 6);
    let r = c.should_rate_limit(req(0)).await.unwrap().into_inner();
    assert_eq!(r.statuses[0].limit_remaining, 5, "request-level 0 means 1");
}

#[tokio::test]
async fn negative_hits_clamp_at_zero_keep_the_ttl_and_skip_expired_windows() {
    let redis = Redis::start();
    let rls = Rls::start(
        &redis,
        &[
            limit("tpm", "api_key", "k", 1000, 60),
            limit("parallel", "api_key", "k", 2, 900),
        ]
        .concat(),
    );
    let mut c = rls.client().await;
    // A refund on a window that does not exist creates nothing and is OK.
    let r = call(&mut c, vec![desc("tpm", "api_key", "k", Some(50), true)])
        .await
        .unwrap();
    assert_eq!(r.overall_code, OK);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection())
        .unwrap();
    assert!(
        keys.iter()
            .all(|k| !k.contains("counter:") || k.ends_with(",reservations")),
        "{keys:?}"
    );

    assert_eq!(
        call(&mut c, vec![desc("tpm", "api_key", "k", Some(300), false)])
            .await
            .unwrap()
            .overall_code,
        OK
    );
    let r = call(&mut c, vec![desc("tpm", "api_key", "k", Some(100), true)])
        .await
        .unwrap();
    assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OK, 800));
    let r = call(&mut c, vec![desc("tpm", "api_key", "k", Some(5000), true)])
        .await
        .unwrap();
    assert_eq!(
        (r.overall_code, r.statuses[0].limit_remaining),
        (OK, 1000),
        "clamped at 0"
    );
    let reset = r.statuses[0].duration_until_reset.unwrap();
    assert!(
        reset.seconds > 50 && reset.seconds <= 60,
        "the TTL is kept: {reset:?}"
    );
    let ttls: Vec<i64> = {
        let mut conn = redis.connection();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*tpm*").query(&mut conn).unwrap();
        keys.iter()
            .filter(|k| !k.contains("counters_of_limit") && !k.ends_with(",reservations"))
            .map(|k| redis::cmd("PTTL").arg(k).query(&mut conn).unwrap())
            .collect()
    };
    assert_eq!(ttls.len(), 1);
    assert!(ttls[0] > 50_000, "{ttls:?}");

    // parallel: take both slots, refused at the third, a release frees one.
    for _ in 0..2 {
        assert_eq!(
            call(
                &mut c,
                vec![desc("parallel", "api_key", "k", Some(1), false)]
            )
            .await
            .unwrap()
            .overall_code,
            OK
        );
    }
    assert_eq!(
        call(
            &mut c,
            vec![desc("parallel", "api_key", "k", Some(1), false)]
        )
        .await
        .unwrap()
        .overall_code,
        OVER_LIMIT
    );
    // A negative descriptor is applied even next to a refused positive one, and never refuses.
    let r = call(
        &mut c,
        vec![
            desc("parallel", "api_key", "k", Some(1), true),
            desc("tpm", "api_key", "k", Some(2000), false),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.overall_code, OVER_LIMIT);
    assert_eq!(r.statuses[0].code, OK);
    assert_eq!(
        call(
            &mut c,
            vec![desc("parallel", "api_key", "k", Some(1), false)]
        )
        .await
        .unwrap()
        .overall_code,
        OK
    );
}

#[tokio::test]
async fn unmatched_descriptor_is_ok_and_not_counted() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &limit("rpm", "api_key", "k", 1, 60));
    let mut c = rls.client().await;
    for _ in 0..3 {
        let r = call(
            &mut c,
            vec![desc("rpm", "api_key", "other", Some(1), false)],
        )
        .await
        .unwrap();
        assert_eq!(r.overall_code, OK);
        assert_eq!(r.statuses[0].code, OK);
        assert!(r.statuses[0].current_limit.is_none());
    }
    // An unknown domain too.
    let req = envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest {
        domain: "elsewhere".into(),
        descriptors: vec![desc("rpm", "api_key", "k", Some(1), false)],
        hits_addend: 0,
    };
    assert_eq!(
        c.should_rate_limit(req)
            .await
            .unwrap()
            .into_inner()
            .overall_code,
        OK
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*counter:*")
        .query(&mut redis.connection())
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn generic_limits_are_a_fallback() {
    let redis = Redis::start();
    let generic = "- namespace: llm_router\n  name: any-team\n  max_value: 1\n  seconds: 60\n  conditions: [\"descriptors[0]['team'].startsWith('x')\"]\n  variables: [\"descriptors[0]['team']\"]\n";
    let rls = Rls::start(
        &redis,
        &[generic, &limit("rpm", "team", "x1", 5, 60)].concat(),
    );
    let mut c = rls.client().await;
    // Indexed: its own limit only.
    let r = call(&mut c, vec![desc("rpm", "team", "x1", Some(1), false)])
        .await
        .unwrap();
    assert_eq!(
        r.statuses[0].current_limit.as_ref().unwrap().name,
        "rpm.team.x1"
    );
    // Nothing indexed: the generic limit, one counter per team (its variable).
    for (team, code) in [("x2", OK), ("x2", OVER_LIMIT), ("x3", OK)] {
        let r = call(&mut c, vec![desc("tpm", "team", team, Some(1), false)])
            .await
            .unwrap();
        assert_eq!(r.overall_code, code, "{team}");
        assert_eq!(
            r.statuses[0].current_limit.as_ref().unwrap().name,
            "any-team"
        );
    }
}

#[tokio::test]
async fn unavailable_when_redis_is_down() {
    let mut redis = Redis::start();
    let rls = Rls::start(&redis, &limit("rpm", "api_key", "k", 5, 60));
    let mut c = rls.client().await;
    assert_eq!(
        call(&mut c, vec![desc("rpm", "api_key", "k", None, false)])
            .await
            .unwrap()
            .overall_code,
        OK
    );
    redis.stop();
    for negative in [false, true] {
        let err = call(&mut c, vec![desc("rpm", "api_key", "k", Some(1), negative)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    }
    // Unmatched descriptors need no storage.
    let r = call(&mut c, vec![desc("rpm", "api_key", "none", Some(1), false)])
        .await
        .unwrap();
    assert_eq!(r.overall_code, OK);
    rls.wait_logged("storage error");
    // Redis back (empty): the server reconnects by itself.
    let _redis = Redis::start_on(redis.port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match call(&mut c, vec![desc("rpm", "api_key", "k", Some(1), false)]).await {
            Ok(r) => break assert_eq!(r.statuses[0].limit_remaining, 4),
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "never recovered: {e:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reloads_the_limits_file_keeping_counters() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &limit("rpm", "api_key", "k", 3, 60));
    let mut c = rls.client().await;
    for _ in 0..2 {
        assert_eq!(
            call(&mut c, vec![desc("rpm", "api_key", "k", Some(1), false)])
                .await
                .unwrap()
                .overall_code,
            OK
        );
    }
    // A broken file keeps the previous limits.
    std::fs::write(rls.limits_path(), "- namespace: [").unwrap();
    rls.wait_logged("keeping the previous limits");
    let r = call(&mut c, vec![desc("rpm", "api_key", "k", Some(0), false)])
        .await
        .unwrap();
    assert_eq!(r.statuses[0].limit_remaining, 1);
    // A new max keeps the counter (2 used of 5), and a new limit appears.
    std::fs::write(
        rls.limits_path(),
        [
            limit("rpm", "api_key", "k", 5, 60),
            limit("rpm", "api_key", "k2", 1, 60),
        ]
        .concat(),
    )
    .unwrap();
    rls.wait_logged("2 limits");
    let r = call(&mut c, vec![desc("rpm", "api_key", "k", Some(0), false)])
        .await
        .unwrap();
    assert_eq!(r.statuses[0].limit_remaining, 3);
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        5
    );
    let r = call(&mut c, vec![desc("rpm", "api_key", "k2", Some(1), false)])
        .await
        .unwrap();
    assert_eq!(
        r.statuses[0].current_limit.as_ref().unwrap().name,
        "rpm.api_key.k2"
    );
}

#[tokio::test]
async fn a_settlement_is_applied_even_past_the_limit() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &limit("tpm", "api_key", "k", 100, 60));
    let mut c = rls.client().await;
    // Admitted with a reservation of 60, then the response used 150: the excess is charged.
    assert_eq!(call(&mut c, vec![desc("tpm", "api_key", "k", Some(60), false)]).await.unwrap().overall_code, OK);
    let r = settle(&mut c, vec![desc("tpm", "api_key", "k", Some(90), false)]).await.unwrap();
    assert_eq!(r.overall_code, OK, "a settlement is never refused");
    // 150 of 100 used: a peek finds nothing left, and an admission of 1 is refused.
    let peek = call(&mut c, vec![desc("tpm", "api_key", "k", Some(0), false)]).await.unwrap();
    assert_eq!(peek.statuses[0].limit_remaining, 0);
    assert_eq!(call(&mut c, vec![desc("tpm", "api_key", "k", Some(1), false)]).await.unwrap().overall_code, OVER_LIMIT);
    // A refund of 100 leaves 50: an admission of 50 fits exactly; without the metadata a call past the
    // limit is an admission, refused and charging nothing.
    let refund = settle(&mut c, vec![desc("tpm", "api_key", "k", Some(100), true)]).await.unwrap();
    assert_eq!(refund.overall_code, OK);
    assert_eq!(call(&mut c, vec![desc("tpm", "api_key", "k", Some(50), false)]).await.unwrap().overall_code, OK);
    assert_eq!(call(&mut c, vec![desc("tpm", "api_key", "k", Some(1), false)]).await.unwrap().overall_code, OVER_LIMIT);
    let peek = call(&mut c, vec![desc("tpm", "api_key", "k", Some(0), false)]).await.unwrap();
    assert_eq!(peek.statuses[0].limit_remaining, 0, "the refused admission charged nothing: exactly 100");
}
