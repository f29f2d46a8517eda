//! The attempt state the router carries across Envoy internal redirects.
//!
//! A failover pass runs in a new stream that sees only headers and the (already rewritten)
//! body, so everything the next pass needs travels in one request header, signed with a
//! per-VM key: an internal redirect is replayed on the same worker, hence the same VM, so the
//! key never has to leave it. A client-sent state header fails verification and is ignored.
//!
//! A verified state is still not enough to be trusted: it is bound to the request it was
//! issued for (the forwarded body's length and a keyed digest of its ends, see
//! [`body_fingerprint`]), carries a deadline (`e=`), and a random nonce that the router
//! accepts once ([`super::SpentStates`]), so a state captured from a log cannot be replayed.

use super::plan::Chain;
use super::siphash::siphash24;
use crate::provider::Wire;

/// Request header carrying the signed state (stripped before it reaches a provider).
pub const STATE_HEADER: &str = "x-llm-router-state";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptState {
    /// Attempts made before this one (0 on the first pass).
    pub hop: u32,
    /// The model name the client asked for.
    pub model: String,
    /// The group the client's model resolved to.
    pub origin_group: String,
    /// The group being tried now (differs from `origin_group` after a fallback).
    pub group: String,
    /// Position in the fallback chain (0 = the origin group).
    pub fallback: u32,
    /// Retries used within `group`.
    pub retries: u32,
    /// Deployment ids already tried, this attempt's included.
    pub tried: Vec<String>,
    /// The client's path and query (the redirect replaces `:path`).
    pub path: String,
    /// The client's `:authority`: redirects go back to the same virtual host.
    pub authority: String,
    /// When this attempt was sent (ms since epoch).
    pub start_ms: u64,
    /// The per-try time budget given to this attempt (ms), if any; tells a timeout from a
    /// refused connection when the redirector answers.
    pub try_budget_ms: Option<u64>,
    /// Another attempt is possible: the upstream side may redirect on failure.
    pub can_failover: bool,
    /// The fallback list this attempt serves from (position `fallback`): `fallbacks`, or
    /// `context_window_fallbacks` / `content_policy_fallbacks` after such a rejection.
    pub chain: Chain,
    /// A context-window fallback remains: the upstream side inspects a 400 for "context too long".
    pub can_context_failover: bool,
    /// A content-policy fallback remains: the upstream side inspects a 400 for a content-policy
    /// violation, in the error shapes of this provider family (the upstream role has no config).
    pub policy_failover: Option<Wire>,
    /// Random, accepted once by the router ([`super::SpentStates`]).
    pub nonce: u64,
    /// After this (ms since epoch) the state is refused.
    pub expires_ms: u64,
    /// [`body_fingerprint`] of the body this attempt forwarded (the body Envoy replays).
    pub body_len: u64,
    pub body_digest: u64,
    /// Bytes this attempt inserted right after the body's opening `{` (its deployment's request
    /// defaults): the next pass removes them first, so one deployment's defaults never look
    /// like the client's own parameters to the next.
    pub inserted: u32,
    /// Who sent the request (its first pass was identified; a failover pass is not): the key
    /// whose limits every pass admits against (a replay counts no request on rpm) and whose
    /// spend it is (`pipeline::spend::payer`). Never the key or its hash: a key index in one
    /// config generation — after a reload the index may name another key, so a pass of another
    /// generation uses none.
    pub payer: Option<Payer>,
}

/// The first pass's caller, as a failover state carries it (see [`AttemptState::payer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payer {
    Master,
    Key { index: u32, generation: u64 },
}

impl Payer {
    fn encode(self) -> String {
        match self {
            Payer::Master => "m".to_string(),
            Payer::Key { index, generation } => format!("k{index}.{generation}"),
        }
    }

    fn decode(v: &str) -> Option<Option<Payer>> {
        match v {
            "" => Some(None),
            "m" => Some(Some(Payer::Master)),
            _ => {
                let (i, g) = v.strip_prefix('k')?.split_once('.')?;
                Some(Some(Payer::Key { index: i.parse().ok()?, generation: g.parse().ok()? }))
            }
        }
    }
}

/// How long a state stays valid after its attempt starts: the attempt's time budget plus
/// slack for the redirect itself, or LiteLLM's default request timeout (600 s) when the
/// attempt has no budget.
pub fn state_ttl_ms(try_budget_ms: Option<u64>) -> u64 {
    match try_budget_ms {
        Some(b) => b.saturating_add(30_000),
        None => 630_000,
    }
}

