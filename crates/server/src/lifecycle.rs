//! The batch lifecycle, written once: which status may follow which. The
//! store changes a batch's status only from one of the statuses listed here
//! for the new one (a compare-and-set), so two tasks, or two nodes, that
//! race on a batch cannot take it backwards or out of a final status.
//!
//! ```text
//! validating ──> in_progress ──> finalizing ──> completed
//!     │  │            │   │           │
//!     │  └─> failed   │   └───────────┴──> expired
//!     └──────────> cancelling ──────────> cancelled
//! ```
//!
//! (Expiry and cancellation end a batch from any status that is not final:
//! what was done is written to its files.)

use crate::objects::Status;

/// The statuses a batch may be in for it to move to `to`; none for
/// `validating`, where every batch starts.
pub fn sources(to: Status) -> &'static [Status] {
    use Status::*;
    match to {
        Validating => &[],
        InProgress | Failed => &[Validating],
        Finalizing => &[InProgress],
        Cancelling => &[Validating, InProgress],
        Completed => &[Finalizing],
        Expired | Cancelled => &[Validating, InProgress, Finalizing, Cancelling],
    }
}

/// The stamp (`<status>_at`) a move to `to` sets, if it has one.
pub fn stamp(to: Status) -> Option<&'static str> {
    match to {
        Status::Validating => None,
        Status::InProgress => Some("in_progress_at"),
        Status::Failed => Some("failed_at"),
        Status::Finalizing => Some("finalizing_at"),
        Status::Completed => Some("completed_at"),
        Status::Expired => Some("expired_at"),
        Status::Cancelling => Some("cancelling_at"),
        Status::Cancelled => Some("cancelled_at"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_have_no_way_out_and_every_other_reaches_one() {
        for from in Status::ALL {
            let next: Vec<Status> = Status::ALL
                .into_iter()
                .filter(|&to| sources(to).contains(&from))
                .collect();
            if from.is_terminal() {
                assert!(next.is_empty(), "{from} -> {next:?}");
            } else {
                assert!(next.iter().any(|s| s.is_terminal()), "{from} ends nowhere");
            }
        }
        // Nothing goes back to the start, and every move sets a stamp.
        assert!(sources(Status::Validating).is_empty());
        for to in Status::ALL.into_iter().filter(|&s| s != Status::Validating) {
            assert!(stamp(to).is_some(), "{to}");
        }
    }
}
