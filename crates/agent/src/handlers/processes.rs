//! (being written)

use super::AgentRouter;

#[derive(Debug, Default)]
pub struct ProcessTable {}

pub fn routes() -> AgentRouter {
    AgentRouter::new()
}
