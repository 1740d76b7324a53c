use super::*;

fn body(v: serde_json::Value) -> CreateBody {
    serde_json::from_value(v).expect("body")
}

#[test]
fn create_defaults() {
    let p = body(json!({})).validate().expect("valid");
    assert_eq!(p.template_id, "default");
    assert_eq!((p.cpu_count, p.memory_mb, p.disk_size_mb), (1, 1024, 3072));
    assert_eq!((p.timeout_sec, p.idle_timeout_sec), (300, 0));
    assert!(p.egress && !p.always_on && !p.persistent);
}

#[test]
fn create_reports_every_bad_field() {
    let e = body(json!({
        "cpu_count": 9, "memory_mb": 64, "disk_size_mb": 100, "timeout_sec": 0,
        "idle_timeout_sec": 90000, "size": "huge", "env": {"1BAD": "x"},
        "tags": ["a,b"], "metadata": {"big": "x".repeat(17000)}
    }))
    .validate()
    .expect_err("invalid");
    let fields: Vec<&str> = e.details.iter().map(|d| d.field.as_str()).collect();
    for f in [
        "size",
        "cpu_count",
        "memory_mb",
        "disk_size_mb",
        "timeout_sec",
        "idle_timeout_sec",
        "env.1BAD",
        "metadata",
        "tags[0]",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
}

#[test]
fn size_shorthand_and_disk_alias() {
    let p = body(json!({"size": "m", "disk_mb": 512}))
        .validate()
        .expect("valid");
    assert_eq!((p.cpu_count, p.memory_mb, p.disk_size_mb), (2, 2048, 512));
    let p = body(json!({"size": "xl", "cpu_count": 2}))
        .validate()
        .expect("valid");
    assert_eq!((p.cpu_count, p.memory_mb), (2, 8192), "explicit fields win");
}

#[test]
fn secret_env_is_applied_but_marked() {
    let p = body(json!({"env": {"A": "1"}, "secret_env": {"TOKEN": "s"}}))
        .validate()
        .expect("valid");
    assert_eq!(p.env.get("TOKEN").map(String::as_str), Some("s"));
    assert_eq!(p.secret_env, vec!["TOKEN".to_string()]);
}

#[test]
fn patch_rejects_immutable_fields() {
    let b: PatchBody =
        serde_json::from_value(json!({"external_user_id": "u2", "timeout_sec": 5})).expect("body");
    let e = b.validate().expect_err("immutable");
    assert_eq!(e.details[0].field, "external_user_id");
    let b: PatchBody = serde_json::from_value(json!({"name": null})).expect("body");
    assert_eq!(
        b.validate().expect("valid").name,
        Some(None),
        "null clears the name"
    );
}
