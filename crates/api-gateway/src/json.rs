//! `ApiJson<T>`: the JSON body extractor of the public and admin API. Strict about what
//! it accepts (media type, size, syntax, unknown fields) and precise about why it refused:
//! errors name the offending field in `details`. An empty body counts as `{}`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use plangrep_core::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Detail};

/// The most a JSON body may weigh (SPEC §1).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// A deserialized JSON request body, with its canonical form (keys sorted, no
/// insignificant whitespace) for idempotency fingerprints.
#[derive(Debug, Clone)]
pub struct ApiJson<T> {
    /// The typed body.
    pub body: T,
    /// The body re-serialized canonically.
    pub canonical: String,
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        "JSON bodies are limited to 1 MiB",
                    )
                } else {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        "the request body could not be read",
                    )
                }
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            if !content_type.as_deref().is_some_and(is_json) {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "send the body as application/json",
                ));
            }
            &bytes
        };
        parse(bytes)
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Deserializes `bytes`, naming the failing field when there is one.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<ApiJson<T>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the body is not valid JSON ({error})"),
        )
    })?;
    // `null` means "no body", like an empty one; anything else must be an object (serde
    // would otherwise accept a struct written as an array).
    let value = match value {
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        value @ serde_json::Value::Object(_) => value,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the body must be a JSON object",
            ));
        }
    };
    // serde_json's map is ordered by key, so this is a canonical rendering.
    let canonical = value.to_string();
    let body = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let issue = strip_position(&inner.to_string());
        let field =
            unknown_field_name(&issue).unwrap_or(if path == "." { String::new() } else { path });
        let mut api_error = ApiError::new(ErrorCode::InvalidRequest, issue.clone());
        if !field.is_empty() {
            api_error.message = format!("{field}: {issue}");
            api_error.details = vec![Detail { field, issue }];
        }
        api_error
    })?;
    Ok(ApiJson { body, canonical })
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// The field named by serde's "unknown field `x`" or "missing field `x`".
fn unknown_field_name(issue: &str) -> Option<String> {
    let rest = issue
        .strip_prefix("unknown field `")
        .or_else(|| issue.strip_prefix("missing field `"))?;
    Some(rest[..rest.find('`')?].to_owned())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        external_id: Option<String>,
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_field() {
        let error = parse::<Body>(br#"{"externalID": "x"}"#).unwrap_err();
        assert_eq!(error.details[0].field, "externalID");
        let error = parse::<Body>(br#"{"externalId": 5}"#).unwrap_err();
        assert_eq!(error.details[0].field, "externalId");
        assert!(
            parse::<Body>(br#"{"externalId": "#)
                .unwrap_err()
                .details
                .is_empty()
        );
        assert!(parse::<Body>(br#"{} {}"#).is_err());
        assert!(parse::<Body>(br#"{}"#).is_ok());
        assert!(parse::<Body>(b"null").is_ok(), "null is no body");
        for not_an_object in [&b"[null]"[..], b"[]", b"\"x\"", b"1", b"true"] {
            assert!(parse::<Body>(not_an_object).is_err(), "{not_an_object:?}");
        }
    }

    #[test]
    fn the_canonical_form_ignores_key_order_and_whitespace() {
        let a = parse::<serde_json::Value>(br#"{"b": 1, "a": [true, null]}"#).unwrap();
        let b = parse::<serde_json::Value>(br#"{"a":[true,null],"b":1}"#).unwrap();
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(a.canonical, r#"{"a":[true,null],"b":1}"#);
    }

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
