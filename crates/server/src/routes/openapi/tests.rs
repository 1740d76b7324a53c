use std::collections::BTreeSet;

use super::*;

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

fn rendered() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("document serializes");
    s.push('\n');
    s
}

/// Fails when `openapi.json` is not what [`document`] builds;
/// `UPDATE_OPENAPI=1 cargo test -p hearth-server --lib openapi`
/// rewrites it.
#[test]
fn checked_in_openapi_json_matches_document() {
    let current = rendered();
    let stored = std::fs::read_to_string(FILE).unwrap_or_default();
    if current == stored {
        return;
    }
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(FILE, &current).expect("write openapi.json");
        return;
    }
    panic!(
        "crates/server/openapi.json differs from routes::openapi::document(): \
         rerun with UPDATE_OPENAPI=1 cargo test -p hearth-server --lib openapi"
    );
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    ops
}

#[test]
fn operations_are_well_formed() {
    let doc = document();
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("tag name"))
        .collect();
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let ops = operations(&doc);
    assert!(ops.len() > 70, "only {} operations", ops.len());
    for (method, path, op) in &ops {
        let what = format!("{method} {path}");
        assert!(
            matches!(method.as_str(), "get" | "put" | "post" | "patch" | "delete"),
            "{what}: method"
        );
        assert!(
            ids.insert(op["operationId"].to_string()),
            "{what}: operationId clash"
        );
        let op_tags = op["tags"].as_array().expect("tags");
        assert_eq!(op_tags.len(), 1, "{what}: one tag");
        let tag = op_tags[0].as_str().expect("tag");
        assert!(tags.contains(tag), "{what}: tag {tag} is not declared");
        used.insert(tag.to_string());
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: no summary"
        );
        // Every `{name}` segment is a described path parameter, and
        // every path parameter is a segment.
        let segments: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let in_path: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert!(
                    p["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{what}: describe path parameter {}",
                    p["name"]
                );
                p["name"].as_str().expect("name").to_string()
            })
            .collect();
        let segments: BTreeSet<String> = segments.into_iter().map(String::from).collect();
        assert_eq!(segments, in_path, "{what}: path parameters");
        let mut names = BTreeSet::new();
        for p in &params {
            assert!(
                names.insert((p["in"].to_string(), p["name"].to_string())),
                "{what}: parameter {} twice",
                p["name"]
            );
        }
        let answers = op["responses"].as_object().expect("responses");
        // Changing env is refused whatever the state (409): it has no
        // success answer to document yet.
        assert!(
            answers
                .keys()
                .any(|k| k.starts_with('1') || k.starts_with('2') || k == "409"),
            "{what}: no success answer"
        );
        for code in ["4XX", "5XX"] {
            assert_eq!(
                answers[code]["$ref"], "#/components/responses/Error",
                "{what}"
            );
        }
        let authed = path.starts_with("/api/v1/");
        assert_eq!(answers.contains_key("401"), authed, "{what}: 401");
        assert_eq!(
            op.get("security") == Some(&json!([])),
            !authed,
            "{what}: security"
        );
        if !segments.is_empty() {
            assert!(answers.contains_key("404"), "{what}: has ids but no 404");
        }
        let has_input =
            op.get("requestBody").is_some() || params.iter().any(|p| p["in"] == "query");
        if has_input
            && op["requestBody"]["content"]
                .get("application/json")
                .is_some()
        {
            assert!(answers.contains_key("422"), "{what}: validates but no 422");
        }
    }
    for t in &tags {
        assert!(used.contains(*t), "tag {t} is unused");
    }
}

#[test]
fn document_has_the_shared_parts() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Hearth");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc.get("servers").is_none());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let err = &doc["components"]["schemas"]["Error"];
    assert_eq!(err["required"], json!(["error"]));
    let detail = &doc["components"]["schemas"]["ErrorDetail"]["properties"];
    for field in ["code", "message", "request_id", "details"] {
        assert!(detail.get(field).is_some(), "error envelope lacks {field}");
    }
    for answer in ["Error", "Unauthorized", "NotFound", "ValidationError"] {
        let a = &doc["components"]["responses"][answer];
        assert_eq!(
            a["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
            "{answer}"
        );
        assert!(a["headers"].get("X-Request-Id").is_some(), "{answer}");
    }
    // Every reference resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').expect("local reference");
        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
    }
}

/// The fields API.md lists for the sandbox object, each always sent.
#[test]
fn sandbox_schema_has_the_api_md_fields() {
    let doc = document();
    let sandbox = &doc["components"]["schemas"]["Sandbox"];
    let props = sandbox["properties"]
        .as_object()
        .expect("Sandbox properties");
    let required: BTreeSet<&str> = sandbox["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    for field in [
        "id",
        "state",
        "status",
        "template_id",
        "template_version",
        "cpu_count",
        "memory_mb",
        "disk_size_mb",
        "timeout_sec",
        "idle_timeout_sec",
        "always_on",
        "persistent",
        "env_keys",
        "metadata",
        "tags",
        "name",
        "external_workspace_id",
        "external_user_id",
        "external_project_id",
        "boot_ms",
        "boot_path",
        "created_at",
        "started_at",
        "paused_at",
        "destroyed_at",
        "timeout_remaining_ms",
    ] {
        assert!(props.contains_key(field), "Sandbox lacks {field}");
        assert!(required.contains(field), "Sandbox.{field} is always sent");
    }
}

/// The fields a cross-field rule names exist in its schema.
#[test]
fn refinements_name_real_fields() {
    let doc = document();
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        let props = schema["properties"].as_object();
        let mut named: Vec<&str> = Vec::new();
        for alt in schema["anyOf"].as_array().into_iter().flatten() {
            named.extend(
                alt["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str),
            );
        }
        named.extend(
            schema["not"]["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
        for field in named {
            assert!(
                props.is_some_and(|p| p.contains_key(field)),
                "{name}: a rule names {field}, which it does not have"
            );
        }
    }
}
