//! Virtual keys bound to who the caller *is* rather than what it holds: the caller's mesh
//! identity (the URI SAN of the client certificate Envoy verified on an mTLS listener, Istio's
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`) or the issuer and subject of
//! a JWT that Envoy's `jwt_authn` filter verified and put into dynamic metadata. Mesh workloads
//! then need no shared secret.
//!
//! Only what Envoy itself established is read, never a request header: the properties below are
//! set by Envoy's TLS stack and by `jwt_authn` (measured on Envoy 1.40, `docs/identity-facts.md`),
//! and a client cannot write them. Matching is exact (byte for byte), through maps built at
//! configure time: one hash-map lookup per asserted identity, whatever the number of keys. The
//! values are untrusted-length strings: anything over [`MAX_IDENTITY_BYTES`], not UTF-8, or
//! holding control characters or spaces matches nothing (and is never logged).
//!
//! Size (`scripts/build`, wasm-opt -O3): the bindings (config parsing, the two maps, the header
//! phase's reads) took `llm_router.wasm` from 549,411 to 560,729 bytes (+11 kB, measured against
//! main at 770c0d4).

use std::collections::HashMap;

/// Longest principal, issuer or subject compared (a SPIFFE ID is at most 2048 bytes).
pub const MAX_IDENTITY_BYTES: usize = 2048;

/// The first URI SAN of the peer certificate (empty/absent on plain text or without a
/// client certificate).
pub const PRINCIPAL_PROPERTY: [&str; 2] = ["connection", "uri_san_peer_certificate"];
/// The verified JWT payload's claims as `jwt_authn` stores them with `payload_in_metadata:
/// payload` (the name Istio's RequestAuthentication uses): a string claim reads as its bytes.
pub const JWT_ISS_PROPERTY: [&str; 5] = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "iss"];
pub const JWT_SUB_PROPERTY: [&str; 5] = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "sub"];

/// What Envoy asserted about the caller for this request (borrowed from the property reads).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Peer<'a> {
    /// The verified peer certificate's URI SAN.
    pub principal: Option<&'a str>,
    /// The verified JWT's `iss` and `sub`.
    pub jwt: Option<(&'a str, &'a str)>,
}

impl Peer<'_> {
    pub fn is_empty(&self) -> bool {
        self.principal.is_none() && self.jwt.is_none()
    }
}

/// Which key an asserted identity selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    None,
    Key(usize),
    /// The mesh principal and the JWT name different keys: neither is chosen.
    Ambiguous,
}

/// The bindings of every key, by value (built once per config).
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    by_principal: HashMap<String, usize>,
    /// issuer → subject → key.
    by_jwt: HashMap<String, HashMap<String, usize>>,
}

impl Bindings {
    /// Binds `principal` to key `key`; Err(the key that already has it).
    pub fn bind_principal(&mut self, principal: &str, key: usize) -> Result<(), usize> {
        match self.by_principal.get(principal) {
            Some(&first) => Err(first),
            None => {
                self.by_principal.insert(principal.to_string(), key);
                Ok(())
            }
        }
    }

    /// Binds the JWT subject `(iss, sub)` to key `key`; Err(the key that already has it).
    pub fn bind_jwt(&mut self, iss: &str, sub: &str, key: usize) -> Result<(), usize> {
        let subjects = self.by_jwt.entry(iss.to_string()).or_default();
        match subjects.get(sub) {
            Some(&first) => Err(first),
            None => {
                subjects.insert(sub.to_string(), key);
                Ok(())
            }
        }
    }

    /// Some key is bound to a mesh principal: the header phase reads the peer certificate's SAN.
    pub fn needs_principal(&self) -> bool {
        !self.by_principal.is_empty()
    }

    /// Some key is bound to a JWT subject: the header phase reads the verified payload.
    pub fn needs_jwt(&self) -> bool {
        !self.by_jwt.is_empty()
    }

    /// The key the asserted identities select: exactly one key, or none.
    pub fn lookup(&self, peer: &Peer<'_>) -> Match {
        let by_principal = peer.principal.filter(|p| is_value(p)).and_then(|p| self.by_principal.get(p).copied());
        let by_jwt = peer
            .jwt
            .filter(|(iss, sub)| is_value(iss) && is_value(sub))
            .and_then(|(iss, sub)| self.by_jwt.get(iss).and_then(|s| s.get(sub)).copied());
        match (by_principal, by_jwt) {
            (None, None) => Match::None,
            (Some(k), None) | (None, Some(k)) => Match::Key(k),
            (Some(a), Some(b)) if a == b => Match::Key(a),
            (Some(_), Some(_)) => Match::Ambiguous,
        }
    }
}

