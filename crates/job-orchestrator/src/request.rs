//! Checks of what internal callers send (ADR 0010). The gateway validates customer input at
//! the edge; the orchestrator re-checks every field an RPC relies on, whoever the caller
//! is, so a malformed id, an empty grant or an out-of-range rate is an INVALID_ARGUMENT
//! and never reaches the database. Ids are parsed with the core id types.

use plangrep_core::id::{DocumentId, JobId, OrgId, ProjectId};
use plangrep_core::validate::{DestinationPolicy, ExternalId, FieldError, WebhookUrl};
use plangrep_core::{JobStatus, credits};
use plangrep_proto::orchestrator::{Idempotency, UploadedDocument};

use crate::error::Error;

/// The longest `Idempotency-Key` (SPEC §2) and route name accepted.
const MAX_KEY_LEN: usize = 256;
/// Job ids of one `GetWebhookTargets` call at most.
pub const MAX_JOB_IDS: usize = 256;

/// The length of an idempotency fingerprint (SHA-256).
const FINGERPRINT_LEN: usize = 32;

fn invalid(field: &'static str, issue: impl Into<String>) -> Error {
    Error::InvalidField(FieldError::new(field, issue))
}

/// An `org_` id (every scoped RPC names its organization).
pub fn org_id(raw: &str) -> Result<OrgId, Error> {
    raw.parse()
        .map_err(|_| invalid("org_id", "must be an org_ id"))
}

/// A `proj_` id.
pub fn project_id(raw: &str) -> Result<ProjectId, Error> {
    raw.parse()
        .map_err(|_| invalid("project_id", "must be a proj_ id"))
}

/// A `job_` id.
pub fn job_id(raw: &str) -> Result<JobId, Error> {
    raw.parse()
        .map_err(|_| invalid("job_id", "must be a job_ id"))
}

/// Job ids of a batched look-up: at most [`MAX_JOB_IDS`], each a job id.
pub fn job_ids(raw: &[String]) -> Result<Vec<JobId>, Error> {
    if raw.len() > MAX_JOB_IDS {
        return Err(invalid(
            "job_ids",
            format!("at most {MAX_JOB_IDS} job ids per call"),
        ));
    }
    raw.iter().map(|id| job_id(id)).collect()
}

/// The organization and job of a job-scoped RPC.
pub fn org_and_job(org: &str, job: &str) -> Result<(OrgId, JobId), Error> {
    Ok((org_id(org)?, job_id(job)?))
}

/// A credit grant: its amount and trimmed reason, within the admin API's bounds.
pub fn grant(amount: i64, reason: &str) -> Result<(i64, &str), Error> {
    Ok((
        credits::grant_amount(amount)?,
        credits::grant_reason(reason)?,
    ))
}

/// The rates a `SetCreditRates` changes (absent ones stay as they are).
pub fn rates(drawing: Option<i64>, document: Option<i64>) -> Result<(), Error> {
    if let Some(rate) = drawing {
        credits::rate("drawingPageRate", rate)?;
    }
    if let Some(rate) = document {
        credits::rate("documentPageRate", rate)?;
    }
    Ok(())
}

/// An optional `Idempotency`: a printable key of 1 to 256 characters, a route and a
/// SHA-256 fingerprint.
pub fn idempotency(idempotency: Option<&Idempotency>) -> Result<(), Error> {
    let Some(idempotency) = idempotency else {
        return Ok(());
    };
    let printable = |text: &str| {
        !text.is_empty()
            && text.len() <= MAX_KEY_LEN
            && text.bytes().all(|b| (0x20..=0x7e).contains(&b))
    };
    if !printable(&idempotency.key) {
        return Err(invalid(
            "idempotency.key",
            "must be 1 to 256 printable ASCII characters",
        ));
    }
    if !printable(&idempotency.route) {
        return Err(invalid(
            "idempotency.route",
            "must be 1 to 256 printable ASCII characters",
        ));
    }
    if idempotency.fingerprint.len() != FINGERPRINT_LEN {
        return Err(invalid(
            "idempotency.fingerprint",
            "must be a SHA-256 digest (32 bytes)",
        ));
    }
    Ok(())
}

