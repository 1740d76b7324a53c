//! E2B's envd protocol, served host-side by the proxy listener for a
//! sandbox it addresses (`Host: 49983-<sandboxID>.<domain>`, or the
//! `E2b-Sandbox-Id` header on `E2B_SANDBOX_URL`) and translated to
//! Hearth's guest agent: Connect RPC `process.Process` ([`process`]) and
//! `filesystem.Filesystem` ([`filesystem`]) over [`connect`], REST
//! `/files` ([`files`]), `/envs` and `/health` (not `/init`: Hearth
//! configures its guests itself).
//!
//! Every call but `/health` needs the sandbox's access token
//! (`X-Access-Token`, handed out as `envdAccessToken`). The E2B user
//! (`Authorization: Basic <user>:`, or `?username=`) maps to the guest's:
//! `user` is Hearth's `sandbox`.

pub mod connect;
mod files;
mod filesystem;
mod process;
mod pty;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;

use crate::core::guest::Guest;
use crate::core::keys::Caller;
use crate::core::Core;

/// The sandbox an envd request addresses (set by the proxy).
#[derive(Debug, Clone)]
pub struct Target {
    pub sandbox_id: String,
}

/// What envd's handlers share.
#[derive(Debug)]
pub struct EnvdState {
    core: Arc<Core>,
    watchers: filesystem::Watchers,
    ptys: pty::Ptys,
}

/// One envd request: its sandbox, the caller acting in it, and the guest
/// user.
#[derive(Debug, Clone)]
pub struct Envd {
    core: Arc<Core>,
    caller: Caller,
    sandbox_id: String,
    user: Option<String>,
    state: Arc<EnvdState>,
}

impl std::ops::Deref for EnvdState {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Envd {
    async fn guest(&self, activity: bool) -> crate::core::error::Result<Guest> {
        self.core
            .guest(&self.caller, &self.sandbox_id, activity)
            .await
    }

    /// The PTY whose shell is `pid`, if an E2B client opened it.
    fn pty(&self, pid: u32) -> Option<Arc<pty::Session>> {
        self.state.ptys.get(&self.sandbox_id, pid)
    }

    /// A path relative to the user's home made absolute.
    fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        let home = match self.user.as_deref() {
            Some("root") | None => "/root".to_string(),
            Some(u) => format!("/home/{u}"),
        };
        match path.trim_start_matches("./") {
            "" | "." => home,
            p => format!("{home}/{p}"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Envd {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Envd>()
            .cloned()
            .ok_or_else(|| StatusCode::NOT_FOUND.into_response())
    }
}

/// envd's router for the proxy: requests carry a [`Target`].
pub fn router(core: Arc<Core>) -> Router {
    let state = Arc::new(EnvdState {
        core,
        watchers: Default::default(),
        ptys: Default::default(),
    });
    Router::new()
        .route("/files", get(files::download).post(files::upload))
        .route("/envs", get(envs))
        .route("/process.Process/Start", post(process::start))
        .route("/process.Process/Connect", post(process::connect))
        .route("/process.Process/List", post(process::list))
        .route("/process.Process/SendInput", post(process::send_input))
        .route("/process.Process/StreamInput", post(process::stream_input))
        .route("/process.Process/SendSignal", post(process::send_signal))
        .route("/process.Process/CloseStdin", post(process::close_stdin))
        .route("/process.Process/Update", post(process::update))
        .route("/filesystem.Filesystem/Stat", post(filesystem::stat))
        .route("/filesystem.Filesystem/MakeDir", post(filesystem::make_dir))
        .route("/filesystem.Filesystem/Move", post(filesystem::rename))
        .route("/filesystem.Filesystem/ListDir", post(filesystem::list_dir))
        .route("/filesystem.Filesystem/Remove", post(filesystem::remove))
        .route(
            "/filesystem.Filesystem/WatchDir",
            post(filesystem::watch_dir),
        )
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(filesystem::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(filesystem::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(filesystem::remove_watcher),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/health", get(health))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such envd route") })
        .with_state(state)
}

/// `GET /health` (no token): 204 while the sandbox runs, 502 otherwise, as
/// E2B's edge answers for a sandbox that is gone (`is_running()`).
async fn health(State(state): State<Arc<EnvdState>>, req: Request) -> Response {
    let running = req
        .extensions()
        .get::<Target>()
        .and_then(|t| state.core.handle(&t.sandbox_id))
        .is_some_and(|h| h.state().can_exec());
    match running {
        true => StatusCode::NO_CONTENT.into_response(),
        false => refuse(StatusCode::BAD_GATEWAY, "the sandbox is not running"),
    }
}

/// `GET /envs`: the environment the sandbox was created with.
async fn envs(envd: Envd) -> Response {
    match envd.core.get_sandbox(&envd.caller, &envd.sandbox_id).await {
        Ok(rec) => Json(rec.env).into_response(),
        Err(e) => refuse(crate::error::status_of(e.kind), &e.message),
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "code": status.as_u16(), "message": message })),
    )
        .into_response()
}

/// The guest user a request acts as.
fn user_of(req: &Request) -> Option<String> {
    let basic = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| s.split(':').next().unwrap_or("").to_string());
    let query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "username")
            .map(|(_, v)| v.into_owned())
    });
    let user = query.or(basic).filter(|u| !u.is_empty())?;
    Some(match user.as_str() {
        // E2B's default user is Hearth's `sandbox`.
        "user" => "sandbox".to_string(),
        _ => user,
    })
}

/// Checks the access token and puts the request's [`Envd`] in place.
async fn authorize(State(state): State<Arc<EnvdState>>, mut req: Request, next: Next) -> Response {
    let Some(target) = req.extensions().get::<Target>().cloned() else {
        return refuse(StatusCode::NOT_FOUND, "no sandbox addressed");
    };
    let Some(rec) = state.core.handle(&target.sandbox_id).map(|h| h.record()) else {
        return refuse(
            StatusCode::BAD_GATEWAY,
            &format!(
                "sandbox {} is not running",
                super::to_e2b(&target.sandbox_id)
            ),
        );
    };
    let presented = req
        .headers()
        .get("x-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !super::Token::Envd.matches(&state.core, &rec.id, presented) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Access-Token for this sandbox",
        );
    }
    let envd = Envd {
        core: state.core.clone(),
        caller: Caller::system(&rec.tenant_id, "e2b-envd"),
        sandbox_id: rec.id.clone(),
        user: user_of(&req),
        state: state.clone(),
    };
    req.extensions_mut().insert(envd);
    next.run(req).await
}
