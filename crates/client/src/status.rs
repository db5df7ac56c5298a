//! The statuses of a batch, and which of them are final: written once, for
//! the client, the server and the CLI.

/// Where a batch is in its life, as the Batch API writes it. A service may
/// write statuses of its own (`Batch::status` keeps the text as it came);
/// these are OpenAI's, which `batchkit serve` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchStatus {
    /// The input file is being checked.
    Validating,
    /// The input file was rejected (see `errors`).
    Failed,
    /// Requests are being sent.
    InProgress,
    /// Every request has its result; the files are being written.
    Finalizing,
    /// Done; the files are ready.
    Completed,
    /// The window ended first; what was done is in the files.
    Expired,
    /// Cancel was asked; requests in flight are finishing.
    Cancelling,
    /// Cancelled; what was done is in the files.
    Cancelled,
}

impl BatchStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [BatchStatus; 8] = [
        BatchStatus::Validating,
        BatchStatus::Failed,
        BatchStatus::InProgress,
        BatchStatus::Finalizing,
        BatchStatus::Completed,
        BatchStatus::Expired,
        BatchStatus::Cancelling,
        BatchStatus::Cancelled,
    ];

    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    /// The status written `s`.
    pub fn parse(s: &str) -> Option<BatchStatus> {
        BatchStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Nothing more will happen to the batch.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Completed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::BatchStatus;

    #[test]
    fn every_status_reads_back_and_four_are_final() {
        for s in BatchStatus::ALL {
            assert_eq!(BatchStatus::parse(s.as_str()), Some(s));
        }
        let done: Vec<&str> = BatchStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(BatchStatus::as_str)
            .collect();
        assert_eq!(done, ["failed", "completed", "expired", "cancelled"]);
        assert_eq!(BatchStatus::parse("QUEUED"), None);
    }
}
