//! Whether the engine can keep its records: writes that fail (a full disk,
//! a database that refuses) are retried without end, so that no result is
//! dropped, and while they fail the server says so once in the log, in
//! `GET /health` (503, `degraded`) and in the metrics, instead of looking
//! busy for ever.

use std::sync::Mutex;

use serde_json::{Value, json};

/// Failing writes, by what was being written.
#[derive(Default)]
pub struct Health {
    failing: Mutex<Vec<Trouble>>,
}

struct Trouble {
    /// What could not be written (`results of batch_...`).
    what: String,
    /// The latest error.
    error: String,
    /// When the failures began (Unix seconds).
    since: i64,
}

impl Health {
    /// A write of `what` failed with `error`. Logged when `what` starts
    /// failing, not at every retry.
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match failing.iter_mut().find(|t| t.what == what) {
            Some(t) => t.error = error.to_string(),
            None => {
                tracing::error!(
                    "cannot write the {what}: {error}; retrying until it works (nothing is dropped; see /health)"
                );
                failing.push(Trouble {
                    what: what.to_owned(),
                    error: error.to_string(),
                    since: crate::ids::now(),
                });
            }
        }
    }

    /// A write of `what` succeeded: it is no longer failing.
    pub fn succeeded(&self, what: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = failing.iter().position(|t| t.what == what) {
            let t = failing.remove(at);
            // At the level of the error it ends, so that whoever saw one sees both.
            tracing::warn!("the {what} are written again (failing since {})", t.since);
        }
    }

    /// The body of `GET /health`, and whether all is well.
    pub fn report(&self) -> (bool, Value) {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.is_empty() {
            return (true, json!({"status": "ok"}));
        }
        let problems: Vec<Value> = failing
            .iter()
            .map(|t| json!({"writing": t.what, "error": t.error, "since": t.since}))
            .collect();
        (false, json!({"status": "degraded", "problems": problems}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_while_a_write_fails_and_ok_after() {
        let h = Health::default();
        assert!(h.report().0);
        h.failed("results of batch_1", &"database or disk is full");
        h.failed("results of batch_1", &"database or disk is full");
        let (ok, body) = h.report();
        assert!(!ok);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["problems"].as_array().map(Vec::len), Some(1));
        h.succeeded("results of batch_1");
        assert!(h.report().0);
    }
}
