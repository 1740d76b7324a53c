use super::*;

fn fields(e: &ApiError) -> Vec<&str> {
    e.details.iter().map(|d| d.field.as_str()).collect()
}

#[test]
fn modes_format_as_four_octal_digits() {
    assert_eq!(format_mode(0o644), "0644");
    assert_eq!(format_mode(0o755), "0755");
    assert_eq!(format_mode(0o4755), "4755");
    assert_eq!(format_mode(0o100644), "0644", "file type bits are dropped");
    assert_eq!(format_mode(0), "0000");
}

#[test]
fn modes_parse_from_numbers_and_octal_strings() {
    assert_eq!(parse_mode(&json!(420)), Ok(Some(0o644)));
    assert_eq!(parse_mode(&json!("0644")), Ok(Some(0o644)));
    assert_eq!(parse_mode(&json!("755")), Ok(Some(0o755)));
    assert_eq!(parse_mode(&json!("0o700")), Ok(Some(0o700)));
    assert_eq!(parse_mode(&Value::Null), Ok(None));
    assert!(parse_mode(&json!("0855")).is_err());
    assert!(parse_mode(&json!("")).is_err());
    assert!(parse_mode(&json!(0o10000)).is_err());
    assert!(parse_mode(&json!(-1)).is_err());
    assert!(parse_mode(&json!(true)).is_err());
}

#[test]
fn paths_must_be_absolute_and_free_of_nul() {
    assert!(check_path("path", b"/tmp/a").is_ok());
    assert_eq!(check_path("path", b"").unwrap_err().message, "is required");
    assert_eq!(
        check_path("path", b"tmp/a").unwrap_err().message,
        "must be an absolute path"
    );
    let e = check_path("to", b"/a\0b").unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("to", "cannot hold NUL")
    );
}

#[test]
fn query_paths_default_and_validate() {
    let q = Params::parse(Some("path=rel"));
    assert_eq!(query_path(&q, "path", Some("/")).unwrap_err().field, "path");
    let q = Params::parse(Some("depth=2"));
    assert_eq!(query_path(&q, "path", Some("/")).unwrap(), b"/");
    assert_eq!(
        query_path(&q, "path", None).unwrap_err().message,
        "is required"
    );
    let q = Params::parse(Some("path="));
    assert!(
        query_path(&q, "path", Some("/")).is_err(),
        "an explicit empty path is not the default"
    );
}

#[test]
fn depth_is_bounded() {
    assert_eq!(parse_depth(None, 3), Ok(3));
    assert_eq!(parse_depth(Some(b"10"), 1), Ok(10));
    for bad in [b"0".as_slice(), b"11", b"-1", b"two"] {
        assert_eq!(parse_depth(Some(bad), 1).unwrap_err().field, "depth");
    }
}

#[test]
fn booleans_parse_strictly() {
    assert_eq!(parse_bool("recursive", None), Ok(false));
    assert_eq!(parse_bool("recursive", Some(b"true")), Ok(true));
    assert_eq!(parse_bool("recursive", Some(b"0")), Ok(false));
    assert!(parse_bool("recursive", Some(b"maybe")).is_err());
}

#[test]
fn text_content_is_verbatim_but_legacy_content_is_base64() {
    let body = || -> WriteBody {
        serde_json::from_value(json!({"path": "/a", "content": "aGk=", "mode": "0600"}))
            .expect("body")
    };
    let text = body().validate(false).expect("text");
    assert_eq!(text.content.as_slice(), b"aGk=");
    assert_eq!(text.mode, Some(0o600));
    let legacy = body().validate(true).expect("legacy");
    assert_eq!(legacy.content.as_slice(), b"hi");
    let b64: WriteBody =
        serde_json::from_value(json!({"path": "/a", "content_base64": "aG\nk="})).expect("body");
    assert_eq!(b64.validate(false).expect("b64").content.as_slice(), b"hi");
}

#[test]
fn write_body_reports_every_bad_field() {
    let b: WriteBody =
        serde_json::from_value(json!({"path": "rel", "content_base64": "!!", "mode": "9"}))
            .expect("body");
    let e = b.validate(false).expect_err("invalid");
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&e), ["path", "content_base64", "mode"]);
    let e = WriteBody::default().validate(false).expect_err("empty");
    assert_eq!(fields(&e), ["path", "content"]);
    let b: WriteBody =
        serde_json::from_value(json!({"path": "/a", "content": "x", "content_base64": "eA=="}))
            .expect("body");
    assert_eq!(fields(&b.validate(false).expect_err("both")), ["content"]);
}

#[test]
fn write_many_reports_bad_entries_without_failing_the_rest() {
    let body: WriteManyBody = serde_json::from_value(json!({"files": [
        {"path": "/ok", "content_base64": "aGk="},
        {"path": "relative", "content_base64": "aGk="},
        {"path": "/bad64", "content_base64": "%%%"},
    ]}))
    .expect("body");
    let (ok, failed) = split_write_many(body.files);
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].path, "/ok");
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["path"], "relative");
    assert_eq!(failed[0]["code"], "validation_error");
    assert_eq!(failed[1]["path"], "/bad64");
    assert!(failed[1]["error"].as_str().unwrap().contains("base64"));
}

