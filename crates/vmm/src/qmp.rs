//! A small typed QMP client over the documented JSON protocol: greeting,
//! `qmp_capabilities`, commands matched to replies by `id`, asynchronous
//! events interleaved with replies delivered on a broadcast channel, and
//! file descriptors passed with `SCM_RIGHTS` (`getfd`).
//!
//! Our own because the `qapi` crate bundles a newer schema and fails on
//! some QEMU 7.2 replies; only the handful of commands the driver uses are
//! typed here, everything else goes through [`QmpClient::execute`].

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connect to {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("qmp i/o")]
    Io(#[source] std::io::Error),
    #[error("bad qmp greeting: {0}")]
    Greeting(String),
    #[error("qmp connection closed")]
    Closed,
    #[error("{command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("decode reply to {command}")]
    Decode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("no reply to {command} within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
}

/// A typed QMP command: its name, its arguments (the struct itself), and
/// the type of its `return`.
pub trait Command: Serialize {
    const NAME: &'static str;
    type Returns: DeserializeOwned;
}

/// `{}`: what most commands return.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Empty {}

/// An asynchronous event.
#[derive(Debug, Clone, Deserialize)]
pub struct QmpEvent {
    pub event: String,
    #[serde(default)]
    pub data: Value,
}

/// `QMP.version.qemu` of the greeting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

type Reply = Result<Value, QmpError>;

#[derive(Debug, Default)]
struct Pending {
    waiters: HashMap<u64, (String, oneshot::Sender<Reply>)>,
    closed: bool,
}

/// One QMP session. Dropping it closes the connection.
#[derive(Debug)]
pub struct QmpClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Mutex<Pending>>,
    events: broadcast::Sender<QmpEvent>,
    next_id: AtomicU64,
    version: QemuVersion,
    reader: JoinHandle<()>,
    timeout: Duration,
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl QmpClient {
    /// Connects, reads the greeting and leaves capability negotiation mode.
    /// `timeout` bounds every later command too.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<QmpClient, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut line = String::new();
        let n = tokio::time::timeout(timeout, read.read_line(&mut line))
            .await
            .map_err(|_| QmpError::Timeout {
                command: "greeting".into(),
                timeout,
            })?
            .map_err(QmpError::Io)?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        let version = parse_greeting(&line)?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (events, _) = broadcast::channel(256);
        let reader = tokio::spawn(read_loop(read, pending.clone(), events.clone()));
        let client = QmpClient {
            writer: tokio::sync::Mutex::new(write),
            pending,
            events,
            next_id: AtomicU64::new(1),
            version,
            reader,
            timeout,
        };
        client.run(&QmpCapabilities {}).await?;
        Ok(client)
    }

    pub fn version(&self) -> QemuVersion {
        self.version
    }

    /// Events from now on. Slow receivers lose the oldest (broadcast lag).
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// Runs a typed command.
    pub async fn run<C: Command>(&self, cmd: &C) -> Result<C::Returns, QmpError> {
        let args = serde_json::to_value(cmd).map_err(|source| QmpError::Decode {
            command: C::NAME.into(),
            source,
        })?;
        let value = self.execute(C::NAME, args).await?;
        serde_json::from_value(value).map_err(|source| QmpError::Decode {
            command: C::NAME.into(),
            source,
        })
    }

    /// Runs any command; `args` that are `null` or `{}` are left out.
    pub async fn execute(&self, name: &str, args: Value) -> Result<Value, QmpError> {
        self.execute_inner(name, args, None).await
    }

    /// Runs a command with a file descriptor attached (`getfd`,
    /// `add-fd`): QEMU takes the descriptors that arrive with the command's
    /// bytes.
    pub async fn execute_with_fd(
        &self,
        name: &str,
        args: Value,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        self.execute_inner(name, args, Some(fd)).await
    }

    async fn execute_inner(
        &self,
        name: &str,
        args: Value,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = serde_json::json!({ "execute": name, "id": id });
        let has_args = match &args {
            Value::Null => false,
            Value::Object(m) => !m.is_empty(),
            _ => true,
        };
        if has_args {
            msg["arguments"] = args;
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|source| QmpError::Decode {
            command: name.into(),
            source,
        })?;
        bytes.push(b'\n');

        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock();
            if p.closed {
                return Err(QmpError::Closed);
            }
            p.waiters.insert(id, (name.to_string(), tx));
        }
        let sent = {
            let mut w = self.writer.lock().await;
            match fd {
                None => w.write_all(&bytes).await,
                Some(fd) => send_with_fd(&w, &bytes, fd).await,
            }
        };
        if let Err(e) = sent {
            self.forget(id);
            return Err(QmpError::Io(e));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(QmpError::Closed),
            Err(_) => {
                self.forget(id);
                Err(QmpError::Timeout {
                    command: name.into(),
                    timeout: self.timeout,
                })
            }
        }
    }

    fn forget(&self, id: u64) {
        self.pending.lock().waiters.remove(&id);
    }

    /// True once QEMU closed the connection.
    pub fn is_closed(&self) -> bool {
        self.pending.lock().closed
    }
}

