//! `ApiJson<T>`: the JSON body extractor of the public and admin API. Strict about what
//! it accepts (media type, size, syntax, unknown fields) and precise about why it refused:
//! errors name the offending field in `details`. An empty body counts as `{}`.
//!
//! One body has one meaning: a key repeated in an object is refused (serde would keep the
//! last silently), and an explicit `null` member means the same as an absent one, both
//! to the handler (serde reads both as `None`) and to the idempotency fingerprint (nulls
//! are left out of the canonical form). An unknown key is refused even when null.

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
        let (content_type, bytes) = read(request, state).await?;
        parse_body(content_type.as_deref(), &bytes)
    }
}

/// A body the gateway refused (media type, syntax, duplicate or unknown fields, types),
/// with the canonical form of what was sent: under an Idempotency-Key the refusal is
/// stored and replayed like any 4xx (SPEC §2).
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why the body was refused.
    pub error: ApiError,
    /// [`canonical_body`] of the bytes sent.
    pub canonical: String,
}

/// [`ApiJson`], or the refusal with what was sent, for routes that take an
/// Idempotency-Key. Only an unreadable or oversized body is rejected outright.
#[derive(Debug, Clone)]
pub struct CheckedJson<T>(pub Result<ApiJson<T>, Refused>);

impl<S, T> FromRequest<S> for CheckedJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (content_type, bytes) = read(request, state).await?;
        Ok(Self(parse_body(content_type.as_deref(), &bytes).map_err(
            |error| Refused {
                error,
                canonical: canonical_body(&bytes),
            },
        )))
    }
}

/// The request's content type and body bytes (413 past [`MAX_JSON_BODY`]).
async fn read<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<(Option<String>, Bytes), ApiError> {
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
    Ok((content_type, bytes))
}

/// Checks the media type and parses: an empty body is `{}`.
fn parse_body<T: DeserializeOwned>(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<ApiJson<T>, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        if !content_type.is_some_and(is_json) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as application/json",
            ));
        }
        bytes
    };
    parse(bytes)
}

/// Response middleware: every JSON response declares its charset, as SPEC §1 writes the
/// media type (`application/json; charset=utf-8`), whichever code path rendered it.
pub async fn declare_charset(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    if headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
    {
        headers.insert(
            CONTENT_TYPE,
            axum::http::HeaderValue::from_static(JSON_UTF8),
        );
    }
    response
}

/// The media type of every JSON response.
pub const JSON_UTF8: &str = "application/json; charset=utf-8";

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// A JSON value parsed strictly: a repeated key in any object is an error.
struct StrictValue(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = serde_json::Map::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key `{key}`"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(StrictValue(serde_json::Value::Object(object)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(serde_json::Value::Array(items)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        Ok(StrictValue(
            serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(serde_json::Value::Null))
    }

    fn visit_none<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(serde_json::Value::Null))
    }
}

/// The canonical form of a raw request body for an idempotency fingerprint: the canonical
/// JSON when it parses (an empty body is `{}`), else a digest of the bytes themselves.
pub fn canonical_body(bytes: &[u8]) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return "{}".to_owned();
    }
    match parse::<serde_json::Value>(bytes) {
        Ok(parsed) => parsed.canonical,
        Err(_) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(bytes);
            format!(
                "raw:{}",
                digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        }
    }
}

/// `value` without the object members whose value is `null`, at any depth.
fn without_nulls(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(object) => serde_json::Value::Object(
            object
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(without_nulls).collect())
        }
        other => other.clone(),
    }
}

/// Deserializes `bytes`, naming the failing field when there is one.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<ApiJson<T>, ApiError> {
    let StrictValue(value) = serde_json::from_slice(bytes).map_err(|error| {
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
    // serde_json's map is ordered by key, so this is a canonical rendering; null members
    // are left out of it, as they mean the same as absent ones (serde reads both as
    // `None`, while an unknown key stays refused even when its value is null).
    let canonical = without_nulls(&value).to_string();
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
    fn a_repeated_key_is_refused_at_any_depth() {
        for body in [
            &br#"{"externalId": "a", "externalId": "b"}"#[..],
            br#"{"a": {"x": 1, "x": 1}}"#,
            br#"{"a": [{"x": 1, "x": 2}]}"#,
        ] {
            let error = parse::<serde_json::Value>(body).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(error.message.contains("duplicate key"), "{}", error.message);
        }
        assert!(parse::<serde_json::Value>(br#"{"a": {"x": 1}, "b": {"x": 1}}"#).is_ok());
    }

    #[test]
    fn null_and_absent_members_mean_the_same_also_canonically() {
        let explicit = parse::<Body>(br#"{"externalId": null}"#).unwrap();
        let absent = parse::<Body>(br#"{}"#).unwrap();
        assert_eq!(explicit.body.external_id, None);
        assert_eq!(explicit.canonical, absent.canonical);
        let nested =
            parse::<serde_json::Value>(br#"{"a": {"b": null, "c": 1}, "d": [null]}"#).unwrap();
        assert_eq!(nested.canonical, r#"{"a":{"c":1},"d":[null]}"#);
        let unknown = parse::<Body>(br#"{"externalID": null}"#).unwrap_err();
        assert_eq!(unknown.details[0].field, "externalID", "a typo stays a 400");
    }

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