/// Length and a keyed digest of the first and last 512 bytes of `body`: binds a state to the
/// request it was issued for without hashing a large body on every request.
pub fn body_fingerprint(key: (u64, u64), body: &[u8]) -> (u64, u64) {
    const END: usize = 512;
    let digest = if body.len() <= 2 * END {
        siphash24(key.0, key.1 ^ 0x626f_6479, body)
    } else {
        let head = body.get(..END).unwrap_or(body);
        let tail = body.get(body.len() - END..).unwrap_or(body);
        siphash24(key.0, key.1 ^ 0x626f_6479, head) ^ siphash24(key.1, key.0 ^ 0x7461_696c, tail).rotate_left(1)
    };
    (body.len() as u64, digest)
}

impl AttemptState {
    /// The deployment of the current attempt.
    pub fn current(&self) -> Option<&str> {
        self.tried.last().map(String::as_str)
    }

    /// `k=v;k=v;...;mac=<hex>` with values percent-encoded.
    pub fn encode(&self, key: (u64, u64)) -> String {
        let mut out = String::with_capacity(128);
        let mut push = |k: &str, v: &str| {
            if !out.is_empty() {
                out.push(';');
            }
            out.push_str(k);
            out.push('=');
            percent_encode(v, &mut out);
        };
        push("v", "1");
        push("h", &self.hop.to_string());
        push("m", &self.model);
        push("o", &self.origin_group);
        push("g", &self.group);
        push("f", &self.fallback.to_string());
        push("r", &self.retries.to_string());
        push("t", &self.tried.iter().map(|t| encode_item(t)).collect::<Vec<_>>().join(","));
        push("p", &self.path);
        push("a", &self.authority);
        push("s", &self.start_ms.to_string());
        push("b", &self.try_budget_ms.map(|b| b.to_string()).unwrap_or_default());
        push("c", if self.can_failover { "1" } else { "0" });
        push("x", match self.chain {
            Chain::Regular => "0",
            Chain::ContextWindow => "1",
            Chain::ContentPolicy => "2",
        });
        push("w", if self.can_context_failover { "1" } else { "0" });
        push("k", match self.policy_failover {
            None => "",
            Some(Wire::OpenAi) => "o",
            Some(Wire::Azure) => "z",
            Some(Wire::Anthropic) => "a",
        });
        push("n", &format!("{:016x}", self.nonce));
        push("e", &self.expires_ms.to_string());
        push("l", &self.body_len.to_string());
        push("d", &format!("{:016x}", self.body_digest));
        push("i", &self.inserted.to_string());
        if let Some(p) = self.payer {
            push("u", &p.encode());
        }
        let mac = siphash24(key.0, key.1, out.as_bytes());
        out.push_str(&format!(";mac={mac:016x}"));
        out
    }

    /// Verifies the signature and decodes; None for anything forged, truncated or malformed.
    pub fn decode(value: &str, key: (u64, u64)) -> Option<AttemptState> {
        let (body, mac) = value.rsplit_once(";mac=")?;
        // Exactly as `encode` writes it: one spelling per state (no uppercase or short forms).
        if mac.len() != 16 || !mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mac = u64::from_str_radix(mac, 16).ok()?;
        if siphash24(key.0, key.1, body.as_bytes()) != mac {
            return None;
        }
        Self::parse(body)
    }

    /// Decodes without checking the signature. Only for an upstream role that runs in a VM of
    /// its own (it cannot hold the router's key): the router removes every client-sent state
    /// header, so such a role only sees the router's own, and the router refuses any replayed
    /// pass it cannot verify, so a forged state never leaves with credentials.
    pub fn decode_unverified(value: &str) -> Option<AttemptState> {
        let body = value.rsplit_once(";mac=").map_or(value, |(b, _)| b);
        Self::parse(body)
    }

    /// Whether this state may still be acted on at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms <= self.expires_ms
    }

    fn parse(body: &str) -> Option<AttemptState> {
        let mut s = AttemptState::default();
        let mut version_ok = false;
        for pair in body.split(';') {
            let (k, v) = pair.split_once('=')?;
            let v = percent_decode(v)?;
            match k {
                "v" => version_ok = v == "1",
                "h" => s.hop = v.parse().ok()?,
                "m" => s.model = v,
                "o" => s.origin_group = v,
                "g" => s.group = v,
                "f" => s.fallback = v.parse().ok()?,
                "r" => s.retries = v.parse().ok()?,
                "t" => {
                    s.tried = if v.is_empty() {
                        Vec::new()
                    } else {
                        v.split(',').map(decode_item).collect::<Option<Vec<_>>>()?
                    }
                }
                "p" => s.path = v,
                "a" => s.authority = v,
                "s" => s.start_ms = v.parse().ok()?,
                "b" => s.try_budget_ms = if v.is_empty() { None } else { Some(v.parse().ok()?) },
                "c" => s.can_failover = v == "1",
                "x" => {
                    s.chain = match v.as_str() {
                        "0" => Chain::Regular,
                        "1" => Chain::ContextWindow,
                        "2" => Chain::ContentPolicy,
                        _ => return None,
                    }
                }
                "w" => s.can_context_failover = v == "1",
                "k" => {
                    s.policy_failover = match v.as_str() {
                        "" => None,
                        "o" => Some(Wire::OpenAi),
                        "z" => Some(Wire::Azure),
                        "a" => Some(Wire::Anthropic),
                        _ => return None,
                    }
                }
                "n" => s.nonce = u64::from_str_radix(&v, 16).ok()?,
                "e" => s.expires_ms = v.parse().ok()?,
                "l" => s.body_len = v.parse().ok()?,
                "d" => s.body_digest = u64::from_str_radix(&v, 16).ok()?,
                "i" => s.inserted = v.parse().ok()?,
                "u" => s.payer = Payer::decode(&v)?,
                _ => {}
            }
        }
        version_ok.then_some(s)
    }
}

