//! `GET /files/read` answers a whole file as base64 JSON, written as the
//! file streams in (eight 32 MiB reads at once held 389 MiB of the server
//! when each answer was built whole; `bench/run memory` measures it): the
//! answer is the same JSON, byte for byte decodable, at every size around a
//! base64 group and the limit.

mod common;

use base64::Engine;
use common::TestServer;
use serde_json::{json, Value};

#[tokio::test]
async fn a_file_read_as_json_streams_and_keeps_its_limit() {
    let limit = 1 << 20;
    let srv = TestServer::start_with(|c| c.max_json_body_bytes = limit).await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    // The agent runs on the host here: guest paths are host paths.
    let dir = tempfile::tempdir().expect("dir");
    let read = |path: std::path::PathBuf| {
        let srv = &srv;
        async move {
            let resp = srv
                .client
                .get(srv.url(&format!("/api/v1/sandboxes/{id}/files/read")))
                .query(&[("path", path.to_str().expect("utf8"))])
                .send()
                .await
                .expect("read");
            let status = resp.status().as_u16();
            let ct = resp.headers()["content-type"]
                .to_str()
                .expect("ct")
                .to_string();
            let v: Value = resp.json().await.expect("json");
            (status, ct, v)
        }
    };
    for size in [0, 1, 2, 3, 4, 300_001, limit - 1, limit] {
        let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join(format!("f{size}"));
        std::fs::write(&path, &content).expect("write");
        let (st, ct, v) = read(path.clone()).await;
        assert_eq!((st, ct.as_str()), (200, "application/json"), "{size}: {v}");
        let d = &v["data"];
        assert_eq!(d["path"], path.to_str().expect("utf8"));
        assert_eq!(
            (d["encoding"].as_str(), d["size"].as_u64()),
            (Some("base64"), Some(size as u64))
        );
        let got = base64::engine::general_purpose::STANDARD
            .decode(d["content"].as_str().expect("content"))
            .expect("base64");
        assert!(got == content, "{size} bytes came back different");
    }
    // Past the limit: refused before anything is sent, as before.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; limit + 1]).expect("write");
    let (st, _, v) = read(big).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
    // A missing file is still a 404 answer, not a broken body.
    let (st, _, v) = read(dir.path().join("missing")).await;
    assert_eq!(st, 404, "{v}");
}
