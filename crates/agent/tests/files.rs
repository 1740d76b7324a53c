//! File operations and archives against the real agent binary (watches are
//! in `watch.rs`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hearth_agent_client::AgentClientError;
use hearth_agent_protocol::{ErrorCode, FileType, TreeNode, WriteFileRequest, WriteManyRequest};
use hearth_test_support::wait_until;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

mod common;

use common::*;

// ---------------------------------------------------------------- writes and reads

#[tokio::test]
async fn write_then_read_round_trips_text_and_binary() {
    let agent = start().await;
    let c = agent.client();
    let text = agent.path("text.txt");
    let r = c
        .write_file(&write_req(&text, "héllo\nworld\n".as_bytes(), None))
        .await
        .unwrap();
    assert_eq!(r.path, s(&text));
    assert_eq!(r.size_bytes, "héllo\nworld\n".len() as u64);
    assert_eq!(
        c.read_file_bytes(&s(&text)).await.unwrap(),
        Bytes::from("héllo\nworld\n")
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let bin = agent.path("bin.dat");
    c.write_file(&write_req(&bin, &binary, None)).await.unwrap();
    assert_eq!(c.read_file_bytes(&s(&bin)).await.unwrap(), binary);
    assert_eq!(std::fs::read(&bin).unwrap(), binary);

    let raw = agent.path("raw.dat");
    let r = c
        .write_file_raw_bytes(&s(&raw), Some(0o640), Bytes::from(binary.clone()))
        .await
        .unwrap();
    assert_eq!(r.size_bytes, binary.len() as u64);
    assert_eq!(c.read_file_bytes(&s(&raw)).await.unwrap(), binary);
    assert_eq!(c.stat(&s(&raw)).await.unwrap().mode, 0o640);

    let empty = agent.path("empty");
    c.write_file(&write_req(&empty, b"", None)).await.unwrap();
    assert_eq!(c.read_file_bytes(&s(&empty)).await.unwrap().len(), 0);
}

#[tokio::test]
async fn write_applies_mode_creates_parents_and_replaces_atomically() {
    let agent = start().await;
    let c = agent.client();
    let dir = agent.path("deep/er/still");
    let target = dir.join("secret.txt");
    c.write_file(&write_req(&target, b"first", Some(0o600)))
        .await
        .unwrap();
    assert!(dir.is_dir(), "parents must be created");
    let st = c.stat(&s(&target)).await.unwrap();
    assert_eq!(st.mode, 0o600);
    assert_eq!(st.file_type, FileType::File);
    assert_eq!(st.size, 5);

    // Replacing without a mode keeps the replaced file's mode.
    c.write_file(&write_req(&target, b"second, longer", None))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"second, longer");
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o600
    );

    // A new file without a mode gets 0644 whatever the umask.
    let fresh = dir.join("fresh.txt");
    c.write_file(&write_req(&fresh, b"x", None)).await.unwrap();
    assert_eq!(c.stat(&s(&fresh)).await.unwrap().mode, 0o644);

    // Writing through a symlink updates the file it points at.
    let link = dir.join("link");
    std::os::unix::fs::symlink(&fresh, &link).unwrap();
    c.write_file(&write_req(&link, b"via link", None))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&fresh).unwrap(), b"via link");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fresh.txt", "link", "secret.txt"]);

    // A write onto a directory fails and leaves nothing behind.
    assert_eq!(
        failure(c.write_file(&write_req(&dir, b"x", None)).await),
        (400, ErrorCode::IsADirectory)
    );
    assert!(temp_files(dir.parent().unwrap()).is_empty());
    // A parent that is a file is not a directory.
    let under_file = target.join("child");
    assert_eq!(
        failure(c.write_file(&write_req(&under_file, b"x", None)).await).1,
        ErrorCode::NotADirectory
    );
}

