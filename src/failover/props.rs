//! Property tests (proptest) for the failover-state codec and the redirect location: the state
//! is the one thing the router trusts across an internal redirect, so its codec must round-trip
//! every value, stay header- and URL-safe, and refuse every change it did not sign.
//!
//! Case count: proptest's default (256), or `PROPTEST_CASES`.

use proptest::prelude::*;

use super::report::{failover_location, FailureReport};
use super::plan::Chain;
use super::state::AttemptState;
use crate::provider::Wire;

const KEY: (u64, u64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);

fn text() -> impl Strategy<Value = String> {
    // Everything a client or a config can put in: separators, escapes, control characters, Unicode.
    prop::string::string_regex("[a-zA-Z0-9 ;=,%&?#/:.\\-_~\"\\\\\r\n\t\u{0}\u{7f}é漢😀]{0,40}").unwrap()
}

/// Deployment ids are never empty (the config loader refuses an empty `model_info.id`).
fn id() -> impl Strategy<Value = String> {
    text().prop_filter("non-empty", |s| !s.is_empty())
}

prop_compose! {
    fn state()(
        hop in 0u32..10, model in text(), origin_group in text(), group in text(), fallback in 0u32..5,
        retries in 0u32..5, tried in prop::collection::vec(id(), 0..4), path in text(), authority in text(),
        start_ms in any::<u64>(), try_budget_ms in prop::option::of(any::<u64>()),
        flags in any::<(bool, bool)>(), chain in 0u8..3, policy in 0u8..4, nonce in any::<u64>(), expires_ms in any::<u64>(),
        body_len in any::<u64>(), body_digest in any::<u64>(), inserted in any::<u32>(),
        payer in prop::option::of(prop::option::of(any::<(u32, u64)>())),
    ) -> AttemptState {
        AttemptState {
            hop, model, origin_group, group, fallback, retries, tried, path, authority, start_ms, try_budget_ms,
            can_failover: flags.0, can_context_failover: flags.1,
            chain: match chain { 0 => Chain::Regular, 1 => Chain::ContextWindow, _ => Chain::ContentPolicy },
            policy_failover: match policy { 0 => None, 1 => Some(Wire::OpenAi), 2 => Some(Wire::Azure), _ => Some(Wire::Anthropic) },
            nonce, expires_ms, body_len, body_digest, inserted,
            payer: payer.map(|p| p.map_or(super::state::Payer::Master, |(index, generation)| super::state::Payer::Key { index, generation })),
        }
    }
}

proptest! {
    #[test]
    fn round_trips_and_stays_header_safe(s in state()) {
        let enc = s.encode(KEY);
        prop_assert!(enc.bytes().all(|b| b.is_ascii_graphic()), "{}", enc);
        prop_assert_eq!(AttemptState::decode(&enc, KEY), Some(s.clone()));
        prop_assert_eq!(AttemptState::decode_unverified(&enc), Some(s));
    }

    #[test]
    fn any_change_is_refused(s in state(), at in any::<prop::sample::Index>(), to in 0x21u8..0x7f) {
        let enc = s.encode(KEY);
        let i = at.index(enc.len());
        prop_assume!(enc.as_bytes()[i] != to);
        let mut bytes = enc.into_bytes();
        bytes[i] = to;
        let tampered = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(AttemptState::decode(&tampered, KEY), None);
    }

    #[test]
    fn another_key_is_refused(s in state(), k0 in any::<u64>(), k1 in any::<u64>()) {
        prop_assume!((k0, k1) != KEY);
        prop_assert_eq!(AttemptState::decode(&s.encode(KEY), (k0, k1)), None);
    }

    #[test]
    fn arbitrary_input_never_panics(raw in ".{0,300}", query in "[a-z=&%0-9;]{0,200}") {
        let _ = AttemptState::decode(&raw, KEY);
        let _ = AttemptState::decode_unverified(&raw);
        let _ = FailureReport::from_query(&raw);
        let _ = FailureReport::from_query(&query);
    }

    #[test]
    fn the_location_carries_the_state_and_report_intact(
        s in state(), status in 0u16..600, ra in prop::option::of(any::<u64>()), cw in any::<bool>(), cp in any::<bool>(), authority in text(),
    ) {
        let enc = s.encode(KEY);
        let report = FailureReport { status, retry_after_ms: ra, context_window: cw, content_policy: cp };
        let loc = failover_location(&authority, &enc, &report);
        prop_assert!(loc.bytes().all(|b| b.is_ascii_graphic()), "{}", loc);
        let query = loc.split_once('?').map(|(_, q)| q).unwrap_or("");
        prop_assert_eq!(FailureReport::from_query(query), Some((report, enc.clone())));
        // The authority cannot smuggle a path, query or fragment into the URL.
        let rest = loc.strip_prefix("http://").unwrap_or("");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        prop_assert!(!host.contains('?') && !host.contains('#') && !host.contains('@'), "{}", loc);
        prop_assert!(path.starts_with(super::FAILOVER_PATH), "{}", loc);
    }
}
