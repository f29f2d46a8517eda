//! Byte-level JSON string handling shared by the scanner and its callers.
//!
//! Why this exists: string contents are most of a chat request's bytes, so
//! skipping them must be fast (eight bytes per step, SWAR), while escapes,
//! `\u` surrogate pairs and UTF-8 must still be validated exactly so that
//! every `&str` handed out is sound. Keeping these rules in one place means
//! the scanner, `decode_string` and `Member::key_is` can never disagree on
//! what a string means.

use std::borrow::Cow;

use super::json_scan::ScanError;

/// Decodes a JSON string token (including its quotes) into text. Borrows when
/// the token has no escapes. Handles `\uXXXX` including surrogate pairs; lone
/// surrogates, bad escapes, raw control characters and invalid UTF-8 are
/// errors (offsets relative to `token`).
///
/// # Errors
/// When `token` is not a well-formed JSON string literal.
pub fn decode_string(token: &[u8]) -> Result<Cow<'_, str>, ScanError> {
    let content = token
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .ok_or(ScanError::at(0, "not a JSON string token"))?;
    decode_content(content, 1)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Byte that ends the fast skip inside a string: `"`, `\`, < 0x20 or >= 0x80.
#[inline]
fn is_string_special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c.wrapping_sub(0x20) >= 0x60
}

/// Whether any byte of `w` is special (no false negatives; false positives
/// are harmless because the caller re-checks byte by byte).
#[inline]
fn word_has_special(w: u64) -> bool {
    let quote = w ^ (ONES * u64::from(b'"'));
    let bslash = w ^ (ONES * u64::from(b'\\'));
    let found = (quote.wrapping_sub(ONES) & !quote)
        | (bslash.wrapping_sub(ONES) & !bslash)
        | (w.wrapping_sub(ONES * 0x20) & !w)
        | w;
    found & HIGHS != 0
}

/// Index of the first special byte at or after `i`.
#[inline]
pub(super) fn find_string_special(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(chunk) = b.get(i..i.saturating_add(8)) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        if word_has_special(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| is_string_special(c))
        .map(|p| i + p)
}

/// Length of the well-formed UTF-8 sequence starting at `i` (Unicode Table 3-7:
/// no overlongs, no surrogates, max U+10FFFF), or `None`.
pub(super) fn utf8_char_len(b: &[u8], i: usize) -> Option<usize> {
    let (len, lo, hi) = match *b.get(i)? {
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return None,
    };
    let second = *b.get(i + 1)?;
    if second < lo || second > hi {
        return None;
    }
    let rest = b.get(i + 2..i + len)?;
    rest.iter().all(|&c| c & 0xC0 == 0x80).then_some(len)
}

/// Decodes the escape whose backslash is at `s[i]`; returns the character and
/// the number of bytes consumed. Error offsets are indices into `s`.
pub(super) fn decode_escape(s: &[u8], i: usize) -> Result<(char, usize), ScanError> {
    let c = match s.get(i + 1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => return decode_unicode_escape(s, i),
        Some(_) => return Err(ScanError::at(i, "invalid escape sequence")),
        None => return Err(ScanError::at(i, "unterminated escape sequence")),
    };
    Ok((c, 2))
}

fn hex4(s: &[u8], at: usize) -> Option<u32> {
    s.get(at..at + 4)?.iter().try_fold(0u32, |acc, &b| {
        let digit = char::from(b).to_digit(16)?;
        Some((acc << 4) | digit)
    })
}

fn decode_unicode_escape(s: &[u8], i: usize) -> Result<(char, usize), ScanError> {
    const BAD_HEX: &str = "invalid \\u escape: expected 4 hex digits";
    const LONE: &str = "lone surrogate in \\u escape";
    let first = hex4(s, i + 2).ok_or(ScanError::at(i, BAD_HEX))?;
    let (code, len) = match first {
        0xD800..=0xDBFF => {
            if s.get(i + 6) != Some(&b'\\') || s.get(i + 7) != Some(&b'u') {
                return Err(ScanError::at(i, LONE));
            }
            let second = hex4(s, i + 8).ok_or(ScanError::at(i + 6, BAD_HEX))?;
            if !(0xDC00..=0xDFFF).contains(&second) {
                return Err(ScanError::at(i, LONE));
            }
            (0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00), 12)
        }
        0xDC00..=0xDFFF => return Err(ScanError::at(i, LONE)),
        _ => (first, 6),
    };
    char::from_u32(code)
        .map(|c| (c, len))
        .ok_or(ScanError::at(i, LONE))
}

fn utf8_at(bytes: &[u8], base: usize) -> Result<&str, ScanError> {
    std::str::from_utf8(bytes)
        .map_err(|e| ScanError::at(base + e.valid_up_to(), "invalid UTF-8 in string"))
}

/// Decodes string content (between the quotes). `base` is added to offsets.
pub(super) fn decode_content(content: &[u8], base: usize) -> Result<Cow<'_, str>, ScanError> {
    let needs_work = |c: &u8| *c == b'\\' || *c == b'"' || *c < 0x20;
    let Some(mut i) = content.iter().position(needs_work) else {
        return utf8_at(content, base).map(Cow::Borrowed);
    };
    let mut out = String::with_capacity(content.len());
    let mut seg_start = 0;
    loop {
        match content.get(i).copied() {
            Some(b'\\') => {
                out.push_str(utf8_at(
                    content.get(seg_start..i).unwrap_or(&[]),
                    base + seg_start,
                )?);
                let (c, len) = decode_escape(content, i)
                    .map_err(|e| ScanError::at(base + e.offset, e.reason))?;
                out.push(c);
                i += len;
                seg_start = i;
            }
            Some(b'"') => return Err(ScanError::at(base + i, "unescaped '\"' inside string")),
            Some(_) => {
                return Err(ScanError::at(
                    base + i,
                    "unescaped control character in string",
                ))
            }
            None => break,
        }
        match content
            .get(i..)
            .and_then(|rest| rest.iter().position(needs_work))
        {
            Some(p) => i += p,
            None => break,
        }
    }
    out.push_str(utf8_at(
        content.get(seg_start..).unwrap_or(&[]),
        base + seg_start,
    )?);
    Ok(Cow::Owned(out))
}

/// Compares escaped key bytes with `name` without allocating.
pub(super) fn unescaped_eq(raw: &[u8], name: &[u8]) -> bool {
    let mut i = 0;
    let mut j = 0;
    while let Some(&c) = raw.get(i) {
        if c == b'\\' {
            let Ok((ch, len)) = decode_escape(raw, i) else {
                return false;
            };
            let mut buf = [0u8; 4];
            let enc = ch.encode_utf8(&mut buf).as_bytes();
            if name.get(j..j + enc.len()) != Some(enc) {
                return false;
            }
            i += len;
            j += enc.len();
        } else {
            if name.get(j) != Some(&c) {
                return false;
            }
            i += 1;
            j += 1;
        }
    }
    j == name.len()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[test]
    fn decode_string_cases() {
        assert!(matches!(
            decode_string(b"\"plain\""),
            Ok(Cow::Borrowed("plain"))
        ));
        assert!(matches!(
            decode_string("\"\u{e9}\u{4E2D}\"".as_bytes()),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(decode_string(b"\"\"").unwrap(), "");
        let d = decode_string(br#""a\"b\\c\/d\be\ff\ng\rh\ti\u0041\u00e9\ud83d\ude00""#).unwrap();
        assert!(matches!(d, Cow::Owned(_)));
        assert_eq!(d, "a\"b\\c/d\u{8}e\u{c}f\ng\rh\tiA\u{e9}\u{1F600}");
        for bad in [
            &b"plain"[..],
            b"\"",
            b"\"abc",
            b"abc\"",
            br#""\ud800""#,
            br#""\udc00""#,
            br#""\ud800\u0041""#,
            br#""\ud83d""#,
            br#""\x""#,
            br#""\u00G0""#,
            br#""\u00""#,
            br#""\""#,
            b"\"a\"b\"",
            b"\"a\nb\"",
            b"\"\xff\"",
            b"\"x\\n\xff\"",
        ] {
            assert!(
                decode_string(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let e = decode_string(b"\"ab\\q\"").unwrap_err();
        assert_eq!(e.offset, 3);
    }

    #[test]
    fn find_string_special_matches_naive_search() {
        let mut buf = vec![b'a'; 40];
        for pos in 0..40 {
            for b in 0..=255u8 {
                buf[pos] = b;
                for from in [0, 1, 7, 8, 9] {
                    let naive = buf
                        .iter()
                        .enumerate()
                        .skip(from)
                        .find(|(_, &c)| c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c))
                        .map(|(i, _)| i);
                    assert_eq!(
                        find_string_special(&buf, from),
                        naive,
                        "pos {pos} byte {b:#x} from {from}"
                    );
                }
                buf[pos] = b'a';
            }
        }
        assert_eq!(find_string_special(b"abc", 3), None);
        assert_eq!(find_string_special(b"abc", 99), None);
    }

    #[test]
    fn utf8_char_len_matches_std() {
        let mut seqs: Vec<Vec<u8>> = Vec::new();
        for b0 in 0x80..=0xFFu8 {
            for b1 in 0..=0xFFu8 {
                seqs.push(vec![b0, b1]);
                for b2 in [0x00, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0] {
                    seqs.push(vec![b0, b1, b2]);
                    for b3 in [0x7F, 0x80, 0xBF, 0xC0] {
                        seqs.push(vec![b0, b1, b2, b3]);
                    }
                }
            }
        }
        for seq in &seqs {
            let std_len =
                (2..=4).find(|&n| seq.len() >= n && std::str::from_utf8(&seq[..n]).is_ok());
            assert_eq!(utf8_char_len(seq, 0), std_len, "{seq:x?}");
        }
    }

    #[test]
    fn unescaped_eq_rejects_malformed_escapes() {
        assert!(!unescaped_eq(br"\u00", br"\u00"));
        assert!(!unescaped_eq(br"\q", b"q"));
        assert!(unescaped_eq(br"a\nb", b"a\nb"));
        assert!(!unescaped_eq(br"ab", b"abc"));
    }
}
