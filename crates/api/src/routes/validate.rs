//! Field rules shared by the handlers. Each failure names the field.

use cordon_core::Labels;

use crate::error::{ApiError, ApiResult};

/// Names of tenants, workload classes and environments: `[a-z0-9._-]{1,63}`, starting
/// with a letter or digit, so they are safe in metrics labels, paths and policies.
pub(crate) fn slug(field: &str, value: &str) -> ApiResult<()> {
    let valid = (1..=63).contains(&value.len())
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "`{field}` must be 1 to 63 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
        )))
    }
}

/// Free text for people: 1 to `max` characters, no control characters.
pub(crate) fn text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    let length = value.chars().count();
    if (1..=max).contains(&length) && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "`{field}` must be 1 to {max} characters without control characters"
        )))
    }
}

/// Free text that may be empty: up to `max` characters, no control characters.
pub(crate) fn text_or_empty(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.is_empty() {
        Ok(())
    } else {
        text(field, value, max)
    }
}

/// A release name: 1 to 128 characters of `[a-zA-Z0-9._-]`, starting with a letter or
/// digit (it names a downloaded file).
pub(crate) fn release_name(value: &str) -> ApiResult<()> {
    let valid = (1..=128).contains(&value.len())
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(
            "`name` must be 1 to 128 characters of a-z, A-Z, 0-9, `.`, `_`, `-`, starting with a letter or digit",
        ))
    }
}

pub(crate) const MAX_LABELS: usize = 64;

pub(crate) fn labels(labels: &Labels) -> ApiResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::validation(format!(
            "at most {MAX_LABELS} labels are allowed"
        )));
    }
    for (key, value) in labels {
        let key_ok = (1..=63).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
        if !key_ok {
            return Err(ApiError::validation(format!(
                "label key `{key}` must be 1 to 63 characters of A-Z, a-z, 0-9, `.`, `_`, `/`, `-`"
            )));
        }
        if value.len() > 255 || value.chars().any(char::is_control) {
            return Err(ApiError::validation(format!(
                "label `{key}` must have a value of at most 255 bytes without control characters"
            )));
        }
    }
    Ok(())
}

/// Page sizes: default 100, at most 1000.
pub(crate) fn limit(requested: Option<u32>) -> ApiResult<u32> {
    match requested {
        None => Ok(100),
        Some(limit @ 1..=1000) => Ok(limit),
        Some(_) => Err(ApiError::new(
            cordon_core::ReasonCode::RequestQueryInvalid,
            "`limit` must be between 1 and 1000",
        )),
    }
}
