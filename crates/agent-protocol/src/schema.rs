//! The wire schema as JSON, compared against the checked-in `schema.json`.

use schemars::schema::RootSchema;

use crate::{WireSchema, PROTOCOL_VERSION};

/// JSON schema of every wire type.
pub fn wire_schema() -> RootSchema {
    schemars::schema_for!(WireSchema)
}

/// The snapshot file content: version plus schema, pretty-printed.
pub fn snapshot() -> String {
    let v = serde_json::json!({
        "protocol_version": PROTOCOL_VERSION,
        "schema": wire_schema(),
    });
    let mut s = serde_json::to_string_pretty(&v).expect("schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json");

    /// Fails when any wire type changes without a `PROTOCOL_VERSION` bump.
    /// After bumping, `UPDATE_SCHEMA=1 cargo test -p hearth-agent-protocol`
    /// rewrites the snapshot.
    #[test]
    fn wire_schema_matches_snapshot_and_version() {
        let current = snapshot();
        let stored = std::fs::read_to_string(SNAPSHOT_PATH).unwrap_or_default();
        if current == stored {
            return;
        }
        let stored_version = serde_json::from_str::<serde_json::Value>(&stored)
            .ok()
            .and_then(|v| v["protocol_version"].as_u64());
        let bumped = stored_version.is_none_or(|v| v < u64::from(PROTOCOL_VERSION));
        if bumped && std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(SNAPSHOT_PATH, &current).expect("write schema.json");
            return;
        }
        if bumped {
            panic!(
                "PROTOCOL_VERSION is {PROTOCOL_VERSION} but schema.json holds {stored_version:?}: \
                 rerun with UPDATE_SCHEMA=1 to record the new schema"
            );
        }
        panic!(
            "the agent wire schema changed but PROTOCOL_VERSION is still {PROTOCOL_VERSION}: \
             bump it in agent-protocol/src/lib.rs, then rerun with UPDATE_SCHEMA=1"
        );
    }

    #[test]
    fn snapshot_names_every_route_type() {
        let s = snapshot();
        for name in [
            "ExecRequest",
            "OutputEvent",
            "WatchEvent",
            "PtyOpenRequest",
            "AgentError",
        ] {
            assert!(s.contains(name), "{name} missing from the schema");
        }
    }
}
