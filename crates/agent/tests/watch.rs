//! File watches against the real agent binary: create, modify, delete and
//! rename events, one event per write, atomic replacement, recursion into
//! new directories.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use hearth_agent_client::NdjsonStream;
use hearth_agent_protocol::{WatchEvent, WatchEventKind};
use hearth_test_support::wait_until;

mod common;

use common::*;

/// Reads events until one matches, failing after a deadline.
async fn expect_event(
    stream: &mut NdjsonStream<WatchEvent>,
    what: &str,
    matches: impl Fn(&WatchEvent) -> bool,
) -> WatchEvent {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(ev)) if matches(&ev) => return ev,
                Some(Ok(ev)) => seen.push(ev),
                Some(Err(e)) => panic!("watch stream failed: {e}"),
                None => panic!("watch stream ended while waiting for {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} event within 10s; saw {seen:?}"))
}

fn is(kind: WatchEventKind, path: &Path) -> impl Fn(&WatchEvent) -> bool {
    let path = s(path);
    move |ev| ev.event == kind && ev.path == path
}

#[tokio::test]
async fn watch_reports_create_modify_delete_and_rename() {
    let agent = start().await;
    let c = agent.client();
    let dir = agent.path("w");
    std::fs::create_dir(&dir).unwrap();
    let mut events = c.watch(&s(&dir), false).await.unwrap();

    let f = dir.join("f.txt");
    std::fs::write(&f, b"one").unwrap();
    let ev = expect_event(&mut events, "created", is(WatchEventKind::Created, &f)).await;
    assert!(!ev.is_dir);

    // Appending to an existing file is a modification. (A std file, closed
    // here: tokio's closes later on a blocking thread, and its CLOSE_WRITE
    // could land between the rename's MOVED_FROM and MOVED_TO below.)
    let mut file = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    std::io::Write::write_all(&mut file, b" two").unwrap();
    drop(file);
    expect_event(&mut events, "modified", is(WatchEventKind::Modified, &f)).await;

    let g = dir.join("g.txt");
    std::fs::rename(&f, &g).unwrap();
    let ev = expect_event(&mut events, "renamed", is(WatchEventKind::Renamed, &g)).await;
    assert_eq!(ev.old_path, Some(s(&f)));

    std::fs::remove_file(&g).unwrap();
    expect_event(&mut events, "deleted", is(WatchEventKind::Deleted, &g)).await;

    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let ev = expect_event(
        &mut events,
        "dir created",
        is(WatchEventKind::Created, &sub),
    )
    .await;
    assert!(ev.is_dir);

    // Moving something out of the watched tree reads as a deletion.
    let outside = agent.path("outside.txt");
    let h = dir.join("h.txt");
    std::fs::write(&h, b"h").unwrap();
    std::fs::rename(&h, &outside).unwrap();
    expect_event(&mut events, "moved out", is(WatchEventKind::Deleted, &h)).await;

    // The agent stops watching once the client is gone, and keeps serving.
    let pid = agent.pid().unwrap();
    assert_eq!(inotify_fds(pid), 1);
    drop(events);
    wait_until(
        Duration::from_secs(10),
        "inotify instance closed",
        || async move { (inotify_fds(pid) == 0).then_some(()) },
    )
    .await
    .unwrap();
    c.health().await.unwrap();
}

/// inotify instances the process holds open.
fn inotify_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.as_os_str() == "anon_inode:inotify")
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn one_write_is_one_or_few_modified_events() {
    let agent = start().await;
    let c = agent.client();
    let dir = agent.path("w");
    std::fs::create_dir(&dir).unwrap();
    let f = dir.join("f");
    std::fs::write(&f, b"").unwrap();
    let mut events = c.watch(&s(&dir), false).await.unwrap();

    // Many small writes through one open file, paced so the kernel cannot
    // merge them into one queued event: the agent has to coalesce them.
    let mut file = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    for _ in 0..50 {
        std::io::Write::write_all(&mut file, b"x").unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(file);
    expect_event(&mut events, "modified", is(WatchEventKind::Modified, &f)).await;
    // A marker whose event arrives after everything the writes produced.
    let marker = dir.join("marker");
    std::fs::write(&marker, b"").unwrap();
    let mut extra = 0;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if ev.path == s(&marker) {
            break;
        }
        if ev.path == s(&f) && ev.event == WatchEventKind::Modified {
            extra += 1;
        }
    }
    assert!(
        extra <= 3,
        "50 writes produced {} modified events",
        extra + 1
    );
}

