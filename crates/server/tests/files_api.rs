//! The Files routes of API.md against the real server, with a real
//! `hearth-agent` per sandbox (see `common`): guest paths are host paths
//! here, so each test works under its own temporary directory.

mod common;

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use common::TestServer;
use futures_util::StreamExt;
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A server, one running sandbox, and a scratch directory for its files.
struct Fixture {
    srv: TestServer,
    id: String,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let srv = TestServer::start().await;
        let sbx = srv.create_sandbox(json!({})).await;
        let id = sbx["id"].as_str().expect("id").to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        Fixture { srv, id, dir }
    }

    /// An absolute path under the scratch directory.
    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.dir.path().display())
    }

    fn url(&self, route: &str) -> String {
        self.srv
            .url(&format!("/api/v1/sandboxes/{}{route}", self.id))
    }

    async fn post(&self, route: &str, body: Value) -> (u16, Value) {
        let resp = self
            .srv
            .client
            .post(self.url(route))
            .json(&body)
            .send()
            .await
            .expect("post");
        json_of(resp).await
    }

    async fn get_json(&self, route: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .srv
            .client
            .get(self.url(route))
            .query(query)
            .send()
            .await
            .expect("get");
        json_of(resp).await
    }

    async fn get_bytes(&self, route: &str, query: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        let resp = self
            .srv
            .client
            .get(self.url(route))
            .query(query)
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp.bytes().await.expect("bytes").to_vec();
        (status, ct, bytes)
    }
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

/// Bytes that are not text and do not repeat in any short period.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

type ChunkStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Reads SSE frames off a streamed answer.
struct SseReader {
    body: ChunkStream,
    buf: String,
    /// Every complete frame so far.
    seen: String,
}

impl SseReader {
    fn new(resp: reqwest::Response) -> SseReader {
        SseReader {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            seen: String::new(),
        }
    }

    /// The first frame whose data matches `want`, as (frame text, data),
    /// within 10 s.
    async fn until(&mut self, want: impl Fn(&Value) -> bool) -> (String, Value) {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                while let Some(end) = self.buf.find("\n\n") {
                    let frame: String = self.buf.drain(..end + 2).collect();
                    self.seen.push_str(&frame);
                    let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
                    if let Some(v) = data.and_then(|d| serde_json::from_str::<Value>(d).ok()) {
                        if want(&v) {
                            return (frame, v);
                        }
                    }
                }
                let chunk = self
                    .body
                    .next()
                    .await
                    .expect("stream ended")
                    .expect("chunk");
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no matching frame within 10 s; saw:\n{}", self.seen))
    }
}

fn assert_validation(status: u16, v: &Value, field: &str) {
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "validation_error", "{v}");
    let fields: Vec<&str> = v["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert!(fields.contains(&field), "{field} not in {v}");
}

