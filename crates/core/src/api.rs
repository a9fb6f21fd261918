//! The public JSON representation of resources: what `GET /jobs/{id}` returns and what a
//! webhook's `data.job` carries. One definition, so the REST API and webhooks can never
//! disagree about a field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Formats an instant the way every API timestamp looks: `2026-11-28T10:00:00.000Z`.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Serde adapter for [`format_timestamp`].
pub mod timestamp {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes with millisecond precision and a `Z` suffix.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&super::format_timestamp(*at))
    }

    /// Parses any RFC 3339 instant.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The same for optional instants.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes `None` as `null`.
        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => serializer.collect_str(&super::super::format_timestamp(*at)),
                None => serializer.serialize_none(),
            }
        }

        /// Parses `null` or an RFC 3339 instant.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(deserializer)?
                .map(|text| {
                    DateTime::parse_from_rfc3339(&text)
                        .map(|at| at.with_timezone(&Utc))
                        .map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}

/// A project as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub updated_at: DateTime<Utc>,
}

/// A job's fixed limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobLimitsView {
    pub max_files: u32,
    pub max_declared_bytes: u64,
    pub max_pages: u32,
}

/// One uploaded file of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobFileView {
    pub id: String,
    pub file_name: String,
    pub content_type: String,
    pub classification: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub status: String,
    pub page_count: Option<u32>,
    pub error: Option<JobErrorView>,
}

/// Credits reserved and debited for a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobBillingView {
    pub credits_reserved: i64,
    pub credits_debited: i64,
}

/// Why a job or a file failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobErrorView {
    pub code: String,
    pub message: String,
}

/// A job as the API and its webhooks show it (SPEC §4 "Job object").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub project_id: String,
    pub external_id: Option<String>,
    pub status: String,
    pub webhook_url: Option<String>,
    pub limits: JobLimitsView,
    pub files: Vec<JobFileView>,
    pub page_count: u32,
    pub successful_page_count: u32,
    pub billing: JobBillingView,
    pub error: Option<JobErrorView>,
    pub result_available: bool,
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "timestamp::option")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(with = "timestamp")]
    pub expires_at: DateTime<Utc>,
}

/// The body of a `job.status_changed` webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookPayload {
    /// Always `job.status_changed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the status changed.
    #[serde(with = "timestamp")]
    pub timestamp: DateTime<Utc>,
    /// The job and the change.
    pub data: WebhookData,
}

/// `data` of a [`WebhookPayload`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookData {
    pub job: JobView,
    pub previous_status: Option<String>,
    pub sequence: u32,
}

/// The v1 result of a job (SPEC §4 `GET /jobs/{jobId}/result`), written once when the
/// job completes and immutable after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobResultView {
    /// Always `v1`.
    pub schema_version: String,
    pub job: ResultJobView,
    pub usage: ResultUsageView,
    pub documents: Vec<ResultDocumentView>,
    pub errors: Vec<ResultErrorView>,
    #[serde(with = "timestamp")]
    pub generated_at: DateTime<Utc>,
}

/// The job a result belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResultJobView {
    pub id: String,
    pub status: String,
    pub external_id: Option<String>,
}

/// What the job used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResultUsageView {
    pub page_count: u32,
    pub successful_page_count: u32,
    pub drawing_page_count: u32,
    pub document_page_count: u32,
    pub credits_debited: i64,
}

/// One document of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResultDocumentView {
    pub document_id: String,
    pub file_name: String,
    pub classification: String,
    pub status: String,
    pub page_count: u32,
    pub failed_page_count: u32,
    pub pages: Vec<ResultPageView>,
}

/// One page of a result document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResultPageView {
    pub page_number: u32,
    /// `drawing` or `document`.
    pub kind: String,
    pub width_pt: f64,
    pub height_pt: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sheet_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sheet_title: Option<String>,
    pub text_chars: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<JobErrorView>,
}

/// A failed file or page in a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResultErrorView {
    pub document_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub page_number: Option<u32>,
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_in_utc_with_milliseconds() {
        let at = DateTime::parse_from_rfc3339("2026-11-28T11:00:00.5+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_timestamp(at), "2026-11-28T10:00:00.500Z");
    }
}
