//! The object keys of the platform, in one place: every service that reads or writes an
//! object derives its key here, so the layout cannot drift between the gateway (uploads),
//! the orchestrator (preflight, results) and housekeeping (orphan clean-up).
//!
//! Layout: `jobs/{job_id}/documents/{document_id}` and `jobs/{job_id}/result.json`.

/// The root under which every job's objects live (housekeeping lists it).
pub const DOCUMENTS_ROOT: &str = "jobs/";

/// Everything stored for one job: `jobs/{job_id}/`.
pub fn job_prefix(job_id: &str) -> String {
    format!("{DOCUMENTS_ROOT}{job_id}/")
}

/// An uploaded document: `jobs/{job_id}/documents/{document_id}`.
pub fn document(job_id: &str, document_id: &str) -> String {
    format!("{DOCUMENTS_ROOT}{job_id}/documents/{document_id}")
}

/// A job's result (written once): `jobs/{job_id}/result.json`.
pub fn result(job_id: &str) -> String {
    format!("{DOCUMENTS_ROOT}{job_id}/result.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_the_job_prefix() {
        assert_eq!(document("job_1", "doc_2"), "jobs/job_1/documents/doc_2");
        assert_eq!(result("job_1"), "jobs/job_1/result.json");
        assert!(document("job_1", "doc_2").starts_with(&job_prefix("job_1")));
        assert!(result("job_1").starts_with(&job_prefix("job_1")));
        assert!(job_prefix("job_1").starts_with(DOCUMENTS_ROOT));
    }
}