#[tokio::test]
#[ignore = "needs root (file ownership); run with --run-ignored (scripts/test does, as root)"]
async fn replacing_a_users_file_as_root_keeps_its_owner() {
    use std::os::unix::fs::MetadataExt;
    hearth_test_support::require_root("ownership is only kept when the agent runs as root");
    let agent = start().await;
    let c = agent.client();
    let f = agent.path("owned.txt");
    std::fs::write(&f, b"mine").unwrap();
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
    c.write_file(&write_req(&f, b"replaced by root", None))
        .await
        .unwrap();
    c.write_file_raw_bytes(&s(&f), None, Bytes::from_static(b"again"))
        .await
        .unwrap();
    let meta = std::fs::metadata(&f).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(std::fs::read(&f).unwrap(), b"again");
    // A new file is simply the agent's.
    let fresh = agent.path("fresh.txt");
    c.write_file(&write_req(&fresh, b"x", None)).await.unwrap();
    assert_eq!(std::fs::metadata(&fresh).unwrap().uid(), 0);
}

#[tokio::test]
async fn large_file_round_trips_through_raw_write_and_streamed_read() {
    const SIZE: usize = 100 * 1024 * 1024;
    let agent = start().await;
    let c = agent.client();
    let data = pseudo_random(SIZE, 0x9E37_79B9_7F4A_7C15);
    let want = Sha256::digest(&data);
    let path = agent.path("big.bin");

    let started = std::time::Instant::now();
    let r = c
        .write_file_raw(&s(&path), None, std::io::Cursor::new(data))
        .await
        .unwrap();
    let uploaded = started.elapsed();
    assert_eq!(r.size_bytes, SIZE as u64);
    assert_eq!(c.stat(&s(&path)).await.unwrap().size, SIZE as u64);

    let mut stream = c.read_file(&s(&path)).await.unwrap();
    let mut hasher = Sha256::new();
    let mut got = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        got += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(got, SIZE);
    assert_eq!(hasher.finalize(), want);
    assert!(temp_files(agent.dir.path()).is_empty());
    eprintln!(
        "100 MiB: upload {uploaded:?}, round trip {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- list, stat, tree, mkdir, rename, remove

/// t/{a.txt, d1/{b.txt, d2/{c.txt}}, link -> d1}
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d1/d2")).unwrap();
    std::fs::write(root.join("a.txt"), b"aaaaa").unwrap();
    std::fs::write(root.join("d1/b.txt"), b"bb").unwrap();
    std::fs::write(root.join("d1/d2/c.txt"), b"c").unwrap();
    std::os::unix::fs::symlink("d1", root.join("link")).unwrap();
}

#[tokio::test]
async fn list_honours_depth_sorts_and_does_not_follow_symlinks() {
    let agent = start().await;
    let c = agent.client();
    let t = agent.path("t");
    make_tree(&t);
    let rel = |entries: &[hearth_agent_protocol::FileEntry]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e.path.strip_prefix(&s(&t)).unwrap().to_string())
            .collect()
    };

    let one = c.list(&s(&t), None).await.unwrap();
    assert_eq!(one.path, s(&t));
    assert_eq!(rel(&one.entries), ["/a.txt", "/d1", "/link"]);
    let a = &one.entries[0];
    assert_eq!(
        (a.name.as_str(), a.file_type, a.size),
        ("a.txt", FileType::File, 5)
    );
    assert_eq!(a.raw_path, None);
    assert!(a.modified_at_ms > 1_600_000_000_000);
    assert_eq!(one.entries[1].file_type, FileType::Dir);
    let link = &one.entries[2];
    assert_eq!(link.file_type, FileType::Symlink);
    assert_eq!(link.symlink_target.as_deref(), Some("d1"));

    let two = c.list(&s(&t), Some(2)).await.unwrap();
    assert_eq!(
        rel(&two.entries),
        ["/a.txt", "/d1", "/d1/b.txt", "/d1/d2", "/link"]
    );
    let all = c.list(&s(&t), Some(10)).await.unwrap();
    assert_eq!(
        rel(&all.entries),
        [
            "/a.txt",
            "/d1",
            "/d1/b.txt",
            "/d1/d2",
            "/d1/d2/c.txt",
            "/link"
        ],
        "the symlinked directory must not be entered"
    );

    assert_eq!(
        failure(c.list(&s(&t), Some(0)).await),
        (400, ErrorCode::BadRequest)
    );
    assert_eq!(
        failure(c.list(&s(&t), Some(11)).await).1,
        ErrorCode::BadRequest
    );
    assert_eq!(
        failure(c.list(&s(&t.join("a.txt")), None).await),
        (400, ErrorCode::NotADirectory)
    );

    let st = c.stat(&s(&t.join("link"))).await.unwrap();
    assert_eq!(st.file_type, FileType::Symlink);
    assert_eq!(st.symlink_target.as_deref(), Some("d1"));
    let st = c.stat(&s(&t.join("d1/b.txt"))).await.unwrap();
    assert_eq!((st.name.as_str(), st.size), ("b.txt", 2));
}

