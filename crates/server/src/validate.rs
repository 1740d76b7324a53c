//! Field checks shared by request bodies (sandbox create, template build
//! specs): each pushes a [`FieldError`] instead of failing, so one 422
//! lists every bad field.

use std::collections::BTreeMap;

use crate::error::FieldError;

/// `v` when it lies in `lo..=hi`, `default` when absent.
pub fn range(
    bad: &mut Vec<FieldError>,
    field: &str,
    v: Option<i64>,
    lo: i64,
    hi: i64,
    default: u32,
) -> u32 {
    match v {
        None => default,
        Some(n) if (lo..=hi).contains(&n) => n as u32,
        Some(_) => {
            bad.push(FieldError::new(
                field,
                format!("must be between {lo} and {hi}"),
            ));
            default
        }
    }
}

/// A free-form label: 1-`max` characters, no control characters.
pub fn check_label(bad: &mut Vec<FieldError>, field: &str, v: &Option<String>, max: usize) {
    if let Some(s) = v {
        if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
            bad.push(FieldError::new(
                field,
                format!("must be 1-{max} characters without control characters"),
            ));
        }
    }
}

/// Environment names are shell-safe; values hold no NUL.
pub fn check_env(bad: &mut Vec<FieldError>, field: &str, env: &BTreeMap<String, String>) {
    for (k, v) in env {
        let valid = !k.is_empty()
            && k.len() <= 256
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bad.push(FieldError::new(
                format!("{field}.{k}"),
                "names are letters, digits and _ (not starting with a digit)",
            ));
        }
        if v.contains('\0') {
            bad.push(FieldError::new(
                format!("{field}.{k}"),
                "values cannot hold NUL",
            ));
        }
    }
}
