//! `hearth sandbox shell`: the PTY client lands in the next commit.
use crate::api::Api;

pub async fn run(_api: &Api, _id: &str, _shell: Option<&str>) -> anyhow::Result<u8> {
    anyhow::bail!("hearth sandbox shell is not implemented yet")
}
