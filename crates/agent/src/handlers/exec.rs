//! (being written)

use super::AgentRouter;

pub fn routes() -> AgentRouter {
    AgentRouter::new()
}