/// Ids inside the comma-separated list: escape `,` and `%` once more.
fn encode_item(s: &str) -> String {
    s.replace('%', "%25").replace(',', "%2C")
}

fn decode_item(s: &str) -> Option<String> {
    percent_decode(s)
}

/// Percent-encodes everything but unreserved URL characters, `/` and `:` (header-safe).
pub fn percent_encode(s: &str, out: &mut String) {
    crate::percent::encode_into(s, b"-._~/:", out);
}

pub fn percent_decode(s: &str) -> Option<String> {
    crate::percent::decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: (u64, u64) = (0x1234, 0x5678);

    fn sample() -> AttemptState {
        AttemptState {
            hop: 2,
            model: "gpt 4o; \"x\"=1".into(),
            origin_group: "gpt-4o".into(),
            group: "claude/*".into(),
            fallback: 1,
            retries: 1,
            tried: vec!["a,b".into(), "100%".into(), "ü".into()],
            path: "/v1/chat/completions?x=1&y=2".into(),
            authority: "gateway.example:8443".into(),
            start_ms: 1_700_000_000_000,
            try_budget_ms: Some(2_000),
            can_failover: true,
            chain: Chain::ContentPolicy,
            can_context_failover: true,
            policy_failover: Some(Wire::Azure),
            nonce: 0xdead_beef_0123_4567,
            expires_ms: 1_700_000_032_000,
            body_len: 4_096,
            body_digest: 0x0123_4567_89ab_cdef,
            inserted: 37,
            payer: Some(Payer::Key { index: 3, generation: 12 }),
        }
    }

    #[test]
    fn round_trips_awkward_values() {
        let s = sample();
        let enc = s.encode(KEY);
        assert!(enc.bytes().all(|b| b.is_ascii_graphic()), "{enc}");
        assert_eq!(AttemptState::decode(&enc, KEY), Some(s));
        let empty = AttemptState::default();
        assert_eq!(AttemptState::decode(&empty.encode(KEY), KEY), Some(empty));
    }

    #[test]
    fn forged_or_tampered_state_is_rejected() {
        let enc = sample().encode(KEY);
        assert_eq!(AttemptState::decode(&enc, (1, 2)), None);
        let tampered = enc.replace("h=2", "h=0");
        assert_eq!(AttemptState::decode(&tampered, KEY), None);
        assert_eq!(AttemptState::decode("v=1;h=0", KEY), None);
        assert_eq!(AttemptState::decode("", KEY), None);
        assert_eq!(AttemptState::decode(&enc[..enc.len() - 3], KEY), None);
        // The fields that bind the state cannot be changed either.
        for (from, to) in [("e=1700000032000", "e=9700000032000"), ("l=4096", "l=4097"), ("n=deadbeef", "n=deadbeee")] {
            assert!(enc.contains(from), "{enc}");
            assert_eq!(AttemptState::decode(&enc.replace(from, to), KEY), None, "{from}");
        }
    }

    #[test]
    fn deadline_and_fingerprint() {
        let s = sample();
        assert!(s.is_live(s.expires_ms));
        assert!(!s.is_live(s.expires_ms + 1));
        assert_eq!(state_ttl_ms(Some(2_000)), 32_000);
        assert_eq!(state_ttl_ms(None), 630_000);
        let small = br#"{"model":"a"}"#;
        assert_eq!(body_fingerprint(KEY, small), body_fingerprint(KEY, small));
        assert_ne!(body_fingerprint(KEY, small).1, body_fingerprint(KEY, br#"{"model":"b"}"#).1);
        assert_ne!(body_fingerprint(KEY, small), body_fingerprint((9, 9), small));
        let mut big = vec![b' '; 10_000];
        let a = body_fingerprint(KEY, &big);
        if let Some(b) = big.last_mut() {
            *b = b'x';
        }
        assert_ne!(a, body_fingerprint(KEY, &big), "the tail counts");
        if let Some(b) = big.first_mut() {
            *b = b'y';
        }
        assert_eq!(body_fingerprint(KEY, &big).0, 10_000);
    }
}
