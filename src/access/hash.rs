//! The one way a virtual key is stored and compared: its SHA-256, as LiteLLM stores it
//! (`hash_token` in `litellm/proxy/_types.py`: `hashlib.sha256(token.encode()).hexdigest()`),
//! so hashes exported from a LiteLLM database match the `sk-...` keys clients already hold.
//!
//! The config keeps only the 32 digest bytes; a presented key is hashed once per request, looked
//! up by digest, and the digest found is compared again in constant time (the map lookup's own
//! comparison is not, and this keeps the check independent of the map's implementation).
//!
//! Size (measured with `scripts/build`, wasm-opt -O3): `sha2` (RustCrypto, no default features,
//! the portable implementation on wasm32) is ≈ 9.4 kB of the optimised `llm_router.wasm`; virtual
//! keys as a whole took it from 454,252 to 492,579 bytes (+38 kB: the `keys`/`teams` loader and the
//! policy compiler are configure-time code; the request path adds the digest, one map lookup and
//! a few set lookups).

use sha2::{Digest, Sha256};

/// A key's SHA-256 digest.
pub type KeyHash = [u8; 32];

/// SHA-256 of the key's UTF-8 bytes.
pub fn key_hash(raw: &str) -> KeyHash {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(raw.as_bytes()));
    out
}

/// Parses LiteLLM's stored form: 64 hex digits (either case).
pub fn parse_hex(text: &str) -> Option<KeyHash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_value(*pair.first()?)?;
        let lo = hex_value(*pair.get(1)?)?;
        *out.get_mut(i)? = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Equality of two digests in time independent of where they differ.
pub fn same(a: &KeyHash, b: &KeyHash) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_litellm_hash_token() {
        assert_eq!(Some(key_hash("sk-1234")), parse_hex(SK_1234_SHA256));
        assert_ne!(key_hash("sk-1234"), key_hash("sk-1235"));
    }

    /// `hashlib.sha256(b"sk-1234").hexdigest()`.
    const SK_1234_SHA256: &str = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b";

    #[test]
    fn hex_must_be_64_hex_digits() {
        assert!(parse_hex(SK_1234_SHA256).is_some());
        assert!(parse_hex(&SK_1234_SHA256.to_uppercase()).is_some());
        assert!(parse_hex(&SK_1234_SHA256[..63]).is_none());
        assert!(parse_hex(&format!("{}0", SK_1234_SHA256)).is_none());
        assert!(parse_hex(&SK_1234_SHA256.replace('8', "g")).is_none());
        assert!(parse_hex("sk-1234").is_none());
    }

    #[test]
    fn same_compares_every_byte() {
        let a = key_hash("a");
        let mut b = a;
        assert!(same(&a, &b));
        b[31] ^= 1;
        assert!(!same(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!same(&a, &b));
    }
}