/// The whole command goes out in one `sendmsg` so the descriptor arrives
/// with its bytes.
async fn send_with_fd(w: &OwnedWriteHalf, bytes: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let stream: &UnixStream = w.as_ref();
    let raw = [fd.as_raw_fd()];
    let mut off = 0;
    while off < bytes.len() {
        stream.writable().await?;
        let res = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [IoSlice::new(&bytes[off..])];
            // Only the first chunk carries the descriptor.
            let cmsgs: &[ControlMessage<'_>] = if off == 0 {
                &[ControlMessage::ScmRights(&raw)]
            } else {
                &[]
            };
            sendmsg::<()>(
                stream.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match res {
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn parse_greeting(line: &str) -> Result<QemuVersion, QmpError> {
    let v: Value =
        serde_json::from_str(line.trim()).map_err(|e| QmpError::Greeting(e.to_string()))?;
    let qemu = v
        .get("QMP")
        .and_then(|q| q.get("version"))
        .and_then(|v| v.get("qemu"))
        .ok_or_else(|| QmpError::Greeting(format!("no QMP.version.qemu in {}", line.trim())))?;
    serde_json::from_value(qemu.clone()).map_err(|e| QmpError::Greeting(e.to_string()))
}

async fn read_loop(
    mut read: BufReader<OwnedReadHalf>,
    pending: Arc<Mutex<Pending>>,
    events: broadcast::Sender<QmpEvent>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match read.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let msg: Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, line = line.trim(), "unparsable qmp message");
                continue;
            }
        };
        dispatch(msg, &pending, &events);
    }
    let mut p = pending.lock();
    p.closed = true;
    for (_, (_, tx)) in p.waiters.drain() {
        let _ = tx.send(Err(QmpError::Closed));
    }
}

