//! Path and query parameters, and field schemas that state the bounds the
//! handlers check (ranges, env names, tags, modes, signals, build steps).

use super::*;

// ---------------------------------------------------------------- parameters

/// Path and header parameters shared by many routes. Never built: they
/// exist for their `IntoParams`.
#[allow(dead_code)]
mod params {
    use utoipa::IntoParams;

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SandboxId {
        /// Sandbox id (`sbx_...`).
        pub id: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SandboxName {
        /// Sandbox name.
        pub name: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct ProcessId {
        /// Process id (`123` or `proc_123`).
        pub pid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct TerminalId {
        /// Terminal id.
        pub tid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct PreviewId {
        /// Preview id (`prv_...`).
        pub prv: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SnapshotId {
        /// Snapshot id (`snap_...`).
        pub sid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct TemplateId {
        /// Template id or name (`default`, `minimal`, `tpl_...`).
        pub tid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct BuildId {
        /// Template build id (`bld_...`).
        pub bid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct ApiKeyId {
        /// API key id.
        pub id: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct GuestPath {
        /// Guest path without its leading `/`; may span several segments.
        pub path: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct LastEventId {
        /// Resume the stream after this event id.
        #[param(rename = "Last-Event-ID", value_type = String, required = false)]
        pub last_event_id: Option<String>,
    }
}

pub use params::*;

// ---------------------------------------------------------------- field schemas

/// An integer in `LO..=HI`, for bounds a handler checks against a named
/// constant (`#[schema(schema_with = int_range::<1, { MAX }>)]`), so the
/// document follows the constant.
pub fn int_range<const LO: i64, const HI: i64>() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(LO as f64))
        .maximum(Some(HI as f64))
}

/// [`int_range`], or `null` (the field's default).
pub fn int_range_or_null<const LO: i64, const HI: i64>() -> ObjectBuilder {
    int_range::<LO, HI>().schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
}

/// A string of `MIN..=MAX` characters, or `null`, for lengths a handler
/// checks against a named constant.
pub fn string_or_null<const MIN: usize, const MAX: usize>() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(MIN))
        .max_length(Some(MAX))
}

/// A field that may not be changed: only `null` (as if absent) passes.
pub fn immutable() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some("Immutable: any value but `null` is 422."))
}

/// A string without NUL.
pub(super) const NO_NUL: &str = r"^[^\u0000]*$";

/// An env map of shell-safe names (`validate::check_env`): letters,
/// digits and `_`, not starting with a digit, at most 256; values without
/// NUL.
pub fn shell_env() -> ObjectBuilder {
    env_map(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[A-Za-z_][A-Za-z0-9_]*$"))
            .max_length(Some(256)),
        true,
    )
}

/// An env map for a command: non-empty names without `=` or NUL, values
/// without NUL.
pub fn command_env() -> ObjectBuilder {
    env_map(command_env_name(), true)
}

/// [`command_env`] for `exec`, which leaves values unchecked.
pub fn exec_env() -> ObjectBuilder {
    env_map(command_env_name(), false)
}

pub(super) fn command_env_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^[^=\u0000]+$"))
}

pub(super) fn env_map(names: ObjectBuilder, values_without_nul: bool) -> ObjectBuilder {
    let value = ObjectBuilder::new().schema_type(Type::String);
    let value = if values_without_nul {
        value.pattern(Some(NO_NUL))
    } else {
        value
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(names))
        .additional_properties(Some(value))
}

/// [`shell_env`], or `null`.
pub fn shell_env_or_null() -> ObjectBuilder {
    shell_env().schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
}

/// Sandbox tags (`sandboxes::check_tags`): at most 50, each 1-64 bytes
/// without commas or control characters; `null` for none.
pub fn tags() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64))
                .pattern(Some(r"^[^,\u0000-\u001f\u007f-\u009f]*$"))
                .examples([json!("web")]),
        )
        .max_items(Some(50))
        .description(Some(
            "At most 50 tags of 1-64 bytes, without commas or control characters.",
        ))
}

/// Permission bits: a number up to `MAX` (`420` for `0644`) or an octal
/// string (`"0644"`, `"755"`, `"0o755"`) up to four digits; `null` for
/// the default.
pub fn file_mode<const MAX: i64>() -> OneOfBuilder {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(int_range::<0, MAX>())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^\s*(0o)?0*[0-7]{1,4}\s*$"))
                .examples([json!("0644")]),
        )
        .description(Some(
            "Permission bits: a number (`420`) or an octal string (`\"0644\"`).",
        ))
}

/// A signal: a number 1-31, as a number or a string, or a name with or
/// without `SIG` in any case (`"SIGTERM"`, `"term"`).
pub fn signal() -> OneOfBuilder {
    let names: Vec<Value> = crate::routes::processes::SIGNALS
        .iter()
        .map(|s| Value::String(format!("SIG{s}")))
        .collect();
    OneOfBuilder::new()
        .item(int_range::<1, 31>())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names))
                .description(Some(
                    "Also without `SIG`, in any case, or the number as a string.",
                )),
        )
        .description(Some("A signal name such as `SIGTERM`, or its number 1-31."))
}

/// The array of BuildSpec steps: at most `MAX`, each a `BuildStep`.
pub fn build_steps<const MAX: usize>() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(Ref::from_schema_name("BuildStep"))
        .max_items(Some(MAX))
}

/// The array of Debian packages of a BuildSpec: at most `MAX`.
pub fn build_packages<const MAX: usize>() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[a-z0-9][A-Za-z0-9+.:=~-]*$"))
                .max_length(Some(128))
                .examples([json!("curl")]),
        )
        .max_items(Some(MAX))
        .description(Some("Debian package names, optionally `=version`."))
}

/// A string that is one of `values`, or `null` (as if absent).
fn one_of_strings(values: &[&str]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(
            values
                .iter()
                .map(|v| Value::String(v.to_string()))
                .chain([Value::Null]),
        ))
}

/// A string that is one of `values`.
fn one_of_strings_only(values: &[&str]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().map(|v| Value::String(v.to_string()))))
}

/// A secret's `type`.
pub fn secret_kind() -> ObjectBuilder {
    one_of_strings(crate::core::secrets::KINDS)
}

/// A secret's `scope`.
pub fn secret_scope() -> ObjectBuilder {
    one_of_strings(crate::core::secrets::SCOPES)
}

/// What a secret can be bound to.
pub fn secret_resource_type() -> ObjectBuilder {
    one_of_strings(crate::core::secrets::RESOURCE_TYPES)
}

/// A call's `secrets`: at most `MAX` secret names.
pub fn secret_names<const MAX: usize>() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(128))
                .pattern(Some(r"^[A-Za-z0-9_.-]+$")),
        )
        .max_items(Some(MAX))
}

/// A scoped token's `scopes`: each one of the known scopes, or `null` for
/// all of them.
pub fn token_scopes() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(one_of_strings_only(crate::core::keys::scoped::SCOPES))
}