/// A comparable identity value: 1 to [`MAX_IDENTITY_BYTES`] bytes, no whitespace or control
/// characters (a SPIFFE ID, an issuer URL and a subject have none).
pub fn is_value(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_IDENTITY_BYTES && !v.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// A property's bytes as an identity value, or None (absent, empty, too long, not UTF-8, or not
/// a value: a JWT claim that is a number or a list arrives in proxy-wasm's binary encoding).
pub fn property_value(bytes: Option<&[u8]>) -> Option<&str> {
    let bytes = bytes.filter(|b| !b.is_empty() && b.len() <= MAX_IDENTITY_BYTES)?;
    std::str::from_utf8(bytes).ok().filter(|v| is_value(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "spiffe://cluster.local/ns/research/sa/app";
    const B: &str = "spiffe://cluster.local/ns/finance/sa/app";

    fn bindings() -> Bindings {
        let mut b = Bindings::default();
        assert_eq!(b.bind_principal(A, 0), Ok(()));
        assert_eq!(b.bind_principal(B, 1), Ok(()));
        assert_eq!(b.bind_jwt("https://idp", "research-app", 0), Ok(()));
        assert_eq!(b.bind_jwt("https://idp", "finance-app", 1), Ok(()));
        assert_eq!(b.bind_jwt("https://other", "research-app", 2), Ok(()));
        b
    }

    #[test]
    fn exact_matches_select_one_key() {
        let b = bindings();
        let peer = |principal, jwt| Peer { principal, jwt };
        assert_eq!(b.lookup(&peer(Some(A), None)), Match::Key(0));
        assert_eq!(b.lookup(&peer(Some(B), None)), Match::Key(1));
        assert_eq!(b.lookup(&peer(None, Some(("https://idp", "finance-app")))), Match::Key(1));
        assert_eq!(b.lookup(&peer(None, Some(("https://other", "research-app")))), Match::Key(2), "the issuer is part of the subject");
        assert_eq!(b.lookup(&peer(Some(A), Some(("https://idp", "research-app")))), Match::Key(0), "both name the same key");
        assert_eq!(b.lookup(&peer(Some(A), Some(("https://idp", "finance-app")))), Match::Ambiguous);
        assert_eq!(b.lookup(&peer(Some(A), Some(("https://idp", "nobody")))), Match::Key(0), "an unbound JWT does not veto a bound certificate");
        for miss in [
            "spiffe://cluster.local/ns/research/sa/app/",
            "SPIFFE://cluster.local/ns/research/sa/app",
            "spiffe://cluster.local/ns/research/sa/ap",
            "spiffe://cluster.local/ns/research/sa/*",
            "",
        ] {
            assert_eq!(b.lookup(&peer(Some(miss), None)), Match::None, "{miss}");
        }
        assert_eq!(b.lookup(&peer(None, Some(("https://idp/", "research-app")))), Match::None);
        assert_eq!(b.lookup(&Peer::default()), Match::None);
        assert!(b.needs_principal() && b.needs_jwt() && !Bindings::default().needs_principal() && !Bindings::default().needs_jwt());
    }

    #[test]
    fn a_value_is_bound_once() {
        let mut b = bindings();
        assert_eq!(b.bind_principal(A, 5), Err(0));
        assert_eq!(b.bind_jwt("https://idp", "research-app", 5), Err(0));
        assert_eq!(b.lookup(&Peer { principal: Some(A), jwt: None }), Match::Key(0), "the first binding stays");
    }

    #[test]
    fn property_values_are_bounded_text() {
        assert_eq!(property_value(Some(A.as_bytes())), Some(A));
        assert_eq!(property_value(None), None);
        assert_eq!(property_value(Some(b"")), None, "plain text / no certificate");
        assert_eq!(property_value(Some(&[0, 0, 0, 0, 0, 0, 0x14, 0x40])), None, "a numeric claim (a double)");
        assert_eq!(property_value(Some(&[0xff, 0xfe])), None, "not UTF-8");
        assert_eq!(property_value(Some(b"a b")), None);
        let long = "s".repeat(MAX_IDENTITY_BYTES + 1);
        assert_eq!(property_value(Some(long.as_bytes())), None);
        let max = "s".repeat(MAX_IDENTITY_BYTES);
        assert_eq!(property_value(Some(max.as_bytes())), Some(max.as_str()));
        let b = bindings();
        assert_eq!(b.lookup(&Peer { principal: Some(&long), jwt: Some((&long, "x")) }), Match::None);
    }
}
