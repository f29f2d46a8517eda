//! A minimal JSON object writer for the filter's local replies (model list, health report).
//!
//! Why not `serde_json::to_vec`: the wasm only links serde_json's parser (configs are read, never
//! written); its serializer would add ~20 KB to the module for two small documents. Strings go
//! through the crate's own escaper ([`crate::openai::write_string`]).

use crate::openai::write_string;

/// Writes one JSON object member by member into `out`; [`Obj::end`] closes it.
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn begin(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_string(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let out = self.key(key);
        write_string(out, value);
        self
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, b"null"),
        }
    }

    pub fn num(&mut self, key: &str, value: u64) -> &mut Self {
        let text = value.to_string();
        self.raw(key, text.as_bytes())
    }

    pub fn opt_num(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        match value {
            Some(v) => self.num(key, v),
            None => self.raw(key, b"null"),
        }
    }

    /// A member whose value is already JSON (a nested object or array written by the caller).
    pub fn raw(&mut self, key: &str, json: &[u8]) -> &mut Self {
        self.key(key).extend_from_slice(json);
        self
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// `[a,b,...]` from already-written JSON values.
pub fn array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_escaped_json() {
        let mut inner = Vec::new();
        let mut o = Obj::begin(&mut inner);
        o.num("n", 7);
        o.end();
        let mut out = Vec::new();
        let mut o = Obj::begin(&mut out);
        o.str("s", "a\"b\\\n").opt_str("none", None).opt_num("n", Some(3)).opt_num("m", None);
        o.raw("list", &array(&[inner.clone(), inner]));
        o.end();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v, serde_json::json!({"s": "a\"b\\\n", "none": null, "n": 3, "m": null, "list": [{"n": 7}, {"n": 7}]}));
        assert_eq!(array(&[]), b"[]");
    }
}