#[tokio::test]
async fn watching_a_file_survives_its_atomic_replacement() {
    let agent = start().await;
    let c = agent.client();
    let f = agent.path("watched.txt");
    std::fs::write(&f, b"v1").unwrap();
    let mut events = c.watch(&s(&f), false).await.unwrap();

    // Unrelated files next to it are filtered out.
    std::fs::write(agent.path("other.txt"), b"x").unwrap();
    c.write_file(&write_req(&f, b"v2", None)).await.unwrap();
    let ev = expect_event(&mut events, "replaced", |e| e.path == s(&f)).await;
    assert_ne!(ev.path, s(&agent.path("other.txt")));
    assert_eq!(ev.event, WatchEventKind::Renamed);

    std::fs::write(&f, b"v3").unwrap();
    expect_event(&mut events, "modified", is(WatchEventKind::Modified, &f)).await;
    std::fs::remove_file(&f).unwrap();
    expect_event(&mut events, "deleted", is(WatchEventKind::Deleted, &f)).await;
}

#[tokio::test]
async fn recursive_watch_follows_new_subdirectories() {
    let agent = start().await;
    let c = agent.client();
    let dir = agent.path("rw");
    std::fs::create_dir_all(dir.join("existing")).unwrap();
    let mut events = c.watch(&s(&dir), true).await.unwrap();

    // A subdirectory that existed when the watch started.
    let e1 = dir.join("existing/e.txt");
    std::fs::write(&e1, b"e").unwrap();
    expect_event(
        &mut events,
        "created in existing subdir",
        is(WatchEventKind::Created, &e1),
    )
    .await;

    // A subdirectory created afterwards, with a file written into it at once
    // (possibly before the agent had a watch on it).
    let fresh = dir.join("fresh/nested");
    std::fs::create_dir_all(&fresh).unwrap();
    let early = fresh.join("early.txt");
    std::fs::write(&early, b"1").unwrap();
    expect_event(
        &mut events,
        "created in new subdir",
        is(WatchEventKind::Created, &early),
    )
    .await;
    // And later activity in it, after the watch was surely in place.
    let late = fresh.join("late.txt");
    std::fs::write(&late, b"2").unwrap();
    expect_event(
        &mut events,
        "created later in new subdir",
        is(WatchEventKind::Created, &late),
    )
    .await;

    // A directory renamed inside the tree keeps being watched under its new name.
    let renamed = dir.join("renamed");
    std::fs::rename(dir.join("fresh"), &renamed).unwrap();
    let ev = expect_event(
        &mut events,
        "dir renamed",
        is(WatchEventKind::Renamed, &renamed),
    )
    .await;
    assert!(ev.is_dir);
    let inside = renamed.join("nested/inside.txt");
    std::fs::write(&inside, b"3").unwrap();
    expect_event(
        &mut events,
        "created in renamed dir",
        is(WatchEventKind::Created, &inside),
    )
    .await;

    // Non-recursive watches do not see into subdirectories.
    let mut flat = c.watch(&s(&dir), false).await.unwrap();
    std::fs::write(dir.join("existing/deep.txt"), b"d").unwrap();
    let top = dir.join("top.txt");
    std::fs::write(&top, b"t").unwrap();
    let first = expect_event(&mut flat, "top-level create", |_| true).await;
    assert_eq!(first.path, s(&top), "a flat watch saw {first:?}");
}
