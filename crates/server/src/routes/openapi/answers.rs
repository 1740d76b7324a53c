//! What routes answer, as the document names it: the error envelope and
//! its responses (404, 409, 422), the `data` envelopes, and the non-JSON
//! bodies (SSE, raw bytes).

use super::*;

// ---------------------------------------------------------------- errors

/// An answer carrying the error envelope (`#/components/schemas/Error`)
/// and the `X-Request-Id` header.
pub(super) fn error_answer(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .header(
            "X-Request-Id",
            HeaderBuilder::new()
                .schema(String::schema())
                .description(Some("The request's id, also in the error body."))
                .build(),
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
        .into()
}

macro_rules! error_answers {
    ($($name:ident => $description:literal;)*) => {$(
        #[doc = $description]
        #[derive(Debug)]
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_answer($description))
            }
        }
    )*};
}

error_answers! {
    Unauthorized => "Missing or invalid API key (`unauthorized`)";
    NotFound => "Not found (`not_found`, `sandbox_not_found`, `file_not_found`, ...)";
    ValidationError => "A field is invalid (`validation_error`; `details` names each field)";
}

/// The catch-all answer, named `Error` in the document.
#[derive(Debug)]
pub struct ErrorAnswer;

impl<'s> ToResponse<'s> for ErrorAnswer {
    fn response() -> (&'s str, RefOr<Response>) {
        ("Error", error_answer("An error; `code` says which"))
    }
}

/// `404` with the error envelope: the route looks something up by id.
#[derive(Debug)]
pub struct E404;

impl IntoResponses for E404 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [("404".into(), Ref::from_response_name("NotFound").into())].into()
    }
}

/// `422` with the error envelope: the route validates its input.
#[derive(Debug)]
pub struct E422;

impl IntoResponses for E422 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [(
            "422".into(),
            Ref::from_response_name("ValidationError").into(),
        )]
        .into()
    }
}

/// `409` with the error envelope: the route's target is in a state that
/// refuses it (the route has no success answer today).
#[derive(Debug)]
pub struct E409;

impl IntoResponses for E409 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [("409".into(), Ref::from_response_name("Error").into())].into()
    }
}

/// `429` with the error envelope: a quota (`quota_exceeded`, naming the
/// quota, its use and limit) or the key's rate (`rate_limited`, with
/// `Retry-After`).
#[derive(Debug)]
pub struct E429;

impl IntoResponses for E429 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [("429".into(), Ref::from_response_name("Error").into())].into()
    }
}

/// `404` and `422`: the usual pair of a route on one sandbox with input.
#[derive(Debug)]
pub struct E404And422;

impl IntoResponses for E404And422 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut r = E404::responses();
        r.extend(E422::responses());
        r
    }
}

// ---------------------------------------------------------------- answers

/// `{"data": {...}}`: one object.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct Data {
    #[schema(value_type = Object)]
    data: Value,
}

/// `{"data": [...]}`: a list, not paginated.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct DataList {
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
}

/// `{"data": [...], "page": {...}}`: one page of a list.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct DataPage {
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
    page: PageInfo,
}

/// Where a page lies in its list.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PageInfo {
    #[schema(minimum = 1)]
    page: u32,
    #[schema(minimum = 1, maximum = 100)]
    page_size: u32,
    total: u64,
}

/// `{"data": Sandbox}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SandboxData {
    data: crate::routes::sandboxes::SandboxView,
}

/// A page of sandboxes.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SandboxPage {
    data: Vec<crate::routes::sandboxes::SandboxView>,
    page: PageInfo,
}

/// `{"data": NetworkPolicy}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct NetworkPolicyData {
    data: crate::routes::network::PolicyView,
}

/// Server-sent events (API.md): frames of `event: <type>`, `id: <monotonic
/// id>` and `data: <JSON object carrying "type">`; a `: heartbeat` comment
/// every 15 s.
#[derive(Debug)]
pub struct EventStream;

impl PartialSchema for EventStream {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Frames of `event: <type>`, `id: <monotonic id>` and `data: <JSON object \
                 carrying \"type\">`; a `: heartbeat` comment every 15 s.",
            ))
            .into()
    }
}

impl ToSchema for EventStream {
    fn name() -> Cow<'static, str> {
        "EventStream".into()
    }
}

/// A body of raw bytes, streamed.
#[derive(Debug)]
pub struct RawBytes;

impl PartialSchema for RawBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl ToSchema for RawBytes {
    fn name() -> Cow<'static, str> {
        "RawBytes".into()
    }
}

/// The `size` shorthand of a sandbox: `cpu_count`, `memory_mb` and
/// `disk_size_mb` at once.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SandboxSize {
    Xs,
    S,
    Sm,
    Small,
    M,
    Md,
    Medium,
    L,
    Lg,
    Large,
    Xl,
}

/// The body of `POST /sandbox-templates/{tid}/builds`: `SpecOnly` as
/// `validate` takes it, except that a build ignores `name` (so it is not
/// checked there). Described apart so each route's schema says what that
/// route checks; `tests/openapi_bounds.rs` holds it to the handler.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[schema(
    description = "An empty body builds the latest spec again. Unknown fields are refused (422)."
)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RebuildBody {
    /// Ignored.
    #[serde(default)]
    name: Option<String>,
    /// The next version's spec; absent: the latest build's spec.
    #[serde(default)]
    build_spec: Option<crate::routes::templates::BuildSpecBody>,
}
