//! The OpenAPI document's request schemas against the server that serves
//! them: whatever the document allows must pass the server's checks, and
//! whatever it rules out must be refused by them. This is the schema
//! fuzzer made permanent: a schema looser than its handler (documented as
//! free-form, a range or enum the handler narrows, a field it requires)
//! fails here, and so does one stricter than its handler (a bound it does
//! not enforce), so the two cannot drift apart.
//!
//! The server is a real one on the fake VMM (`common::TestServer`). Every
//! request names a sandbox that does not exist (`sbx_nope`): the handlers
//! validate first and only then look the sandbox up, so an accepted body
//! answers 404 and a refused one 422 `validation_error`, and nothing runs.
//! Routes that create something at the top level (sandboxes, templates,
//! API keys) really create it; VM boots fail fast (`fail_boot`), so a
//! created sandbox answers 500 `sandbox_start_failed`, which still means
//! its body passed. `POST /sandbox-templates/validate` answers a bad spec
//! with `200 {valid: false}`: that counts as refused.
//!
//! What it covers, for every operation with a JSON request body:
//! - the minimal body (required fields only, each at its documented
//!   minimum, first enum value or first alternative, strings from their
//!   example or the shortest candidate matching their pattern) passes;
//! - each optional field at its minimal value passes;
//! - each documented edge passes: a number's `minimum` and `maximum`,
//!   every `enum` value, an array of `maxItems` items;
//! - just outside each documented bound is refused: `minimum - 1`,
//!   `maximum + 1`, a string one shorter than `minLength` or one longer
//!   than `maxLength`, `maxItems + 1` items, a value not in the `enum`, a
//!   value of another JSON type (`null` where the field is not nullable),
//!   strings from a fixed list that do not match the field's `pattern`
//!   (tried with the `regex` crate), map keys that do not match
//!   `propertyNames`;
//! - a body without a required field, without any of an `anyOf`'s
//!   required alternatives, with fields a `not` forbids together, or with
//!   an unknown field where `additionalProperties` is `false` is refused;
//!   elsewhere an unknown field passes (API.md: unknown fields are
//!   ignored);
//! - nested objects, arrays, maps, `oneOf` branches and `$ref`s are probed
//!   the same way, in place in the minimal body.
//!
//! And for every query parameter with a `minimum`, `maximum`, `enum` or
//! `pattern`: its edges pass and just outside them is refused.
//!
//! Not covered: rules the document states only in prose (byte lengths of
//! non-ASCII text, `..` path components, the 16 KiB metadata cap,
//! host-dependent size limits), and the per-file checks of `write-many`,
//! which are reported per file rather than refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestServer;
use regex::Regex;
use serde_json::{json, Map, Value};

const FILE: &str = include_str!("../openapi.json");

/// Strings tried against a field's `pattern`, `minLength` and
/// `maxLength`: those a pattern rules out must be refused.
const CANDIDATES: &[&str] = &[
    "a",
    "A",
    "0",
    "/a",
    "/",
    "",
    " ",
    "-x",
    "1BAD",
    "a,b",
    "a=b",
    "x\u{0}y",
    "bad\u{7}",
    "rel/path",
    "Root;",
    "web app",
    "SIGNOPE",
    "0855",
    "70000",
    "443",
    "8000-8100",
    "0644",
    "x-y",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Pass,
    Refuse,
}

#[derive(Debug, Clone)]
struct Probe {
    value: Value,
    expect: Expect,
    why: String,
}

impl Probe {
    fn pass(value: Value, why: impl Into<String>) -> Probe {
        Probe {
            value,
            expect: Expect::Pass,
            why: why.into(),
        }
    }
    fn refuse(value: Value, why: impl Into<String>) -> Probe {
        Probe {
            value,
            expect: Expect::Refuse,
            why: why.into(),
        }
    }
    fn at(mut self, field: &str) -> Probe {
        self.why = format!("{field}: {}", self.why);
        self
    }
}

struct Schemas<'a> {
    doc: &'a Value,
    patterns: std::cell::RefCell<BTreeMap<String, Regex>>,
}

