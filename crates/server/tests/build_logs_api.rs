//! A template build's log is bounded, in memory and on disk, whatever the
//! build prints: the tail is kept (it holds the error), a reader is told
//! how many earlier lines were dropped, and a client following the log
//! while the build runs still sees every line.

mod common;

use std::time::Duration;

use common::{log_frames, TestServer};
use serde_json::{json, Value};

/// Starts a build of template `name` whose one step runs `run`; its id.
async fn build(srv: &TestServer, work: &std::path::Path, name: &str, run: &str) -> String {
    let spec = json!({
        "from": "minimal", "workdir": work.to_str().expect("utf8"),
        "cpu_count": 1, "memory_mb": 256, "disk_size_mb": 512,
        "steps": [{"run": run}],
    });
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": name, "build_spec": spec})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    v["data"]["build"]["id"]
        .as_str()
        .expect("build id")
        .to_string()
}

fn log_texts(frames: &[(String, Value)]) -> Vec<String> {
    frames
        .iter()
        .filter(|(k, _)| k == "log")
        .map(|(_, d)| d["text"].as_str().expect("text").to_string())
        .collect()
}

/// Bytes of a build's log files (both parts).
fn log_bytes(srv: &TestServer, build_id: &str) -> u64 {
    let mut n = 0;
    for e in walk(&srv.core.data_dir().join("templates")) {
        let name = e.file_name().and_then(|s| s.to_str()).unwrap_or_default();
        if name.starts_with(build_id) {
            n += std::fs::metadata(&e).map_or(0, |m| m.len());
        }
    }
    n
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_huge_build_log_keeps_its_tail_within_bounds() {
    let srv = TestServer::start().await;
    let work = tempfile::tempdir().expect("workdir");
    // 100,000 lines, a megabyte without a newline, then the error.
    let id = build(
        &srv,
        work.path(),
        "loud",
        "seq 1 100000; head -c 1000000 /dev/zero | tr '\\0' x; echo; \
         echo the-error >&2; exit 3",
    )
    .await;
    // Read once it ended (a reader who follows it live may see more lines,
    // and a marker wherever it fell behind).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (st, v) = srv
            .call("GET", &format!("/sandbox-template-builds/{id}"), None)
            .await;
        assert_eq!(st, 200, "{v}");
        if v["data"]["state"] == "failed" {
            break;
        }
        assert_ne!(v["data"]["state"], "ready");
        assert!(
            std::time::Instant::now() < deadline,
            "the build never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let frames = log_frames(&srv, &id, None).await;
    let (_, done) = frames.last().expect("done");
    assert_eq!(done["state"], "failed", "{done}");
    let texts = log_texts(&frames);
    let limits = hearth_server::config::BuildsConfig::default();
    // The marker, then at most the memory's lines.
    assert!(texts.len() <= limits.log_max_lines + 1, "{}", texts.len());
    let dropped: u64 = texts[0]
        .strip_prefix("... ")
        .and_then(|t| t.strip_suffix(" earlier lines dropped ..."))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("first line is {:?}", texts[0]));
    assert!(dropped > 80_000, "{dropped}");
    assert_eq!(frames[0].1["stream"], "system");
    // The tail is whole: the last numbers, the cut megabyte, the error and
    // why the build failed.
    assert!(texts.iter().any(|t| t == "100000"));
    let xs: Vec<&String> = texts.iter().filter(|t| t.starts_with("xxxx")).collect();
    assert_eq!(xs.iter().map(|t| t.len()).sum::<usize>(), 1_000_000);
    assert!(xs.iter().all(|t| t.len() <= 8192));
    assert!(texts.iter().any(|t| t == "the-error"));
    assert!(
        texts
            .last()
            .expect("last")
            .starts_with("build failed: step 1"),
        "{:?}",
        texts.last()
    );
    // Line numbers go on where the drop ended.
    let seqs: Vec<u64> = frames[..frames.len() - 1]
        .iter()
        .map(|(_, d)| d["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs[0] + 1, seqs[1]);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    // The file is bounded too; a later reader (from disk) sees the tail.
    let on_disk = log_bytes(&srv, &id);
    assert!(on_disk <= limits.log_max_bytes, "{on_disk} bytes on disk");
    assert!(
        on_disk > limits.log_max_bytes / 2,
        "{on_disk} bytes on disk"
    );
    let again = log_texts(&log_frames(&srv, &id, None).await);
    assert!(
        again[0].ends_with(" earlier lines dropped ..."),
        "{}",
        again[0]
    );
    assert_eq!(again.last(), texts.last());
    // Resuming inside the dropped part says so again; after it, it does not.
    let resumed = log_texts(&log_frames(&srv, &id, Some(10)).await);
    assert!(
        resumed[0].ends_with(" earlier lines dropped ..."),
        "{}",
        resumed[0]
    );
    let last_seq = *seqs.last().expect("seq");
    let resumed = log_texts(&log_frames(&srv, &id, Some(last_seq - 1)).await);
    assert_eq!(resumed.len(), 1);
}

#[tokio::test]
async fn a_client_that_keeps_up_sees_every_line() {
    let srv = TestServer::start_with(|c| c.builds.log_max_lines = 100).await;
    let work = tempfile::tempdir().expect("workdir");
    // 600 lines, 20 at a time: five times what memory holds.
    let id = build(
        &srv,
        work.path(),
        "steady",
        "i=0; while [ $i -lt 600 ]; do echo line $i; i=$((i+1)); \
         if [ $((i % 20)) = 0 ]; then sleep 0.05; fi; done",
    )
    .await;
    let followed = log_texts(&log_frames(&srv, &id, None).await);
    let lines: Vec<&String> = followed.iter().filter(|t| t.starts_with("line ")).collect();
    let want: Vec<String> = (0..600).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want.iter().collect::<Vec<_>>());
    assert!(!followed.iter().any(|t| t.contains("dropped")));
    // Afterwards only the tail is left, and the reader is told so.
    let late = log_texts(&log_frames(&srv, &id, None).await);
    assert!(
        late[0].ends_with(" earlier lines dropped ..."),
        "{}",
        late[0]
    );
    assert!(late.len() <= 101, "{}", late.len());
    assert_eq!(late.last(), followed.last());
}