#[tokio::test]
async fn text_and_base64_writes_read_back_byte_exact() {
    let f = Fixture::start().await;
    let text_path = f.path("notes/hello.txt");
    // Looks like base64 on purpose: fs/write must not decode `content`.
    let text = "aGk=\nhéllo\tworld\r\n";
    let (st, v) = f
        .post("/fs/write", json!({"path": text_path, "content": text}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["path"], text_path.as_str());
    assert_eq!(v["data"]["size_bytes"], text.len());

    let (st, ct, bytes) = f.get_bytes("/fs/download", &[("path", &text_path)]).await;
    assert_eq!(st, 200);
    assert_eq!(ct, "application/octet-stream");
    assert_eq!(bytes, text.as_bytes());

    let (st, v) = f.get_json("/files/read", &[("path", &text_path)]).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["size"], text.len());
    let content = B64
        .decode(v["data"]["content"].as_str().expect("content"))
        .expect("base64");
    assert_eq!(content, text.as_bytes());

    let bin_path = f.path("bin/all-bytes");
    let all: Vec<u8> = (0..=255u8).collect();
    let (st, v) = f
        .post(
            "/fs/write",
            json!({"path": bin_path, "content_base64": B64.encode(&all), "mode": "0600"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["size_bytes"], 256);
    let (_, _, bytes) = f.get_bytes("/fs/download", &[("path", &bin_path)]).await;
    assert_eq!(bytes, all);
    let (st, v) = f.post("/fs/stat", json!({"path": bin_path})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["mode"], "0600");

    // Each write is in the sandbox's event log.
    let resp = f
        .srv
        .client
        .get(f.url("/events"))
        .query(&[("types", "sandbox.file.written")])
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .expect("events");
    let (st, v) = json_of(resp).await;
    assert_eq!(st, 200, "{v}");
    let paths: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["data"]["path"].as_str())
        .collect();
    assert_eq!(paths, [text_path.as_str(), bin_path.as_str()], "{v}");
}

#[tokio::test]
async fn legacy_write_is_base64_and_legacy_read_is_raw() {
    let f = Fixture::start().await;
    let path = f.path("legacy/data file.bin");
    let payload = noise(4096);
    let (st, v) = f
        .post(
            "/files",
            json!({"path": path, "content": B64.encode(&payload)}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["size_bytes"], 4096);

    // `/files/{path...}`: the guest path is the rest of the URI.
    let rest = path.trim_start_matches('/').replace(' ', "%20");
    let (st, ct, bytes) = f.get_bytes(&format!("/files/{rest}"), &[]).await;
    assert_eq!(st, 200);
    assert_eq!(ct, "application/octet-stream");
    assert_eq!(bytes, payload);

    let (st, v) = f
        .post("/files", json!({"path": path, "content": "not base64!"}))
        .await;
    assert_validation(st, &v, "content");

    let (st, v) = f
        .get_json(
            &format!("/files/{}", f.path("nope").trim_start_matches('/')),
            &[],
        )
        .await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["error"]["code"], "file_not_found");
}

#[tokio::test]
async fn raw_upload_streams_a_large_body() {
    let f = Fixture::start().await;
    let path = f.path("big/blob.bin");
    let payload = noise(20 << 20);
    // Sent in 1 MiB chunks, so the server sees a stream, not one buffer.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        payload.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let resp = f
        .srv
        .client
        .put(f.url("/fs/raw"))
        .query(&[("path", path.as_str()), ("mode", "0640")])
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("put");
    let (st, v) = json_of(resp).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["size_bytes"], 20 << 20);
    assert_eq!(v["data"]["path"], path.as_str());

    let (st, _, bytes) = f.get_bytes("/fs/download", &[("path", &path)]).await;
    assert_eq!(st, 200);
    assert_eq!(bytes.len(), payload.len());
    assert!(bytes == payload, "downloaded bytes differ");

    let (_, v) = f.post("/files/stat", json!({"path": path})).await;
    assert_eq!(v["data"]["size"], 20 << 20);
    assert_eq!(v["data"]["mode"], "0640");

    let resp = f
        .srv
        .client
        .put(f.url("/fs/raw"))
        .query(&[("path", "relative/x")])
        .body("x")
        .send()
        .await
        .expect("put");
    let (st, v) = json_of(resp).await;
    assert_validation(st, &v, "path");
}