/// `name[child,child[...]]`; a directory without children (beyond the depth)
/// has no brackets.
fn render(node: &TreeNode) -> String {
    match &node.children {
        None => node.name.clone(),
        Some(kids) => format!(
            "{}[{}]",
            node.name,
            kids.iter().map(render).collect::<Vec<_>>().join(",")
        ),
    }
}

#[tokio::test]
async fn tree_has_children_within_depth() {
    let agent = start().await;
    let c = agent.client();
    let t = agent.path("t");
    make_tree(&t);
    let full = c.tree(&s(&t), None).await.unwrap();
    assert_eq!(render(&full), "t[a.txt,d1[b.txt,d2[c.txt]],link]");
    assert_eq!(full.file_type, FileType::Dir);
    assert_eq!(full.path, s(&t));
    let kids = full.children.as_ref().unwrap();
    assert_eq!((kids[0].file_type, kids[0].size), (FileType::File, 5));
    assert_eq!(kids[2].file_type, FileType::Symlink);
    assert_eq!(
        render(&c.tree(&s(&t), Some(2)).await.unwrap()),
        "t[a.txt,d1[b.txt,d2],link]"
    );
    assert_eq!(
        render(&c.tree(&s(&t), Some(1)).await.unwrap()),
        "t[a.txt,d1,link]"
    );
    assert_eq!(
        failure(c.tree(&s(&t.join("nope")), None).await),
        (404, ErrorCode::FileNotFound)
    );
}

#[tokio::test]
async fn mkdir_rename_and_remove() {
    let agent = start().await;
    let c = agent.client();

    let deep = agent.path("m/x/y");
    let e = c.mkdir(&s(&deep), Some(0o700)).await.unwrap();
    assert_eq!((e.file_type, e.mode), (FileType::Dir, 0o700));
    assert!(deep.is_dir());
    // Existing directory: fine. Existing file: AlreadyExists.
    c.mkdir(&s(&deep), None).await.unwrap();
    let file = agent.path("m/file");
    std::fs::write(&file, b"f").unwrap();
    assert_eq!(
        failure(c.mkdir(&s(&file), None).await),
        (409, ErrorCode::AlreadyExists)
    );

    // Rename creates the destination's parents.
    let to = agent.path("moved/deeper/file2");
    let e = c.rename(&s(&file), &s(&to)).await.unwrap();
    assert_eq!((e.path, e.size), (s(&to), 1));
    assert!(!file.exists());
    assert_eq!(std::fs::read(&to).unwrap(), b"f");
    assert_eq!(
        failure(c.rename(&s(&file), &s(&to)).await),
        (404, ErrorCode::FileNotFound)
    );

    // Non-empty directory needs `recursive`.
    std::fs::write(deep.join("inner"), b"i").unwrap();
    let top = agent.path("m");
    assert_eq!(
        failure(c.remove(&s(&top), false).await),
        (409, ErrorCode::DirectoryNotEmpty)
    );
    assert!(deep.join("inner").exists());
    c.remove(&s(&to), false).await.unwrap();
    assert!(!to.exists());
    c.remove(&s(&top), true).await.unwrap();
    assert!(!top.exists());
    assert_eq!(
        failure(c.remove(&s(&top), true).await),
        (404, ErrorCode::FileNotFound)
    );
    // An empty directory goes without `recursive`; a symlink is unlinked,
    // not followed.
    let empty = agent.path("moved/deeper");
    let keep = agent.path("keep");
    std::fs::create_dir(&keep).unwrap();
    std::fs::write(keep.join("k"), b"k").unwrap();
    let link = agent.path("keep-link");
    std::os::unix::fs::symlink(&keep, &link).unwrap();
    c.remove(&s(&empty), false).await.unwrap();
    c.remove(&s(&link), true).await.unwrap();
    assert!(!empty.exists() && !link.exists());
    assert!(keep.join("k").exists());
}

