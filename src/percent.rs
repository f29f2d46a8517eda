//! Percent-encoding, the one place client and config strings become URL or header syntax.
//! Each caller says which bytes it keeps as they are; everything else becomes `%XX`, so a
//! string can never add a path segment, a query, a fragment or a header line.

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Unreserved characters (RFC 3986): the query-value and path-segment alphabet.
pub const UNRESERVED: &[u8] = b"-._~";

/// Appends `s` to `out`, keeping ASCII letters, digits and the bytes in `keep`.
pub fn encode_into(s: &str, keep: &[u8], out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
            out.push(char::from(HEX.get(usize::from(b & 15)).copied().unwrap_or(b'0')));
        }
    }
}

/// Decodes `%XX` escapes; None for a malformed escape or bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| char::from(*c).to_digit(16))?;
            let lo = bytes.get(i + 2).and_then(|c| char::from(*c).to_digit(16))?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_the_caller_allows() {
        let mut out = String::new();
        encode_into("a/b?c d%é", UNRESERVED, &mut out);
        assert_eq!(out, "a%2Fb%3Fc%20d%25%C3%A9");
        assert_eq!(decode(&out).as_deref(), Some("a/b?c d%é"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%C3"), None, "not UTF-8");
    }
}
