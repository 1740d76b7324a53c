//! The Connect RPC protocol, server side, as envd speaks it: unary calls
//! (`application/proto` or `application/json`, the message as the body,
//! errors as JSON with an HTTP status) and streaming calls
//! (`application/connect+proto|json`: messages in 5-byte-prefixed
//! envelopes, the last one flagged end-of-stream with a JSON trailer that
//! carries any error). Compressed envelopes are refused.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::core::error::{Error, Kind};

/// Envelope flag: the message is compressed.
const COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream trailer.
const END_STREAM: u8 = 0x02;
/// The largest message accepted in a request.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Connect's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    fn name(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (Connect's table).
    fn status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// An RPC's error: a code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({ "code": self.code.name(), "message": self.message })
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> RpcError {
        let code = match e.kind {
            Kind::BadRequest | Kind::Invalid | Kind::TooLarge => Code::InvalidArgument,
            Kind::Unauthorized => Code::Unauthenticated,
            Kind::Forbidden => Code::PermissionDenied,
            Kind::NotFound => Code::NotFound,
            Kind::InvalidState => Code::FailedPrecondition,
            Kind::Conflict => Code::AlreadyExists,
            Kind::NoSpace | Kind::QuotaExceeded | Kind::RateLimited => Code::ResourceExhausted,
            Kind::Unreachable | Kind::Unavailable => Code::Unavailable,
            Kind::NotImplemented => Code::Unimplemented,
            _ => Code::Internal,
        };
        RpcError::new(code, e.message)
    }
}

/// A message's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
}

/// How a call arrived: its codec, and whether it is a streaming call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub codec: Codec,
    pub streaming: bool,
}

impl Call {
    /// The call a request's `Content-Type` names.
    pub fn of(headers: &HeaderMap) -> Result<Call, RpcError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let (codec, streaming) = match ct.as_str() {
            "application/proto" => (Codec::Proto, false),
            "application/json" => (Codec::Json, false),
            "application/connect+proto" => (Codec::Proto, true),
            "application/connect+json" => (Codec::Json, true),
            other => {
                return Err(RpcError::new(
                    Code::Unknown,
                    format!("unsupported content type {other:?}"),
                ))
            }
        };
        Ok(Call { codec, streaming })
    }

    /// The answer to a request whose content type is not Connect's.
    pub fn unsupported(e: RpcError) -> Response {
        let mut resp = (StatusCode::UNSUPPORTED_MEDIA_TYPE, axum::Json(e.json())).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }

    fn content_type(self) -> &'static str {
        match (self.codec, self.streaming) {
            (Codec::Proto, false) => "application/proto",
            (Codec::Json, false) => "application/json",
            (Codec::Proto, true) => "application/connect+proto",
            (Codec::Json, true) => "application/connect+json",
        }
    }

    /// Decodes one message.
    pub fn decode<M>(self, bytes: &[u8]) -> Result<M, RpcError>
    where
        M: prost::Message + DeserializeOwned + Default,
    {
        match self.codec {
            Codec::Proto => M::decode(bytes)
                .map_err(|e| RpcError::new(Code::InvalidArgument, format!("bad message: {e}"))),
            Codec::Json if bytes.is_empty() => Ok(M::default()),
            Codec::Json => serde_json::from_slice(bytes)
                .map_err(|e| RpcError::new(Code::InvalidArgument, format!("bad message: {e}"))),
        }
    }

    /// The request's one message: the body, or its one envelope.
    pub fn request<M>(self, body: &[u8]) -> Result<M, RpcError>
    where
        M: prost::Message + DeserializeOwned + Default,
    {
        if !self.streaming {
            return self.decode(body);
        }
        let mut frames = Frames::default();
        frames.push(body);
        match frames.next_frame()? {
            Some(Frame::Message(m)) => self.decode(&m),
            _ => Err(RpcError::new(
                Code::InvalidArgument,
                "the request holds no message",
            )),
        }
    }

    pub fn encode<M: prost::Message + Serialize>(self, m: &M) -> Vec<u8> {
        match self.codec {
            Codec::Proto => m.encode_to_vec(),
            Codec::Json => serde_json::to_vec(m).unwrap_or_default(),
        }
    }

    /// A unary call's answer.
    pub fn reply<M: prost::Message + Serialize>(self, m: &M) -> Response {
        if self.streaming {
            let body = [envelope(0, &self.encode(m)), end_stream(None)].concat();
            return self.with_type(Response::new(Body::from(body)));
        }
        self.with_type(Response::new(Body::from(self.encode(m))))
    }

    /// An error answer: JSON with its HTTP status for a unary call; for a
    /// streaming call, a stream that is only the trailer holding it.
    pub fn fail(self, e: RpcError) -> Response {
        if self.streaming {
            return self.with_type(Response::new(Body::from(end_stream(Some(&e)))));
        }
        let mut resp = (e.code.status(), axum::Json(e.json())).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }

    /// A server-streaming answer: each message in an envelope, then the
    /// trailer (with the error that ended the stream, if one did).
    pub fn stream<M, S>(self, messages: S) -> Response
    where
        M: prost::Message + Serialize + Send + 'static,
        S: Stream<Item = Result<M, RpcError>> + Send + 'static,
    {
        let body = async_stream_frames(self, messages);
        self.with_type(Response::new(Body::from_stream(body)))
    }

    fn with_type(self, mut resp: Response) -> Response {
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type()),
        );
        resp
    }
}