/// A job's webhook URL, if any: an absolute http(s) URL. Whether its destination is
/// allowed is the gateway's policy and is re-checked by the dispatcher at send time.
pub fn webhook_url(url: Option<&str>) -> Result<(), Error> {
    if let Some(url) = url {
        WebhookUrl::parse(url, DestinationPolicy::AllowInsecure)?;
    }
    Ok(())
}

/// The optional filters of `ListJobs`.
pub fn job_filters(status: Option<&str>, external_id: Option<&str>) -> Result<(), Error> {
    if let Some(status) = status {
        status
            .parse::<JobStatus>()
            .map_err(|_| invalid("status", "must be a job status"))?;
    }
    if let Some(external_id) = external_id {
        ExternalId::parse(external_id)?;
    }
    Ok(())
}

/// Documents to register: at least one, each with a `doc_` id, a name, a storage key and
/// a SHA-256 in hex.
pub fn documents(documents: &[UploadedDocument]) -> Result<(), Error> {
    if documents.is_empty() {
        return Err(invalid("files", "at least one document is required"));
    }
    for document in documents {
        document
            .id
            .parse::<DocumentId>()
            .map_err(|_| invalid("documents.id", "must be a doc_ id"))?;
        if document.file_name.trim().is_empty() {
            return Err(invalid("documents.file_name", "must not be empty"));
        }
        if document.storage_key.is_empty() {
            return Err(invalid("documents.storage_key", "must not be empty"));
        }
        if document.sha256.len() != 64 || !document.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "documents.sha256",
                "must be 64 hexadecimal characters",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_of_their_kind() {
        let org = OrgId::generate().to_string();
        let job = JobId::generate().to_string();
        assert!(org_and_job(&org, &job).is_ok());
        for (o, j) in [
            ("", job.as_str()),
            (org.as_str(), ""),
            (job.as_str(), org.as_str()),
        ] {
            assert!(matches!(org_and_job(o, j), Err(Error::InvalidField(_))));
        }
    }

    #[test]
    fn idempotency_needs_a_key_a_route_and_a_full_fingerprint() {
        let good = Idempotency {
            key: "k-1".to_owned(),
            route: "POST /projects".to_owned(),
            fingerprint: vec![0; 32],
        };
        assert!(idempotency(None).is_ok());
        assert!(idempotency(Some(&good)).is_ok());
        for bad in [
            Idempotency {
                key: String::new(),
                ..good.clone()
            },
            Idempotency {
                key: "\n".to_owned(),
                ..good.clone()
            },
            Idempotency {
                route: String::new(),
                ..good.clone()
            },
            Idempotency {
                fingerprint: vec![],
                ..good.clone()
            },
        ] {
            assert!(idempotency(Some(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn documents_and_filters_are_checked() {
        let document = UploadedDocument {
            id: DocumentId::generate().to_string(),
            file_name: "a.pdf".to_owned(),
            content_type: "application/pdf".to_owned(),
            classification: "plans".to_owned(),
            size_bytes: 10,
            sha256: "a".repeat(64),
            storage_key: "k".to_owned(),
        };
        assert!(documents(std::slice::from_ref(&document)).is_ok());
        assert!(documents(&[]).is_err());
        for bad in [
            UploadedDocument {
                id: "doc_x".to_owned(),
                ..document.clone()
            },
            UploadedDocument {
                sha256: "z".repeat(64),
                ..document.clone()
            },
            UploadedDocument {
                storage_key: String::new(),
                ..document.clone()
            },
        ] {
            assert!(documents(&[bad]).is_err());
        }
        assert!(job_filters(Some("completed"), Some("PO-1")).is_ok());
        assert!(job_filters(Some("done"), None).is_err());
        assert!(webhook_url(Some("not a url")).is_err());
        assert!(webhook_url(Some("http://127.0.0.1:9/hook")).is_ok());
    }
}
