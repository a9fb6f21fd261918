//! Routing keys of status-change events, derived from typed statuses in one place: the
//! outbox writes them, queues bind to them and stages dispatch on them, and none of them
//! spells a routing key by hand.
//!
//! A job event is routed as `job.status_changed.<status>`, a project event as
//! `project.status_changed.<status>` (SPEC §6).

use plangrep_core::{JobStatus, ProjectStatus};

const JOB_PREFIX: &str = "job.status_changed.";
const PROJECT_PREFIX: &str = "project.status_changed.";

/// What a status-change event announces, as read from its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusEvent {
    /// A job entered this status.
    Job(JobStatus),
    /// A project entered this status.
    Project(ProjectStatus),
}

impl StatusEvent {
    /// The routing key the event is published with.
    pub fn routing_key(self) -> String {
        match self {
            StatusEvent::Job(status) => format!("{JOB_PREFIX}{status}"),
            StatusEvent::Project(status) => format!("{PROJECT_PREFIX}{status}"),
        }
    }

    /// The event a routing key names, or `None` for a key we never publish.
    pub fn parse(routing_key: &str) -> Option<Self> {
        if let Some(status) = routing_key.strip_prefix(JOB_PREFIX) {
            return status.parse().ok().map(StatusEvent::Job);
        }
        routing_key
            .strip_prefix(PROJECT_PREFIX)?
            .parse()
            .ok()
            .map(StatusEvent::Project)
    }

    /// Whether this is a job event (those must never be dropped unroutable).
    pub fn is_job(self) -> bool {
        matches!(self, StatusEvent::Job(_))
    }
}

/// What a work queue is bound to on the events exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Every job status change (the webhook dispatcher).
    AllJobEvents,
    /// One kind of status change (a pipeline stage's trigger).
    Status(StatusEvent),
}

impl Binding {
    /// The AMQP binding pattern.
    pub fn pattern(self) -> String {
        match self {
            Binding::AllJobEvents => "job.#".to_owned(),
            Binding::Status(event) => event.routing_key(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_routing_key() {
        for status in JobStatus::ALL {
            let event = StatusEvent::Job(status);
            assert_eq!(StatusEvent::parse(&event.routing_key()), Some(event));
        }
        let ready = StatusEvent::Project(ProjectStatus::Ready);
        assert_eq!(ready.routing_key(), "project.status_changed.ready");
        assert_eq!(
            StatusEvent::parse("project.status_changed.ready"),
            Some(ready)
        );
        assert_eq!(
            StatusEvent::Job(JobStatus::AwaitingUploads).routing_key(),
            "job.status_changed.awaiting_uploads"
        );
        assert_eq!(StatusEvent::parse("job.status_changed.nope"), None);
        assert_eq!(StatusEvent::parse("other.thing"), None);
    }
}