#[tokio::test]
async fn list_stat_tree_mkdir_rename_remove() {
    let f = Fixture::start().await;
    let root = f.path("proj");
    let (st, v) = f
        .post("/fs/mkdir", json!({"path": f.path("proj/src/deep")}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["type"], "dir");
    for (rel, body) in [
        ("proj/README.md", "# hi\n"),
        ("proj/src/main.rs", "fn main() {}\n"),
    ] {
        let (st, v) = f
            .post("/fs/write", json!({"path": f.path(rel), "content": body}))
            .await;
        assert_eq!(st, 200, "{v}");
    }

    // Depth 1: direct children only.
    let (st, v) = f.get_json("/files", &[("path", &root)]).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["path"], root.as_str());
    let entries = v["data"]["entries"].as_array().expect("entries");
    let mut names: Vec<&str> = entries.iter().filter_map(|e| e["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["README.md", "src"], "{v}");
    let readme = entries
        .iter()
        .find(|e| e["name"] == "README.md")
        .expect("readme");
    assert_eq!(readme["type"], "file");
    assert_eq!(readme["is_dir"], false);
    assert_eq!(readme["size"], 5);
    assert_eq!(readme["path"], f.path("proj/README.md").as_str());
    let mode = readme["mode"].as_str().expect("mode");
    assert!(
        mode.len() == 4 && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)),
        "{mode}"
    );
    let modified = readme["modified_at"].as_str().expect("modified_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(modified).is_ok(),
        "{modified}"
    );
    let src = entries.iter().find(|e| e["name"] == "src").expect("src");
    assert_eq!(
        (src["type"].as_str(), src["is_dir"].as_bool()),
        (Some("dir"), Some(true))
    );

    // Deeper lists reach into src; /files/list is the same listing.
    let (st, v) = f
        .get_json("/files/list", &[("path", &root), ("depth", "3")])
        .await;
    assert_eq!(st, 200, "{v}");
    let paths: Vec<&str> = v["data"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&f.path("proj/src/main.rs").as_str()), "{v}");
    assert!(paths.contains(&f.path("proj/src/deep").as_str()), "{v}");
    for depth in ["0", "11", "x"] {
        let (st, v) = f
            .get_json("/files", &[("path", &root), ("depth", depth)])
            .await;
        assert_validation(st, &v, "depth");
    }

    let (st, v) = f
        .post("/fs/stat", json!({"path": f.path("proj/src")}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["name"], "src");
    assert_eq!(v["data"]["type"], "dir");
    assert_eq!(v["data"]["is_dir"], true);

    let (st, v) = f.get_json("/files/tree", &[("path", &root)]).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["name"], "proj");
    assert_eq!(v["data"]["type"], "dir");
    let src = v["data"]["children"]
        .as_array()
        .expect("children")
        .iter()
        .find(|c| c["name"] == "src")
        .expect("src node");
    let main = src["children"]
        .as_array()
        .expect("src children")
        .iter()
        .find(|c| c["name"] == "main.rs")
        .expect("main.rs node");
    assert_eq!(main["size"], 13);
    assert_eq!(main["type"], "file");

    let from = f.path("proj/README.md");
    let to = f.path("proj/docs/README.md");
    let (st, v) = f.post("/fs/rename", json!({"from": from, "to": to})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["path"], to.as_str());
    let (st, _, bytes) = f.get_bytes("/fs/download", &[("path", &to)]).await;
    assert_eq!((st, bytes.as_slice()), (200, b"# hi\n".as_slice()));
    let (st, v) = f.post("/fs/stat", json!({"path": from})).await;
    assert_eq!(st, 404, "{v}");

    // A non-empty directory needs `recursive`.
    let (st, v) = f
        .post("/fs/remove", json!({"path": f.path("proj/src")}))
        .await;
    assert_eq!(st, 409, "{v}");
    let (st, v) = f
        .post(
            "/fs/remove",
            json!({"path": f.path("proj/src"), "recursive": true}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = f
        .post("/fs/stat", json!({"path": f.path("proj/src")}))
        .await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["error"]["code"], "file_not_found");
}