fn dispatch(msg: Value, pending: &Mutex<Pending>, events: &broadcast::Sender<QmpEvent>) {
    if msg.get("event").is_some() {
        match serde_json::from_value::<QmpEvent>(msg) {
            Ok(ev) => {
                tracing::debug!(event = %ev.event, "qmp event");
                let _ = events.send(ev);
            }
            Err(e) => tracing::warn!(error = %e, "bad qmp event"),
        }
        return;
    }
    let Some(id) = msg.get("id").and_then(Value::as_u64) else {
        tracing::warn!(%msg, "qmp reply without our id");
        return;
    };
    let Some((command, tx)) = pending.lock().waiters.remove(&id) else {
        return; // its caller gave up (timeout)
    };
    let reply = if let Some(ret) = msg.get("return") {
        Ok(ret.clone())
    } else if let Some(err) = msg.get("error") {
        Err(QmpError::Command {
            command,
            class: err
                .get("class")
                .and_then(Value::as_str)
                .unwrap_or("GenericError")
                .to_string(),
            desc: err
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
    } else {
        Err(QmpError::Command {
            command,
            class: "Protocol".into(),
            desc: format!("reply with neither return nor error: {msg}"),
        })
    };
    let _ = tx.send(reply);
}

// ---------------------------------------------------------------- commands

macro_rules! command {
    ($ty:ty, $name:literal, $ret:ty) => {
        impl Command for $ty {
            const NAME: &'static str = $name;
            type Returns = $ret;
        }
    };
}

#[derive(Debug, Clone, Serialize)]
pub struct QmpCapabilities {}
command!(QmpCapabilities, "qmp_capabilities", Empty);

#[derive(Debug, Clone, Serialize)]
pub struct Stop {}
command!(Stop, "stop", Empty);

#[derive(Debug, Clone, Serialize)]
pub struct Cont {}
command!(Cont, "cont", Empty);

#[derive(Debug, Clone, Serialize)]
pub struct Quit {}
command!(Quit, "quit", Empty);

#[derive(Debug, Clone, Serialize)]
pub struct QueryStatus {}
command!(QueryStatus, "query-status", StatusInfo);

#[derive(Debug, Clone, Deserialize)]
pub struct StatusInfo {
    pub running: bool,
    /// `running`, `paused`, `inmigrate`, `postmigrate`, `shutdown`, ...
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Migrate {
    pub uri: String,
}
command!(Migrate, "migrate", Empty);

#[derive(Debug, Clone, Serialize)]
pub struct MigrateIncoming {
    pub uri: String,
}
command!(MigrateIncoming, "migrate-incoming", Empty);

#[derive(Debug, Clone, Serialize)]
pub struct QueryMigrate {}
command!(QueryMigrate, "query-migrate", MigrationInfo);

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MigrationInfo {
    /// `none`, `setup`, `active`, `completed`, `failed`, `cancelled`...
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, rename = "error-desc")]
    pub error_desc: Option<String>,
    #[serde(default, rename = "total-time")]
    pub total_time: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationCapability {
    pub capability: String,
    pub state: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrateSetCapabilities {
    pub capabilities: Vec<MigrationCapability>,
}
command!(MigrateSetCapabilities, "migrate-set-capabilities", Empty);

/// Takes the descriptor sent with it; use [`QmpClient::execute_with_fd`].
#[derive(Debug, Clone, Serialize)]
pub struct GetFd {
    pub fdname: String,
}
command!(GetFd, "getfd", Empty);

#[derive(Debug, Clone, Serialize)]
pub struct CloseFd {
    pub fdname: String,
}
command!(CloseFd, "closefd", Empty);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    #[test]
    fn greeting_version() {
        let g = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18"}, "capabilities": ["oob"]}}"#;
        assert_eq!(
            parse_greeting(g).unwrap(),
            QemuVersion {
                major: 7,
                minor: 2,
                micro: 22
            }
        );
        assert!(matches!(
            parse_greeting(r#"{"return": {}}"#),
            Err(QmpError::Greeting(_))
        ));
    }

    /// A fake QEMU: greets, answers capabilities, then for `query-status`
    /// sends an event before the reply and answers `stop` with an error.
    async fn fake_qemu(listener: UnixListener) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n").await.unwrap();
        let mut line = String::new();
        while r.read_line(&mut line).await.unwrap() > 0 {
            let v: Value = serde_json::from_str(&line).unwrap();
            let id = v["id"].clone();
            let reply = match v["execute"].as_str().unwrap() {
                "qmp_capabilities" => serde_json::json!({"return": {}, "id": id}),
                "query-status" => {
                    let ev = serde_json::json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}});
                    w.write_all(format!("{ev}\r\n").as_bytes()).await.unwrap();
                    serde_json::json!({"return": {"running": false, "singlestep": false, "status": "paused"}, "id": id})
                }
                _ => {
                    serde_json::json!({"error": {"class": "GenericError", "desc": "nope"}, "id": id})
                }
            };
            w.write_all(format!("{reply}\r\n").as_bytes())
                .await
                .unwrap();
            line.clear();
        }
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest).await;
    }

    #[tokio::test]
    async fn replies_and_events_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(fake_qemu(listener));
        let qmp = QmpClient::connect(&path, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(qmp.version().minor, 2);
        let mut events = qmp.subscribe();
        let st = qmp.run(&QueryStatus {}).await.unwrap();
        assert_eq!(st.status, "paused");
        assert!(!st.running);
        assert_eq!(events.recv().await.unwrap().event, "STOP");
        match qmp.run(&Stop {}).await {
            Err(QmpError::Command {
                command,
                class,
                desc,
            }) => {
                assert_eq!(command, "stop");
                assert_eq!(class, "GenericError");
                assert_eq!(desc, "nope");
            }
            other => panic!("expected command error, got {other:?}"),
        }
        drop(qmp);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn closed_connection_fails_pending_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, \"capabilities\": []}}\r\n").await.unwrap();
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            w.write_all(
                format!("{}\r\n", serde_json::json!({"return": {}, "id": v["id"]})).as_bytes(),
            )
            .await
            .unwrap();
            line.clear();
            r.read_line(&mut line).await.unwrap();
            // Hang up without answering.
        });
        let qmp = QmpClient::connect(&path, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(matches!(qmp.run(&Quit {}).await, Err(QmpError::Closed)));
        assert!(qmp.is_closed());
    }
}
