//! Bounds on what one event carries. Event data quotes what callers sent
//! (an exec's command, a file's path), and a request body may be 64 MiB:
//! every event is stored, broadcast to every follower and replayed, so its
//! strings are cut to [`MAX_STRING`] bytes (ending in `…`) and its whole
//! payload to [`MAX_DATA`] bytes, with `"truncated": true` on a cut one.

use serde_json::{Map, Value};

/// Longest string in event data, in bytes (before the `…` that marks a
/// cut one).
pub const MAX_STRING: usize = 4 * 1024;
/// Largest event data, as JSON.
pub const MAX_DATA: usize = 16 * 1024;
/// Most items of one array, or entries of one object, kept.
const MAX_ITEMS: usize = 64;
/// Deeper values are replaced by `"…"` (event data is a flat object).
const MAX_DEPTH: usize = 8;

/// `data` within the bounds: unchanged when it already was, else cut and,
/// when it is an object, marked `"truncated": true`.
pub fn cap(data: Value) -> Value {
    let mut data = data;
    let mut limit = MAX_STRING;
    let mut cut = false;
    loop {
        cut |= shrink(&mut data, limit, 0);
        if json_len(&data) <= MAX_DATA {
            break;
        }
        if limit <= 64 {
            // Too many fields even with short strings: say so, and no more.
            data = Value::Object(Map::new());
            cut = true;
            break;
        }
        limit /= 4;
    }
    if cut {
        match &mut data {
            Value::Object(m) => {
                m.insert("truncated".into(), Value::Bool(true));
            }
            other => *other = serde_json::json!({ "truncated": true }),
        }
    }
    data
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// Cuts strings past `limit` bytes, arrays and objects past [`MAX_ITEMS`]
/// and anything past [`MAX_DEPTH`]; whether anything was cut.
fn shrink(v: &mut Value, limit: usize, depth: usize) -> bool {
    if depth >= MAX_DEPTH && (v.is_array() || v.is_object()) {
        *v = Value::String("…".into());
        return true;
    }
    match v {
        Value::String(s) if s.len() > limit => {
            let mut end = limit;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
            true
        }
        Value::Array(items) => {
            let mut cut = items.len() > MAX_ITEMS;
            items.truncate(MAX_ITEMS);
            for i in items {
                cut |= shrink(i, limit, depth + 1);
            }
            cut
        }
        Value::Object(m) => {
            let mut cut = false;
            if m.len() > MAX_ITEMS {
                let extra: Vec<String> = m.keys().skip(MAX_ITEMS).cloned().collect();
                for k in extra {
                    m.remove(&k);
                }
                cut = true;
            }
            for (_, i) in m.iter_mut() {
                cut |= shrink(i, limit, depth + 1);
            }
            cut
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_data_is_untouched() {
        let d = json!({"command": "echo hi", "exit_code": 0, "stream": true});
        assert_eq!(cap(d.clone()), d);
    }

    #[test]
    fn long_strings_are_cut_on_a_character_and_marked() {
        let d = cap(json!({"command": "é".repeat(10_000), "exit_code": 3}));
        let s = d["command"].as_str().expect("string");
        assert!(s.ends_with('…'));
        assert!(s.len() <= MAX_STRING + '…'.len_utf8(), "{}", s.len());
        assert_eq!(
            (d["exit_code"].clone(), d["truncated"].clone()),
            (json!(3), json!(true))
        );
    }

    #[test]
    fn the_whole_payload_is_bounded() {
        // Many strings each under the string cap, together far over.
        let many: Map<String, Value> = (0..60)
            .map(|i| (format!("k{i}"), Value::String("x".repeat(4000))))
            .collect();
        let d = cap(Value::Object(many));
        assert!(json_len(&d) <= MAX_DATA, "{}", json_len(&d));
        assert_eq!(d["truncated"], true);
        assert!(d["k59"].as_str().expect("kept").ends_with('…'));
        // Deep, wide or not an object at all.
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert!(json_len(&cap(json!({ "deep": deep }))) <= MAX_DATA);
        let wide: Vec<Value> = (0..100_000).map(Value::from).collect();
        let d = cap(json!({ "wide": wide }));
        assert_eq!(d["wide"].as_array().map(Vec::len), Some(MAX_ITEMS));
        assert_eq!(cap(json!("y".repeat(MAX_DATA * 2)))["truncated"], true);
    }
}