impl<'a> Schemas<'a> {
    fn new(doc: &'a Value) -> Schemas<'a> {
        Schemas {
            doc,
            patterns: Default::default(),
        }
    }

    /// `s` with `$ref`s (and one-element `allOf`s) followed.
    fn resolve(&self, s: &'a Value) -> &'a Value {
        if let Some(r) = s["$ref"].as_str() {
            let pointer = r.strip_prefix('#').expect("local $ref");
            return self.resolve(self.doc.pointer(pointer).expect("$ref resolves"));
        }
        match s["allOf"].as_array() {
            Some(all) if all.len() == 1 => self.resolve(&all[0]),
            _ => s,
        }
    }

    fn matches(&self, pattern: &str, s: &str) -> bool {
        let mut cache = self.patterns.borrow_mut();
        let re = cache
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).expect("documented pattern compiles"));
        re.is_match(s)
    }

    /// The JSON types `s` allows, across `oneOf` branches (`None`: any).
    fn types(&self, s: &'a Value) -> Option<BTreeSet<String>> {
        let s = self.resolve(s);
        if let Some(branches) = s["oneOf"].as_array().or(s["anyOf"].as_array()) {
            if s.get("type").is_none() {
                let mut all = BTreeSet::new();
                for b in branches {
                    all.extend(self.types(b)?);
                }
                return Some(all);
            }
        }
        if let Some(c) = s.get("const") {
            return Some([type_of(c).to_string()].into());
        }
        match &s["type"] {
            Value::String(t) => Some([t.clone()].into()),
            Value::Array(ts) => Some(
                ts.iter()
                    .map(|t| t.as_str().expect("type name").to_string())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// A string `s` allows, of the least length its bounds permit.
    fn string(&self, s: &Value) -> Option<String> {
        let examples = s["examples"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(s.get("example"))
            .filter_map(Value::as_str);
        let mut candidates: Vec<String> = examples.map(str::to_string).collect();
        let min = s["minLength"].as_u64().unwrap_or(0) as usize;
        candidates.push("a".repeat(min));
        candidates.extend(CANDIDATES.iter().map(|c| c.to_string()));
        candidates.into_iter().find(|c| self.string_fits(s, c))
    }

    fn string_fits(&self, s: &Value, c: &str) -> bool {
        let len = c.chars().count() as u64;
        s["minLength"].as_u64().is_none_or(|m| len >= m)
            && s["maxLength"].as_u64().is_none_or(|m| len <= m)
            && s["pattern"].as_str().is_none_or(|p| self.matches(p, c))
            && s["enum"]
                .as_array()
                .is_none_or(|e| e.contains(&Value::String(c.to_string())))
    }

    /// The least value `s` allows.
    fn minimal(&self, s: &'a Value) -> Value {
        let s = self.resolve(s);
        if let Some(c) = s.get("const") {
            return c.clone();
        }
        if let Some(first) = s["enum"].as_array().and_then(|e| e.first()) {
            return first.clone();
        }
        if let Some(branches) = s["oneOf"].as_array() {
            if s.get("type").is_none() {
                let branch = branches
                    .iter()
                    .find(|b| b["type"] != "null")
                    .unwrap_or(&branches[0]);
                return self.minimal(branch);
            }
        }
        let types = self.types(s).unwrap_or_default();
        let ty = ["object", "array", "string", "integer", "number", "boolean"]
            .into_iter()
            .find(|t| types.contains(*t));
        match ty {
            Some("object") => {
                let mut obj = Map::new();
                for r in s["required"].as_array().into_iter().flatten() {
                    let r = r.as_str().expect("required name");
                    obj.insert(r.into(), self.minimal(&s["properties"][r]));
                }
                if let Some(first) = s["anyOf"].as_array().and_then(|a| a.first()) {
                    for r in first["required"].as_array().into_iter().flatten() {
                        let r = r.as_str().expect("required name");
                        let own = &first["properties"][r];
                        let v = if own.is_null() {
                            self.minimal(&s["properties"][r])
                        } else {
                            self.minimal(own)
                        };
                        obj.insert(r.into(), v);
                    }
                }
                Value::Object(obj)
            }
            Some("array") => {
                let n = s["minItems"].as_u64().unwrap_or(0) as usize;
                Value::Array(vec![self.minimal(&s["items"]); n])
            }
            Some("string") => Value::String(
                self.string(s)
                    .unwrap_or_else(|| panic!("no candidate string fits {s}")),
            ),
            Some(t @ ("integer" | "number")) => {
                let n = s["minimum"]
                    .as_f64()
                    .or(s["exclusiveMinimum"].as_f64().map(|m| m + 1.0))
                    .unwrap_or(0.0)
                    .min(s["maximum"].as_f64().unwrap_or(f64::MAX));
                number(t, n)
            }
            Some("boolean") => Value::Bool(false),
            _ => Value::Null,
        }
    }

    /// Values for the place of `s`: what it allows at its edges, and what
    /// lies just outside.
    fn probes(&self, s: &'a Value) -> Vec<Probe> {
        let s = self.resolve(s);
        let mut out = Vec::new();
        if let Some(types) = self.types(s) {
            // serde reads a struct from an array of its fields too (a
            // `#[serde(default)]` one even from `[]`): not probed.
            let is_struct = std::iter::once(s)
                .chain(s["oneOf"].as_array().into_iter().flatten())
                .any(|b| self.resolve(b).get("properties").is_some());
            for wrong in [
                json!("x"),
                json!(1.5),
                json!(7),
                json!(true),
                json!([]),
                json!({}),
                Value::Null,
            ] {
                if is_struct && wrong.is_array() {
                    continue;
                }
                if !allows_type(&types, &wrong) {
                    out.push(Probe::refuse(
                        wrong.clone(),
                        format!("{wrong} is not {types:?}"),
                    ));
                }
            }
        }
        if let Some(branches) = s["oneOf"].as_array().filter(|_| s.get("type").is_none()) {
            for (i, b) in branches.iter().enumerate() {
                let others: Vec<(BTreeSet<String>, bool)> = branches
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter_map(|(_, o)| {
                        let is_struct = self.resolve(o).get("properties").is_some();
                        self.types(o).map(|t| (t, is_struct))
                    })
                    .collect();
                for p in self.probes(b) {
                    // A value one branch refuses may suit another branch
                    // (serde reads a struct from an array too).
                    let elsewhere = others.iter().any(|(t, is_struct)| {
                        allows_type(t, &p.value) || (*is_struct && p.value.is_array())
                    });
                    if p.expect == Expect::Pass || !elsewhere {
                        out.push(p);
                    }
                }
            }
            return out;
        }
        if let Some(values) = s["enum"].as_array() {
            for v in values {
                out.push(Probe::pass(v.clone(), format!("enum value {v}")));
            }
            if values.iter().all(Value::is_string) {
                out.push(Probe::refuse(json!("not-an-enum-value"), "not in the enum"));
            }
            return out;
        }
        let types = self.types(s).unwrap_or_default();
        for t in ["integer", "number"] {
            if !types.contains(t) {
                continue;
            }
            if let Some(m) = s["minimum"].as_f64() {
                out.push(Probe::pass(number(t, m), "minimum"));
                out.push(Probe::refuse(number(t, m - 1.0), "below minimum"));
            }
            if let Some(m) = s["maximum"].as_f64() {
                out.push(Probe::pass(number(t, m), "maximum"));
                out.push(Probe::refuse(number(t, m + 1.0), "above maximum"));
            }
            break;
        }
        if types.contains("string") {
            if let Some(max) = s["maxLength"].as_u64() {
                out.push(Probe::refuse(
                    Value::String("a".repeat(max as usize + 1)),
                    "longer than maxLength",
                ));
            }
            if let Some(min) = s["minLength"].as_u64().filter(|m| *m > 0) {
                out.push(Probe::refuse(
                    Value::String("a".repeat(min as usize - 1)),
                    "shorter than minLength",
                ));
            }
            if let Some(p) = s["pattern"].as_str() {
                for c in CANDIDATES.iter().filter(|c| !self.matches(p, c)) {
                    out.push(Probe::refuse(json!(c), format!("does not match {p}")));
                }
            }
        }
        if types.contains("array") {
            let item = self.minimal(&s["items"]);
            if let Some(max) = s["maxItems"].as_u64() {
                let max = max as usize;
                out.push(Probe::pass(
                    json!(vec![item.clone(); max]),
                    "maxItems items",
                ));
                out.push(Probe::refuse(
                    json!(vec![item.clone(); max + 1]),
                    "more than maxItems",
                ));
            }
            for p in self.probes(&s["items"]) {
                out.push(Probe {
                    value: json!([p.value]),
                    ..p.at("[0]")
                });
            }
        }
        if types.contains("object") {
            out.extend(self.object_probes(s));
        }
        out
    }

    fn object_probes(&self, s: &'a Value) -> Vec<Probe> {
        let mut out = Vec::new();
        let base = self.minimal(s);
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        let without = |ks: &[&str]| {
            let mut b = base.clone();
            for k in ks {
                b.as_object_mut().expect("object").remove(*k);
            }
            b
        };
        let required: BTreeSet<&str> = s["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push(Probe::pass(base.clone(), "the minimal value"));
        for r in &required {
            out.push(Probe::refuse(
                without(&[r]),
                format!("without required {r}"),
            ));
        }
        if let Some(alts) = s["anyOf"].as_array() {
            let named: Vec<&str> = alts
                .iter()
                .flat_map(|a| a["required"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .filter(|n| !required.contains(n))
                .collect();
            out.push(Probe::refuse(
                without(&named),
                "none of the anyOf alternatives",
            ));
        }
        if let Some(together) = s["not"]["required"].as_array() {
            let mut b = base.clone();
            for k in together.iter().filter_map(Value::as_str) {
                b[k] = self.minimal(&s["properties"][k]);
            }
            out.push(Probe::refuse(b, format!("{together:?} together")));
        }
        if s["additionalProperties"] == Value::Bool(false) {
            out.push(Probe::refuse(
                with("unexpected_field", json!(1)),
                "an unknown field",
            ));
        } else if s.get("properties").is_some() {
            // API.md: fields Hearth does not know are ignored.
            out.push(Probe::pass(
                with("unexpected_field", json!(1)),
                "an unknown field (ignored)",
            ));
        }
        // A field a `not` forbids beside another one of the minimal value
        // replaces it.
        let exclusive: Vec<&str> = s["not"]["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let with = |k: &str, v: Value| {
            let mut b = with(k, v);
            if exclusive.contains(&k) {
                for other in exclusive.iter().filter(|o| **o != k) {
                    b.as_object_mut().expect("object").remove(*other);
                }
            }
            b
        };
        for (k, prop) in s["properties"].as_object().into_iter().flatten() {
            if !required.contains(k.as_str()) {
                out.push(Probe::pass(with(k, self.minimal(prop)), "at its minimal value").at(k));
            }
            for p in self.probes(prop) {
                out.push(Probe {
                    value: with(k, p.value.clone()),
                    ..p.at(k)
                });
            }
        }
        // A map: its keys and values.
        let values = &s["additionalProperties"];
        if values.is_object() && s.get("properties").is_none() {
            let names = &s["propertyNames"];
            let key = self
                .string(names)
                .expect("some key fits propertyNames")
                .to_string();
            let value = self.minimal(values);
            out.push(Probe::pass(
                json!({ key.clone(): value.clone() }),
                "one entry",
            ));
            for bad in CANDIDATES.iter().filter(|c| !self.string_fits(names, c)) {
                out.push(Probe::refuse(
                    json!({ *bad: value.clone() }),
                    format!("key {bad:?} does not fit propertyNames"),
                ));
            }
            for p in self.probes(values) {
                out.push(Probe {
                    value: json!({ key.clone(): p.value.clone() }),
                    ..p.at(&format!("[{key}]"))
                });
            }
        }
        out
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn allows_type(types: &BTreeSet<String>, v: &Value) -> bool {
    let t = type_of(v);
    types.contains(t) || (t == "integer" && types.contains("number"))
}

fn number(ty: &str, n: f64) -> Value {
    if ty == "integer" {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// A documented path with its parameters filled in: no such sandbox,
/// process `1`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{id}" => "sbx_nope",
            "{pid}" => "1",
            "{path}" => "tmp/x",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The status and the JSON answer of one request.
async fn send(
    srv: &TestServer,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = srv.client.request(m, srv.url(path)).query(query);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in 30 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    // A stream (SSE) that passed never ends: its first bytes are enough.
    let answer = tokio::time::timeout(Duration::from_secs(5), resp.json::<Value>())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(Value::Null);
    (status, answer)
}

/// Refused by the checks: 422 `validation_error`; 400 `bad_request`
/// (serde_json reports a wrong-typed enum value as malformed JSON); or,
/// from `validate`, `{valid: false}`. A 404 is not a refusal: it means the
/// body passed and the sandbox was looked up.
fn refused(status: u16, answer: &Value) -> bool {
    let code = &answer["error"]["code"];
    (status == 422 && code == "validation_error")
        || (status == 400 && code == "bad_request")
        || (status == 200 && answer["data"]["valid"] == false)
}

fn passed(status: u16, answer: &Value) -> bool {
    !refused(status, answer) && status != 400 && status != 422
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((method.to_ascii_uppercase(), path.clone(), op.clone()));
        }
    }
    ops
}

async fn server() -> TestServer {
    let srv = TestServer::start().await;
    srv.knobs.fail_boot.store(true, Ordering::SeqCst);
    srv
}

fn report(failures: &[String], what: &str) {
    assert!(
        failures.is_empty(),
        "{} {what} disagree with the server:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn json_bodies_are_as_strict_as_their_handlers() {
    let doc: Value = serde_json::from_str(FILE).expect("openapi.json");
    let schemas = Schemas::new(&doc);
    let srv = server().await;
    let mut failures = Vec::new();
    let mut operations_probed = 0;
    let mut probes_sent = 0;
    for (method, template, op) in operations(&doc) {
        let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema") else {
            continue;
        };
        operations_probed += 1;
        let path = concrete(&template);
        let body_schema = schemas.resolve(schema);
        assert_eq!(
            schemas.types(body_schema),
            Some(["object".to_string()].into()),
            "{method} {template}: a JSON body is an object"
        );
        for probe in schemas.probes(body_schema) {
            if !probe.value.is_object() {
                continue; // the body's own type: axum's business, not the schema's
            }
            probes_sent += 1;
            let (status, answer) = send(&srv, &method, &path, &[], Some(&probe.value)).await;
            let ok = match probe.expect {
                Expect::Pass => passed(status, &answer),
                Expect::Refuse => refused(status, &answer),
            };
            if !ok {
                failures.push(format!(
                    "{method} {template}: {} should {}: {} -> {status} {answer}",
                    probe.why,
                    if probe.expect == Expect::Pass {
                        "pass"
                    } else {
                        "be refused"
                    },
                    probe.value,
                ));
            }
        }
    }
    report(&failures, "request schemas");
    assert!(
        operations_probed >= 29,
        "only {operations_probed} operations have a JSON body"
    );
    assert!(probes_sent > 500, "only {probes_sent} probes");
    eprintln!("{probes_sent} probes of {operations_probed} request bodies");
}

#[tokio::test]
async fn query_bounds_are_as_strict_as_their_handlers() {
    let doc: Value = serde_json::from_str(FILE).expect("openapi.json");
    let schemas = Schemas::new(&doc);
    let srv = server().await;
    let mut failures = Vec::new();
    let mut probes_sent = 0;
    for (method, template, op) in operations(&doc) {
        if method != "GET" {
            continue;
        }
        let query: Vec<&Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .collect();
        let constrained = |s: &Value| {
            ["minimum", "maximum", "enum", "pattern"]
                .iter()
                .any(|k| s.get(*k).is_some())
        };
        if !query
            .iter()
            .any(|p| constrained(schemas.resolve(&p["schema"])))
        {
            continue;
        }
        let path = concrete(&template);
        let base: Vec<(String, String)> = query
            .iter()
            .filter(|p| p["required"] == true)
            .map(|p| {
                let v = schemas.minimal(&p["schema"]);
                (p["name"].as_str().expect("name").to_string(), text(&v))
            })
            .collect();
        for p in &query {
            let name = p["name"].as_str().expect("name");
            let s = schemas.resolve(&p["schema"]);
            if !constrained(s) {
                continue;
            }
            for probe in schemas.probes(s) {
                // Query values are text: only bounds and patterns apply.
                if !(probe.value.is_number() || probe.value.is_string()) {
                    continue;
                }
                if probe.why.contains(" is not ") {
                    continue;
                }
                let mut q: Vec<(String, String)> =
                    base.iter().filter(|(k, _)| k != name).cloned().collect();
                q.push((name.to_string(), text(&probe.value)));
                probes_sent += 1;
                let (status, answer) = send(&srv, &method, &path, &q, None).await;
                let ok = match probe.expect {
                    Expect::Pass => passed(status, &answer),
                    Expect::Refuse => refused(status, &answer),
                };
                if !ok {
                    failures.push(format!(
                        "{method} {template}?{name}={}: {} should {} -> {status} {answer}",
                        text(&probe.value),
                        probe.why,
                        if probe.expect == Expect::Pass {
                            "pass"
                        } else {
                            "be refused"
                        },
                    ));
                }
            }
        }
    }
    report(&failures, "query parameters");
    assert!(probes_sent > 20, "only {probes_sent} probes");
    eprintln!("{probes_sent} probes of query parameters");
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}
