//! (being written)

use super::AgentRouter;

/// Open PTY sessions.
#[derive(Debug, Default)]
pub struct PtyTable {}

pub fn routes() -> AgentRouter {
    AgentRouter::new()
}
