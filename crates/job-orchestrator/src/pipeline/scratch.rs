//! A private scratch folder for the local copies of documents the PDF parser reads,
//! removed when the stage is done with it (also when it fails half-way).

use std::path::PathBuf;

/// A folder under the system temp dir, deleted on drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates a fresh folder for `job_id`'s work.
    pub async fn create(job_id: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "plangrep-{job_id}-{}",
            ulid::Ulid::generate().to_string().to_ascii_lowercase()
        ));
        tokio::fs::create_dir_all(&path).await?;
        Ok(Self { path })
    }

    /// Where a document's local copy goes.
    pub fn file(&self, document_id: &str) -> PathBuf {
        self.path.join(format!("{document_id}.pdf"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