#[tokio::test]
async fn bad_paths_are_refused_and_missing_files_are_404() {
    let f = Fixture::start().await;
    let (st, v) = f.post("/fs/stat", json!({"path": f.path("missing")})).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["error"]["code"], "file_not_found");
    let (st, v) = f
        .get_json("/fs/download", &[("path", &f.path("missing"))])
        .await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["error"]["code"], "file_not_found");

    let (st, v) = f
        .post(
            "/fs/write",
            json!({"path": "relative/file.txt", "content": "x"}),
        )
        .await;
    assert_validation(st, &v, "path");
    let (st, v) = f.post("/fs/stat", json!({"path": ""})).await;
    assert_validation(st, &v, "path");
    let (st, v) = f
        .post("/fs/write", json!({"path": "/tmp/a\u{0}b", "content": "x"}))
        .await;
    assert_validation(st, &v, "path");
    let (st, v) = f.post("/fs/rename", json!({"from": "a", "to": "b"})).await;
    assert_validation(st, &v, "from");
    assert_validation(st, &v, "to");
    let (st, v) = f.get_json("/files/read", &[("path", "etc/hosts")]).await;
    assert_validation(st, &v, "path");
    let (st, v) = f.get_json("/fs/download", &[]).await;
    assert_validation(st, &v, "path");

    // A JSON body past the limit is refused before it reaches the guest.
    let big = "x".repeat(65 << 20);
    let (st, v) = f
        .post("/fs/write", json!({"path": f.path("huge"), "content": big}))
        .await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn write_many_reports_each_failure() {
    let f = Fixture::start().await;
    let a = f.path("many/a.txt");
    let b = f.path("many/b/c.txt");
    // Its parent is a regular file: the agent refuses this one.
    let under_file = format!("{a}/child");
    let (st, v) = f
        .post(
            "/files/write-many",
            json!({"files": [
                {"path": a, "content_base64": B64.encode("alpha")},
                {"path": "not/absolute", "content_base64": B64.encode("x")},
                {"path": b, "content_base64": B64.encode("beta!")},
                {"path": under_file, "content_base64": B64.encode("x")},
            ]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let written = v["data"]["written"].as_array().expect("written");
    assert_eq!(
        written,
        &[
            json!({"path": a, "size_bytes": 5}),
            json!({"path": b, "size_bytes": 5})
        ],
        "{v}"
    );
    let failed = v["data"]["failed"].as_array().expect("failed");
    let failed_paths: Vec<&str> = failed.iter().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(failed_paths, ["not/absolute", under_file.as_str()], "{v}");
    assert!(failed
        .iter()
        .all(|e| e["error"].as_str().is_some_and(|s| !s.is_empty())));

    let (_, _, bytes) = f.get_bytes("/fs/download", &[("path", &b)]).await;
    assert_eq!(bytes, b"beta!");
}

#[tokio::test]
async fn exports_one_file_raw_and_several_as_tar_gz() {
    let f = Fixture::start().await;
    let one = f.path("out/one.txt");
    let two = f.path("out/sub/two.bin");
    let two_bytes = noise(10_000);
    f.post("/fs/write", json!({"path": one, "content": "first"}))
        .await;
    f.post(
        "/fs/write",
        json!({"path": two, "content_base64": B64.encode(&two_bytes)}),
    )
    .await;

    let (st, ct, bytes) = f.get_bytes("/exports/download", &[("path", &one)]).await;
    assert_eq!(st, 200);
    assert_eq!(ct, "application/octet-stream");
    assert_eq!(bytes, b"first");

    let (st, ct, bytes) = f
        .get_bytes(
            "/exports/download",
            &[("paths[]", one.as_str()), ("paths[]", two.as_str())],
        )
        .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(ct, "application/gzip");
    assert_eq!(&bytes[..2], [0x1f, 0x8b], "gzip magic");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut found = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("name").display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("content");
        found.push((name, content));
    }
    let want_one = one.trim_start_matches('/').to_string();
    let want_two = two.trim_start_matches('/').to_string();
    assert!(
        found.contains(&(want_one.clone(), b"first".to_vec())),
        "{want_one} missing: {:?}",
        found.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert!(
        found.contains(&(want_two, two_bytes)),
        "two.bin missing or wrong"
    );

    let (st, v) = f.get_json("/exports/download", &[]).await;
    assert_validation(st, &v, "paths");
}

#[tokio::test]
async fn watch_streams_a_created_event() {
    let f = Fixture::start().await;
    let dir = f.path("watched");
    let (st, v) = f.post("/fs/mkdir", json!({"path": dir})).await;
    assert_eq!(st, 200, "{v}");

    let resp = f
        .srv
        .client
        .get(f.url("/files/watch"))
        .query(&[("path", dir.as_str()), ("recursive", "true")])
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");

    // The agent's watch is in place once the answer's headers are here.
    let file = format!("{dir}/new.txt");
    let (st, v) = f
        .post("/fs/write", json!({"path": file, "content": "hello"}))
        .await;
    assert_eq!(st, 200, "{v}");

    let mut sse = SseReader::new(resp);
    let (frame, v) = sse.until(|v| v["path"] == file.as_str()).await;
    assert!(frame.contains("event: created"), "{frame}");
    assert!(frame.lines().any(|l| l.starts_with("id: ")), "{frame}");
    assert_eq!(v["event"], "created", "{frame}");
    assert_eq!(v["type"], "created");
    assert_eq!(v["is_dir"], false);

    // Writing it again replaces it: that is a modification, not a rename
    // from the agent's temp file.
    let (st, v) = f
        .post("/fs/write", json!({"path": file, "content": "again"}))
        .await;
    assert_eq!(st, 200, "{v}");
    let (frame, v) = sse.until(|v| v["path"] == file.as_str()).await;
    assert_eq!(v["event"], "modified", "{frame}");
    assert!(v.get("old_path").is_none(), "{frame}");

    let gone = format!("{dir}/renamed.txt");
    let (st, v) = f
        .post("/fs/rename", json!({"from": file, "to": gone}))
        .await;
    assert_eq!(st, 200, "{v}");
    let (frame, v) = sse.until(|v| v["path"] == gone.as_str()).await;
    assert_eq!(v["event"], "renamed", "{frame}");
    assert_eq!(v["old_path"], file.as_str(), "{frame}");
    assert!(
        !sse.seen.contains(".hearth-tmp-"),
        "temp files leaked: {}",
        sse.seen
    );

    let (st, v) = f.get_json("/files/watch", &[("path", "rel")]).await;
    assert_validation(st, &v, "path");
}
