//! The job lifecycle of SPEC §4 as a pure state machine.
//!
//! Every status change in the system goes through [`transition`]: the store only ever
//! writes the status this function returns, so an illegal move cannot be persisted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Provisioning,
    AwaitingUploads,
    Uploading,
    Preflighting,
    BlockedInsufficientCredits,
    Processing,
    Completed,
    CompletedWithErrors,
    Failed,
    Cancelled,
    Expired,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 11] = [
        JobStatus::Provisioning,
        JobStatus::AwaitingUploads,
        JobStatus::Uploading,
        JobStatus::Preflighting,
        JobStatus::BlockedInsufficientCredits,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::CompletedWithErrors,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Expired,
    ];

    /// The wire name (`awaiting_uploads`), also used in routing keys and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Provisioning => "provisioning",
            JobStatus::AwaitingUploads => "awaiting_uploads",
            JobStatus::Uploading => "uploading",
            JobStatus::Preflighting => "preflighting",
            JobStatus::BlockedInsufficientCredits => "blocked_insufficient_credits",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::CompletedWithErrors => "completed_with_errors",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Expired => "expired",
        }
    }

    /// A terminal job never changes again.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed
                | JobStatus::CompletedWithErrors
                | JobStatus::Failed
                | JobStatus::Cancelled
                | JobStatus::Expired
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no job status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownJobStatus(pub String);

impl TryFrom<String> for JobStatus {
    type Error = UnknownJobStatus;

    /// Parses a stored status (rows decode through this).
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl FromStr for JobStatus {
    type Err = UnknownJobStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownJobStatus(s.to_owned()))
    }
}

/// Something that happened to a job and may move it to another status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEvent {
    /// The job's storage is allocated: it can receive files.
    StorageAllocated,
    /// The first file arrived.
    FileReceived,
    /// The client closed the upload window.
    UploadsCompleted,
    /// Preflight passed and the credits are reserved.
    PreflightPassed,
    /// Preflight found too few credits.
    CreditsInsufficient,
    /// Preflight found nothing processable (or a limit was exceeded).
    PreflightFailed,
    /// The client resumed a job blocked on credits.
    Resumed,
    /// Every page was processed.
    ProcessingSucceeded,
    /// Some pages failed, at least one succeeded.
    ProcessingPartiallySucceeded,
    /// Nothing could be processed.
    ProcessingFailed,
    /// The client cancelled the job.
    CancelRequested,
    /// `expiresAt` passed.
    ExpiryReached,
}

impl JobEvent {
    /// Every event, for exhaustive tests.
    pub const ALL: [JobEvent; 12] = [
        JobEvent::StorageAllocated,
        JobEvent::FileReceived,
        JobEvent::UploadsCompleted,
        JobEvent::PreflightPassed,
        JobEvent::CreditsInsufficient,
        JobEvent::PreflightFailed,
        JobEvent::Resumed,
        JobEvent::ProcessingSucceeded,
        JobEvent::ProcessingPartiallySucceeded,
        JobEvent::ProcessingFailed,
        JobEvent::CancelRequested,
        JobEvent::ExpiryReached,
    ];
}

/// A move the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job in status {from} cannot accept {event:?}")]
pub struct InvalidTransition {
    pub from: JobStatus,
    pub event: JobEvent,
}

/// The status a job in `from` moves to when `event` happens, or why it cannot.
pub fn transition(from: JobStatus, event: JobEvent) -> Result<JobStatus, InvalidTransition> {
    use JobEvent as E;
    use JobStatus as S;

    let to = match (from, event) {
        (from, _) if from.is_terminal() => None,
        (_, E::CancelRequested) => Some(S::Cancelled),
        (_, E::ExpiryReached) => Some(S::Expired),
        (S::Provisioning, E::StorageAllocated) => Some(S::AwaitingUploads),
        (S::AwaitingUploads, E::FileReceived) => Some(S::Uploading),
        (S::Uploading, E::UploadsCompleted) => Some(S::Preflighting),
        (S::Preflighting, E::PreflightPassed) => Some(S::Processing),
        (S::Preflighting, E::CreditsInsufficient) => Some(S::BlockedInsufficientCredits),
        (S::Preflighting, E::PreflightFailed) => Some(S::Failed),
        (S::BlockedInsufficientCredits, E::Resumed) => Some(S::Preflighting),
        (S::Processing, E::ProcessingSucceeded) => Some(S::Completed),
        (S::Processing, E::ProcessingPartiallySucceeded) => Some(S::CompletedWithErrors),
        (S::Processing, E::ProcessingFailed) => Some(S::Failed),
        _ => None,
    };
    to.ok_or(InvalidTransition { from, event })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use JobStatus as S;

    /// SPEC §4 "Allowed transitions", written out by hand as (from, to) pairs.
    fn allowed_by_spec() -> BTreeSet<(&'static str, &'static str)> {
        let mut allowed = [
            (S::Provisioning, S::AwaitingUploads),
            (S::AwaitingUploads, S::Uploading),
            (S::Uploading, S::Preflighting),
            (S::Preflighting, S::Processing),
            (S::Preflighting, S::BlockedInsufficientCredits),
            (S::Preflighting, S::Failed),
            (S::BlockedInsufficientCredits, S::Preflighting),
            (S::Processing, S::Completed),
            (S::Processing, S::CompletedWithErrors),
            (S::Processing, S::Failed),
        ]
        .into_iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect::<BTreeSet<_>>();
        for from in S::ALL.into_iter().filter(|s| !s.is_terminal()) {
            allowed.insert((from.as_str(), S::Cancelled.as_str()));
            allowed.insert((from.as_str(), S::Expired.as_str()));
        }
        allowed
    }

    #[test]
    fn the_reachable_moves_are_exactly_the_spec_table() {
        let reachable = S::ALL
            .into_iter()
            .flat_map(|from| JobEvent::ALL.into_iter().map(move |event| (from, event)))
            .filter_map(|(from, event)| {
                transition(from, event)
                    .ok()
                    .map(|to| (from.as_str(), to.as_str()))
            })
            .collect::<BTreeSet<_>>();
        assert_eq!(reachable, allowed_by_spec());
    }

    #[test]
    fn terminal_states_are_frozen() {
        for from in S::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in JobEvent::ALL {
                assert_eq!(
                    transition(from, event),
                    Err(InvalidTransition { from, event }),
                    "{from} accepted {event:?}"
                );
            }
        }
    }

    #[test]
    fn completing_uploads_without_files_is_refused() {
        assert!(transition(S::AwaitingUploads, JobEvent::UploadsCompleted).is_err());
    }

    #[test]
    fn exactly_five_statuses_are_terminal() {
        let terminal: Vec<_> = S::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                S::Completed,
                S::CompletedWithErrors,
                S::Failed,
                S::Cancelled,
                S::Expired
            ]
        );
    }

    #[test]
    fn status_names_round_trip_and_match_serde() {
        for status in S::ALL {
            assert_eq!(status.as_str().parse::<S>().unwrap(), status);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{}\"", status.as_str())
            );
        }
        assert!("Completed".parse::<S>().is_err());
    }
}