/// The frames of `messages`, then the trailer; the first error ends it.
fn async_stream_frames<M, S>(
    call: Call,
    messages: S,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    M: prost::Message + Serialize + Send + 'static,
    S: Stream<Item = Result<M, RpcError>> + Send + 'static,
{
    let messages = Box::pin(messages);
    futures_util::stream::unfold((messages, false), move |(mut messages, done)| async move {
        if done {
            return None;
        }
        let (bytes, done) = match messages.next().await {
            Some(Ok(m)) => (envelope(0, &call.encode(&m)), false),
            Some(Err(e)) => (end_stream(Some(&e)), true),
            None => (end_stream(None), true),
        };
        Some((Ok(Bytes::from(bytes)), (messages, done)))
    })
}

fn envelope(flags: u8, msg: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(flags);
    b.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    b.put_slice(msg);
    b.to_vec()
}

/// The end-of-stream trailer: `{}` or `{"error": {...}}`.
fn end_stream(error: Option<&RpcError>) -> Vec<u8> {
    let trailer = match error {
        Some(e) => json!({ "error": e.json() }),
        None => json!({}),
    };
    envelope(END_STREAM, trailer.to_string().as_bytes())
}

/// One envelope of a request stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    End,
}

/// Splits a request body arriving in pieces into envelopes.
#[derive(Debug, Default)]
pub struct Frames {
    buf: BytesMut,
}

impl Frames {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole envelope, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RpcError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("a message of {len} bytes is over the limit of {MAX_MESSAGE}"),
            ));
        }
        if flags & COMPRESSED != 0 {
            return Err(RpcError::new(
                Code::Unimplemented,
                "compressed messages are not supported",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let frame = self.buf.split_to(5 + len);
        Ok(Some(match flags & END_STREAM {
            0 => Frame::Message(frame[5..].to_vec()),
            _ => Frame::End,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_e2b_proto::process::{ListResponse, ProcessInfo};
    use prost::Message;

    #[test]
    fn envelopes_split_however_the_bytes_arrive() {
        let a = envelope(0, b"hello");
        let b = end_stream(None);
        let all = [a.clone(), b].concat();
        let mut f = Frames::default();
        for chunk in all.chunks(3) {
            f.push(chunk);
        }
        assert_eq!(
            f.next_frame().ok().flatten(),
            Some(Frame::Message(b"hello".to_vec()))
        );
        assert_eq!(f.next_frame().ok().flatten(), Some(Frame::End));
        assert_eq!(f.next_frame().ok().flatten(), None);
        let mut f = Frames::default();
        f.push(&envelope(COMPRESSED, b"x"));
        assert_eq!(f.next_frame().map_err(|e| e.code), Err(Code::Unimplemented));
    }

    #[test]
    fn calls_decode_and_answer_in_their_codec() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/connect+json"),
        );
        let call = Call::of(&h).expect("call");
        assert_eq!(
            call,
            Call {
                codec: Codec::Json,
                streaming: true
            }
        );
        let msg = ListResponse {
            processes: vec![ProcessInfo {
                pid: 7,
                ..Default::default()
            }],
        };
        let body = envelope(0, &call.encode(&msg));
        let back: ListResponse = call.request(&body).expect("decode");
        assert_eq!(back, msg);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/proto"),
        );
        let call = Call::of(&h).expect("call");
        let back: ListResponse = call.request(&msg.encode_to_vec()).expect("decode");
        assert_eq!(back.processes[0].pid, 7);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(Call::of(&h).is_err());
    }
}
