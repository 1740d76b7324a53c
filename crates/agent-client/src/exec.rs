//! Lifecycle, exec and process calls.

use hearth_agent_protocol::{
    routes, HealthResponse, InitRequest, InitResponse, ShutdownRequest, SyncResponse,
};
use http::Method;

use crate::{AgentClient, ClientResult};

impl AgentClient {
    pub async fn health(&self) -> ClientResult<HealthResponse> {
        self.call::<(), _>(Method::GET, routes::HEALTH, None).await
    }

    pub async fn init(&self, req: &InitRequest) -> ClientResult<InitResponse> {
        self.call(Method::POST, routes::INIT, Some(req)).await
    }

    pub async fn sync(&self) -> ClientResult<SyncResponse> {
        self.call::<(), _>(Method::POST, routes::SYNC, None).await
    }

    pub async fn shutdown(&self, req: &ShutdownRequest) -> ClientResult<()> {
        self.call::<_, serde_json::Value>(Method::POST, routes::SHUTDOWN, Some(req))
            .await
            .map(|_| ())
    }
}