#[tokio::test]
async fn write_many_reports_bad_paths_and_writes_the_rest() {
    let agent = start().await;
    let c = agent.client();
    let a = agent.path("many/a.txt");
    let b = agent.path("many/sub/b.txt");
    let resp = c
        .write_many(&WriteManyRequest {
            files: vec![
                write_req(&a, b"A", None),
                WriteFileRequest {
                    path: "relative/c.txt".into(),
                    content: b"C"[..].into(),
                    mode: None,
                },
                write_req(&b, b"BB", Some(0o755)),
            ],
        })
        .await
        .unwrap();
    let written: Vec<(String, u64)> = resp
        .written
        .iter()
        .map(|w| (w.path.clone(), w.size_bytes))
        .collect();
    assert_eq!(written, [(s(&a), 1), (s(&b), 2)]);
    assert_eq!(resp.failed.len(), 1);
    assert_eq!(resp.failed[0].path, "relative/c.txt");
    assert_eq!(resp.failed[0].error.code, ErrorCode::InvalidPath);
    assert_eq!(std::fs::read(&a).unwrap(), b"A");
    assert_eq!(std::fs::read(&b).unwrap(), b"BB");
    assert_eq!(
        std::fs::metadata(&b).unwrap().permissions().mode() & 0o7777,
        0o755
    );
}

// ---------------------------------------------------------------- archive

#[tokio::test]
async fn archive_holds_directories_and_files_under_absolute_names() {
    let agent = start().await;
    let c = agent.client();
    let d = agent.path("arc/d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("a.txt"), b"alpha").unwrap();
    let big = pseudo_random(3 * 1024 * 1024, 7);
    std::fs::write(d.join("sub/b.bin"), &big).unwrap();
    let single = agent.path("arc/single.txt");
    std::fs::write(&single, b"one file").unwrap();

    let gz = c
        .archive(&[s(&d), s(&single)])
        .await
        .unwrap()
        .collect(64 << 20)
        .await
        .unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    let mut found: BTreeMap<PathBuf, Option<Vec<u8>>> = BTreeMap::new();
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().into_owned();
        let content = if entry.header().entry_type().is_dir() {
            None
        } else {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).unwrap();
            Some(buf)
        };
        found.insert(name, content);
    }
    let name = |p: &Path| p.strip_prefix("/").unwrap().to_path_buf();
    let want: BTreeMap<PathBuf, Option<Vec<u8>>> = [
        (name(&d), None),
        (name(&d.join("a.txt")), Some(b"alpha".to_vec())),
        (name(&d.join("sub")), None),
        (name(&d.join("sub/b.bin")), Some(big)),
        (name(&single), Some(b"one file".to_vec())),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(found == want, "archive contents differ");

    assert_eq!(
        failure(c.archive(&[s(&d), s(&agent.path("arc/missing"))]).await),
        (404, ErrorCode::FileNotFound)
    );
    assert_eq!(
        failure(c.archive(&["relative"]).await).1,
        ErrorCode::InvalidPath
    );
}

