//! E2B's envd protocol: the `process.Process` and `filesystem.Filesystem`
//! services' messages, generated at build time from the descriptors the
//! published `e2b` SDK embeds (see `descriptors/extract.py`). Every message
//! encodes as protobuf (prost) and as proto3 JSON (serde, via pbjson), the
//! two encodings Connect RPC carries.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub use pbjson_types;

/// `process/process.proto`.
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

/// `filesystem/filesystem.proto`.
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::process::{ProcessConfig, StartRequest};

    #[test]
    fn messages_encode_as_protobuf_and_as_proto3_json() {
        let req = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/bash".into(),
                args: vec!["-l".into(), "-c".into(), "echo hi".into()],
                envs: [("A".to_string(), "1".to_string())].into(),
                cwd: Some("/home/user".into()),
            }),
            tag: Some("t".into()),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        assert_eq!(StartRequest::decode(bytes.as_slice()).expect("decode"), req);
        let json = serde_json::to_value(&req).expect("json");
        assert_eq!(json["process"]["cmd"], "/bin/bash");
        assert_eq!(json["process"]["envs"]["A"], "1");
        let back: StartRequest = serde_json::from_value(json).expect("from json");
        assert_eq!(back, req);
    }
}
