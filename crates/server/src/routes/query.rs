//! Query strings whose values are bytes: a guest path need not be UTF-8,
//! so values are percent-decoded to raw bytes (not lossily to text, as
//! form decoders do), and repeated keys are all kept (`paths[]=a&paths[]=b`).

use percent_encoding::percent_decode;

/// `%XX` decoding to bytes, with `+` as a space (query-string form).
fn decode(s: &str) -> Vec<u8> {
    let spaced = s.replace('+', " ");
    percent_decode(spaced.as_bytes()).collect()
}

/// A query string's pairs in order, decoded; values stay bytes so a guest
/// path that is not UTF-8 survives, and repeated keys are all kept.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, Vec<u8>)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (String::from_utf8_lossy(&decode(k)).into_owned(), decode(v))
            })
            .collect();
        Params(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of any of `keys`, in query order.
    pub fn all(&self, keys: &[&str]) -> Vec<&[u8]> {
        self.0
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeated_keys_and_raw_bytes() {
        let q = Params::parse(Some(
            "paths%5B%5D=/a&paths[]=/b%20c&x=1&paths[]=/d+e&path=/%FF",
        ));
        assert_eq!(
            q.all(&["paths[]"]),
            [b"/a".as_slice(), b"/b c".as_slice(), b"/d e".as_slice()]
        );
        assert_eq!(q.get("x"), Some(b"1".as_slice()));
        assert_eq!(q.get("path"), Some(b"/\xff".as_slice()));
        assert_eq!(q.get("missing"), None);
        assert!(Params::parse(None).0.is_empty());
        // A stray or truncated escape stays as written.
        let q = Params::parse(Some("a=/a%zz%4&b=/a+b"));
        assert_eq!(q.get("a"), Some(b"/a%zz%4".as_slice()));
        assert_eq!(
            q.get("b"),
            Some(b"/a b".as_slice()),
            "+ is a space in a query"
        );
    }
}