/// Bytes the process has read so far (`rchar` of /proc/PID/io).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn archive_stops_when_the_client_goes_away() {
    const SIZE: usize = 96 * 1024 * 1024;
    let agent = start().await;
    let c = agent.client();
    let pid = agent.pid().unwrap();
    let big = agent.path("big/incompressible.bin");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    std::fs::write(&big, pseudo_random(SIZE, 42)).unwrap();

    let before = bytes_read(pid);
    let mut stream = c.archive(&[s(&big)]).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    // Once the compressing thread notices, the agent stops reading the file.
    let mut last = None;
    let settled = wait_until(Duration::from_secs(10), "archive reads stop", || {
        let now = bytes_read(pid);
        let same = last == Some(now);
        last = Some(now);
        async move { same.then_some(now) }
    })
    .await
    .unwrap();
    assert!(
        settled - before < SIZE as u64 / 2,
        "agent read {} bytes after the client left",
        settled - before
    );
    c.health().await.unwrap();
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn relative_and_missing_paths_are_typed_errors() {
    let agent = start().await;
    let c = agent.client();
    assert_eq!(
        failure(c.read_file("etc/passwd").await),
        (400, ErrorCode::InvalidPath)
    );
    assert_eq!(failure(c.stat("").await), (400, ErrorCode::InvalidPath));
    assert_eq!(
        failure(
            c.write_file(&write_req(Path::new("rel.txt"), b"x", None))
                .await
        ),
        (400, ErrorCode::InvalidPath)
    );
    assert_eq!(
        failure(c.write_file_raw_bytes("rel.txt", None, Bytes::new()).await).1,
        ErrorCode::InvalidPath
    );
    assert_eq!(
        failure(c.mkdir("a/b", None).await).1,
        ErrorCode::InvalidPath
    );
    assert_eq!(
        failure(c.watch("rel", false).await).1,
        ErrorCode::InvalidPath
    );

    let missing = s(&agent.path("missing.txt"));
    assert_eq!(
        failure(c.read_file(&missing).await),
        (404, ErrorCode::FileNotFound)
    );
    assert_eq!(
        failure(c.stat(&missing).await),
        (404, ErrorCode::FileNotFound)
    );
    assert_eq!(
        failure(c.list(&missing, None).await),
        (404, ErrorCode::FileNotFound)
    );
    assert_eq!(
        failure(c.remove(&missing, false).await),
        (404, ErrorCode::FileNotFound)
    );
    assert_eq!(
        failure(c.watch(&missing, true).await),
        (404, ErrorCode::FileNotFound)
    );
    assert_eq!(
        failure(c.read_file(&s(agent.dir.path())).await),
        (400, ErrorCode::IsADirectory)
    );
    assert_eq!(
        failure(
            c.write_file_raw_bytes(&s(&agent.path("f")), Some(0o777_7777), Bytes::new())
                .await
        )
        .1,
        ErrorCode::BadRequest
    );
}

#[tokio::test]
async fn removing_root_through_dotdot_is_refused() {
    let agent = start().await;
    let c = agent.client();
    let marker = agent.path("ws/marker");
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, b"still here").unwrap();
    let ws = s(&agent.path("ws"));
    let root = format!("{ws}{}", "/..".repeat(20));
    for path in [root.as_str(), "/", "/proc/../proc", "/dev/pts/"] {
        let (status, code) = failure(c.remove(path, true).await);
        assert_eq!((status, code), (400, ErrorCode::BadRequest), "{path}");
    }
    // `rm`'s rule: a path ending in `..` is refused, not resolved.
    let (_, code) = failure(c.remove(&format!("{ws}/.."), true).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert_eq!(std::fs::read(&marker).unwrap(), b"still here");
    c.health().await.unwrap();
}

#[tokio::test]
async fn non_utf8_names_are_listed_and_reachable_by_raw_path() {
    let agent = start().await;
    let c = agent.client();
    let dir = agent.path("nu");
    std::fs::create_dir(&dir).unwrap();
    let raw_name = b"caf\xe9 & \xff.txt";
    let file = dir.join(OsStr::from_bytes(raw_name));
    std::fs::write(&file, b"latin-1").unwrap();

    let listed = c.list(&s(&dir), None).await.unwrap();
    assert_eq!(listed.entries.len(), 1);
    let e = &listed.entries[0];
    let raw = e
        .raw_path
        .as_ref()
        .expect("raw_path set for a non-UTF-8 name");
    assert_eq!(raw.as_slice(), file.as_os_str().as_bytes());
    assert!(e.name.contains('\u{FFFD}'), "lossy name: {}", e.name);

    let st = c.stat_raw_path(raw.as_slice()).await.unwrap();
    assert_eq!((st.file_type, st.size), (FileType::File, 7));
    assert_eq!(
        st.raw_path.as_ref().map(|r| r.as_slice()),
        Some(raw.as_slice())
    );
    let body = c
        .read_file_raw_path(raw.as_slice())
        .await
        .unwrap()
        .collect(1 << 20)
        .await
        .unwrap();
    assert_eq!(body, Bytes::from_static(b"latin-1"));
    // The host never reads more of an answer than it asked for.
    let over = c
        .read_file_raw_path(raw.as_slice())
        .await
        .unwrap()
        .collect(3)
        .await;
    assert!(
        matches!(
            over,
            Err(hearth_agent_client::AgentClientError::TooLarge { limit: 3 })
        ),
        "{over:?}"
    );

    // A directory whose own name is not UTF-8 can be listed by its bytes.
    let odd_dir = dir.join(OsStr::from_bytes(b"d\xfe"));
    std::fs::create_dir(&odd_dir).unwrap();
    std::fs::write(odd_dir.join("inside.txt"), b"i").unwrap();
    let listed = c
        .list_raw_path(odd_dir.as_os_str().as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].name, "inside.txt");
    assert_eq!(
        listed.entries[0].raw_path.as_ref().map(|r| r.as_slice()),
        Some(odd_dir.join("inside.txt").as_os_str().as_bytes())
    );
}

