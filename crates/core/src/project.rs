//! Project statuses: a project is usable once its storage is provisioned.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a project is in its (short) lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProjectStatus {
    Provisioning,
    Ready,
    Failed,
}

impl ProjectStatus {
    /// The wire name, also used in routing keys and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProjectStatus::Provisioning => "provisioning",
            ProjectStatus::Ready => "ready",
            ProjectStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for ProjectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no project status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown project status {0:?}")]
pub struct UnknownProjectStatus(pub String);

impl TryFrom<String> for ProjectStatus {
    type Error = UnknownProjectStatus;

    /// Parses a stored status (rows decode through this).
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl FromStr for ProjectStatus {
    type Err = UnknownProjectStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ProjectStatus::Provisioning,
            ProjectStatus::Ready,
            ProjectStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| UnknownProjectStatus(s.to_owned()))
    }
}
