use super::*;

#[test]
fn tail_keeps_the_last_lines() {
    assert_eq!(tail_lines(b"a\nb\nc\n", Some(2)), b"b\nc\n");
    assert_eq!(tail_lines(b"a\nb\nc", Some(2)), b"b\nc");
    assert_eq!(tail_lines(b"a\nb\nc\n", Some(3)), b"a\nb\nc\n");
    assert_eq!(tail_lines(b"a\nb\nc\n", Some(10)), b"a\nb\nc\n");
    assert_eq!(tail_lines(b"a\nb\n", Some(1)), b"b\n");
    assert_eq!(tail_lines(b"a\nb\n", None), b"a\nb\n");
    assert_eq!(tail_lines(b"", Some(5)), b"");
    assert_eq!(tail_lines(b"\n\n\n", Some(1)), b"\n");
}

#[test]
fn tail_query_defaults_and_bounds() {
    assert_eq!(parse_tail(None).expect("default"), Some(200));
    assert_eq!(parse_tail(Some("5")).expect("five"), Some(5));
    assert_eq!(parse_tail(Some("0")).expect("all"), None);
    let e = parse_tail(Some("-1")).expect_err("negative");
    assert_eq!(e.details[0].field, "tail");
    assert!(parse_tail(Some("1000001")).is_err());
}

#[test]
fn signals_parse_by_name_and_number() {
    let p = |v: Value| parse_signal(Some(&v));
    assert_eq!(p(json!("SIGINT")).expect("name"), "SIGINT");
    assert_eq!(p(json!("term")).expect("short"), "SIGTERM");
    assert_eq!(p(json!(" sigkill ")).expect("case"), "SIGKILL");
    assert_eq!(p(json!(9)).expect("number"), "SIGKILL");
    assert_eq!(p(json!("15")).expect("numeric string"), "SIGTERM");
    assert_eq!(p(json!(31)).expect("last"), "SIGSYS");
    for bad in [
        json!("SIGNOPE"),
        json!(0),
        json!(32),
        json!(-1),
        json!(2.5),
        json!(true),
        json!(""),
    ] {
        let e = p(bad.clone()).expect_err("bad signal");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(e.details[0].field, "signal");
    }
    let e = parse_signal(None).expect_err("missing");
    assert_eq!(e.details[0].message, "is required");
}

#[test]
fn pids_are_positive_integers_or_not_found() {
    assert_eq!(parse_pid("42").expect("pid"), 42);
    assert_eq!(parse_pid("proc_42").expect("prefixed"), 42);
    for bad in ["0", "abc", "-1", "+5", "99999999999", "", "proc_"] {
        let e = parse_pid(bad).expect_err("bad pid");
        assert_eq!(e.status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(e.code, "not_found");
    }
}

#[test]
fn start_body_requires_a_command() {
    let b: StartBody = serde_json::from_value(json!({"command": "  "})).expect("body");
    let e = b.validate().expect_err("empty");
    assert_eq!(e.details[0].field, "command");
    let b: StartBody =
        serde_json::from_value(json!({"command": "sleep 1", "env": {"A=B": "x", "OK": "y"}}))
            .expect("body");
    let e = b.validate().expect_err("bad env");
    assert_eq!(e.details.len(), 1);
    assert_eq!(e.details[0].field, "env.A=B");
    let b: StartBody =
        serde_json::from_value(json!({"cmd": "sleep 1", "name": "web", "cwd": ""})).expect("body");
    let r = b.validate().expect("valid");
    assert_eq!(r.command, "sleep 1");
    assert_eq!(r.name.as_deref(), Some("web"));
    assert_eq!(r.cwd, None);
}

#[test]
fn stdin_body_takes_text_base64_or_eof() {
    let v = |j: Value| {
        serde_json::from_value::<StdinBody>(j)
            .expect("body")
            .validate()
    };
    assert_eq!(
        v(json!({"data": "hi\n"}))
            .expect("text")
            .data
            .expect("data")
            .as_slice(),
        b"hi\n"
    );
    assert_eq!(
        v(json!({"data_base64": "aGk="}))
            .expect("b64")
            .data
            .expect("data")
            .as_slice(),
        b"hi"
    );
    let r = v(json!({"eof": true})).expect("eof only");
    assert!(r.eof && r.data.is_none());
    assert_eq!(v(json!({})).expect_err("nothing").details[0].field, "data");
    assert_eq!(
        v(json!({"data_base64": "!!"})).expect_err("bad").details[0].field,
        "data_base64"
    );
    assert_eq!(
        v(json!({"data": "a", "data_base64": "YQ=="}))
            .expect_err("both")
            .details[0]
            .field,
        "data_base64"
    );
}

#[test]
fn terminal_sizes_are_checked() {
    let v = |j: Value| {
        serde_json::from_value::<TerminalBody>(j)
            .expect("body")
            .validate()
    };
    let r = v(json!({"cols": 120, "rows": 40, "shell": "/bin/sh"})).expect("valid");
    assert_eq!((r.cols, r.rows), (120, 40));
    assert_eq!(r.shell.as_deref(), Some("/bin/sh"));
    let r = v(json!({})).expect("defaults");
    assert_eq!((r.cols, r.rows), (80, 24));
    let e = v(json!({"cols": 0, "rows": 1001})).expect_err("bad");
    let fields: Vec<&str> = e.details.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["cols", "rows"]);
    assert!(v(json!({"cols": 70000, "rows": 10})).is_err());
}