#[tokio::test]
async fn oversized_json_body_is_payload_too_large() {
    let agent = start().await;
    let c = agent.client();
    let path = agent.path("huge.bin");
    // 50 MiB is over 64 MiB once base64-encoded.
    let req = write_req(&path, &vec![0u8; 50 * 1024 * 1024], None);
    assert_eq!(
        failure(c.write_file(&req).await),
        (413, ErrorCode::PayloadTooLarge)
    );
    assert!(!path.exists());
    c.health().await.unwrap();
}

/// Yields some bytes, then fails like a broken local source.
struct FailingReader {
    data: Option<Vec<u8>>,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.data.take() {
            Some(d) => {
                buf.put_slice(&d[..d.len().min(buf.remaining())]);
                Poll::Ready(Ok(()))
            }
            None => Poll::Ready(Err(std::io::Error::other("source broke"))),
        }
    }
}

#[tokio::test]
async fn abandoned_raw_upload_leaves_no_target_and_no_temp_file() {
    let agent = start().await;
    let c = agent.client();
    let dir = agent.path("up");
    std::fs::create_dir(&dir).unwrap();

    // 1. The caller gives up midway (its future is dropped).
    let target = dir.join("new.bin");
    let (reader, mut writer) = tokio::io::duplex(8 * 1024 * 1024);
    writer.write_all(&vec![7u8; 3 * 1024 * 1024]).await.unwrap();
    let upload = {
        let c = c.clone();
        let target = s(&target);
        tokio::spawn(async move { c.write_file_raw(&target, None, reader).await })
    };
    // The data reached the agent's temp file: the upload is truly midway.
    wait_until(Duration::from_secs(10), "partial temp file", || {
        let dir = dir.clone();
        async move {
            std::fs::read_dir(&dir).ok()?.flatten().find(|e| {
                e.file_name().to_string_lossy().contains(".hearth-tmp-")
                    && e.metadata()
                        .map(|m| m.len() >= 1024 * 1024)
                        .unwrap_or(false)
            })
        }
    })
    .await
    .unwrap();
    upload.abort();
    let _ = upload.await;
    wait_until(Duration::from_secs(10), "temp file removed", || {
        let dir = dir.clone();
        async move { temp_files(&dir).is_empty().then_some(()) }
    })
    .await
    .unwrap();
    assert!(!target.exists());
    drop(writer);

    // 2. The source fails midway: the existing target is untouched.
    let existing = dir.join("existing.txt");
    std::fs::write(&existing, b"original").unwrap();
    let err = c
        .write_file_raw(
            &s(&existing),
            None,
            FailingReader {
                data: Some(vec![1u8; 2 * 1024 * 1024]),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AgentClientError::Stream(_)), "{err:?}");
    wait_until(Duration::from_secs(10), "temp file removed", || {
        let dir = dir.clone();
        async move { temp_files(&dir).is_empty().then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(std::fs::read(&existing).unwrap(), b"original");

    c.health().await.unwrap();
    // And the same connection still carries uploads.
    c.write_file_raw_bytes(&s(&existing), None, Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&existing).unwrap(), b"new");
}
