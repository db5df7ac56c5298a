//! The core of batchkit: a streaming reader and validator for the JSONL
//! request files of LLM Batch APIs (OpenAI's `/v1/batches` and the services
//! that copy it).
//!
//! Input is memory-mapped (files) or read in blocks of whole lines (stdin,
//! gzip); lines are checked in parallel chunks with one borrowed parse each;
//! `custom_id` uniqueness is checked with 24 bytes per request. Results are
//! the same for every thread count and for mapped or streamed input.
//!
//! ```
//! use batchkit_core::{Code, Config, Provider, validate_bytes};
//!
//! let file = concat!(
//!     r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}}"#, "\n",
//!     r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}}"#, "\n",
//! );
//! let report = validate_bytes(file.as_bytes(), &Config::new(Provider::OpenAi));
//! assert!(!report.is_valid());
//! let d = &report.diagnostics[0];
//! assert_eq!((d.code, d.line), (Code::DuplicateCustomId, Some(2)));
//! assert_eq!(report.summary.requests, 2);
//! ```

pub mod atomic;
mod check;
pub mod custom_id;
mod dedup;
pub mod diag;
mod envelope;
mod facts;
pub mod input;
pub mod lines;
pub mod merge;
pub mod params;
mod prefetch;
pub mod provider;
pub mod results;
mod scan;
pub mod split;
pub mod tokens;
pub mod validate;

pub use diag::{Code, CodeCounts, Diagnostic, Severity};
pub use input::{Input, InputError};
pub use provider::{EndpointKind, Limits, LineShape, Profile, Provider};
pub use validate::{Config, Report, Summary, Validator, validate, validate_bytes};

/// The parts the benchmarks and fuzz targets measure one by one: not an
/// API, and it may change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::dedup::{IdEntry, find_repeats};
    pub use crate::envelope::{LineView, parse_line, parse_line_serde, scan_bytes, view_from};
}