#[test]
fn resume_prefers_last_event_id() {
    assert_eq!(resume_seq(None, None).expect("none"), None);
    assert_eq!(resume_seq(Some(4), None).expect("after 4"), Some(5));
    assert_eq!(resume_seq(None, Some("7")).expect("from 7"), Some(7));
    assert_eq!(
        resume_seq(Some(4), Some("7")).expect("header wins"),
        Some(5)
    );
    assert_eq!(
        resume_seq(Some(-1), Some("0")).expect("negative ignored"),
        Some(0)
    );
    assert_eq!(
        resume_seq(None, Some("x")).expect_err("bad").details[0].field,
        "from_seq"
    );
}

#[test]
fn control_frames() {
    assert_eq!(
        parse_control(r#"{"type":"resize","cols":100,"rows":30}"#),
        Control::Resize {
            cols: 100,
            rows: 30
        }
    );
    assert!(matches!(
        parse_control(r#"{"type":"resize","cols":0,"rows":30}"#),
        Control::BadResize(_)
    ));
    assert!(matches!(
        parse_control(r#"{"type":"resize"}"#),
        Control::BadResize(_)
    ));
    assert_eq!(parse_control("ls -la\n"), Control::Input);
    assert_eq!(
        parse_control(r#"{"type":"input","data":"x"}"#),
        Control::Input
    );
    assert_eq!(parse_control("{not json"), Control::Input);
}

#[test]
fn ws_url_swaps_the_scheme() {
    assert_eq!(
        terminal_ws_url("http://127.0.0.1:7070", "sbx_1", "pty_2"),
        "ws://127.0.0.1:7070/api/v1/sandboxes/sbx_1/terminals/pty_2/ws"
    );
    assert_eq!(
        terminal_ws_url("https://hearth.example.com/", "sbx_1", "pty_2"),
        "wss://hearth.example.com/api/v1/sandboxes/sbx_1/terminals/pty_2/ws"
    );
}

#[test]
fn process_json_has_the_api_fields() {
    let p = ProcessInfo {
        pid: 7,
        name: Some("web".into()),
        command: "sleep 1".into(),
        state: ProcessState::Exited,
        exit_code: Some(143),
        signal: Some(15),
        started_at_ms: 0,
        exited_at_ms: Some(1500),
    };
    let v = process_json(&p);
    assert_eq!(v["pid"], 7);
    assert_eq!(v["state"], "exited");
    assert_eq!(v["exit_code"], 143);
    assert_eq!(v["started_at"], "1970-01-01T00:00:00.000Z");
    assert_eq!(v["exited_at"], "1970-01-01T00:00:01.500Z");
}