#[test]
fn legacy_paths_come_from_the_raw_uri() {
    assert_eq!(
        legacy_target("/sandboxes/sbx_1/files/tmp/a%20b"),
        Some(("sbx_1".to_string(), b"/tmp/a b".to_vec()))
    );
    assert_eq!(
        legacy_target("/api/v1/sandboxes/sbx_1/files/x+y/%FF"),
        Some(("sbx_1".to_string(), b"/x+y/\xff".to_vec()))
    );
    assert_eq!(legacy_target("/sandboxes/sbx_1/files/"), None);
    assert_eq!(legacy_target("/sandboxes/sbx_1/exports/a"), None);
}

#[test]
fn downloads_are_named_after_the_file() {
    assert_eq!(base_name(b"/tmp/dir/a.txt"), b"a.txt");
    assert_eq!(base_name(b"/tmp/dir/"), b"dir");
    assert_eq!(base_name(b"/"), b"");
    assert_eq!(
        attachment(b"r\xc3\xa9sum\xc3\xa9 \"1\".pdf"),
        concat!(
            "attachment; filename=\"r__sum____1_.pdf\"; ",
            "filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
        )
    );
    assert_eq!(
        attachment(b""),
        "attachment; filename=\"download\"; filename*=UTF-8''download"
    );
}

#[test]
fn entries_show_type_mode_and_time() {
    let e = FileEntry {
        name: "a".into(),
        path: "/t/a".into(),
        raw_path: None,
        file_type: FileType::Dir,
        size: 4096,
        mode: 0o40755,
        modified_at_ms: 1_700_000_000_123,
        symlink_target: None,
    };
    let v = entry_json(&e);
    assert_eq!(v["type"], "dir");
    assert_eq!(v["is_dir"], true);
    assert_eq!(v["mode"], "0755");
    assert_eq!(v["modified_at"], "2023-11-14T22:13:20.123Z");
    assert!(v.get("symlink_target").is_none());
}

#[test]
fn trees_nest_and_mark_truncated_directories() {
    let leaf = |name: &str, t, children| TreeNode {
        name: name.into(),
        path: format!("/r/{name}"),
        file_type: t,
        size: 1,
        children,
    };
    let root = TreeNode {
        name: "r".into(),
        path: "/r".into(),
        file_type: FileType::Dir,
        size: 0,
        children: Some(vec![
            leaf("f", FileType::File, None),
            leaf("deep", FileType::Dir, None),
        ]),
    };
    let v = tree_json(&root);
    assert_eq!(v["children"][0]["name"], "f");
    assert_eq!(v["children"][0]["children"], json!([]));
    assert!(v["children"][0].get("truncated").is_none());
    assert_eq!(v["children"][1]["truncated"], true);
    assert!(v.get("truncated").is_none());
}

fn wev(kind: WatchEventKind, path: &str, old: Option<&str>) -> WatchEvent {
    WatchEvent {
        event: kind,
        path: path.into(),
        is_dir: false,
        old_path: old.map(str::to_string),
    }
}

#[test]
fn atomic_writes_read_as_created_then_modified() {
    use WatchEventKind::*;
    let mut view = WatchView::new("/w");
    let temp = "/w/.a.txt.hearth-tmp-1f-0-3b9a";
    assert!(is_agent_temp(temp));
    assert!(
        !is_agent_temp("/w/a.hearth-tmp-1"),
        "not hidden: a user's file"
    );
    assert_eq!(view.translate(wev(Created, temp, None)), None);
    assert_eq!(view.translate(wev(Modified, temp, None)), None);
    let first = view.translate(wev(Renamed, "/w/a.txt", Some(temp)));
    assert_eq!(first, Some(wev(Created, "/w/a.txt", None)));
    let again = view.translate(wev(Renamed, "/w/a.txt", Some(temp)));
    assert_eq!(again, Some(wev(Modified, "/w/a.txt", None)));
    // A real rename keeps its old path; the file is known under the new one.
    let moved = view.translate(wev(Renamed, "/w/b.txt", Some("/w/a.txt")));
    assert_eq!(moved, Some(wev(Renamed, "/w/b.txt", Some("/w/a.txt"))));
    assert_eq!(
        view.translate(wev(Renamed, "/w/a.txt", Some(temp))),
        Some(wev(Created, "/w/a.txt", None))
    );
    assert_eq!(
        view.translate(wev(Deleted, "/w/b.txt", None)),
        Some(wev(Deleted, "/w/b.txt", None))
    );
    assert_eq!(
        view.translate(wev(Renamed, "/w/b.txt", Some(temp))),
        Some(wev(Created, "/w/b.txt", None))
    );
    // A watched file replaced atomically was there all along.
    let mut one = WatchView::new("/f.txt");
    assert_eq!(
        one.translate(wev(Renamed, "/f.txt", Some("/.f.txt.hearth-tmp-1-2-3"))),
        Some(wev(Modified, "/f.txt", None))
    );
}

#[test]
fn watch_frames_carry_event_and_type() {
    let ev = WatchEvent {
        event: WatchEventKind::Renamed,
        path: "/w/b".into(),
        is_dir: false,
        old_path: Some("/w/a".into()),
    };
    // `Event` has no getters; its wire form is what clients see.
    let wire = format!("{:?}", watch_frame(7, &ev));
    for part in ["renamed", "/w/b", "/w/a", "old_path", "is_dir", "7"] {
        assert!(wire.contains(part), "{part} missing from {wire}");
    }
}
