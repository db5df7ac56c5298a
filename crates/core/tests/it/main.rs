//! Properties of the core over generated inputs, one test binary for the
//! crate: validation, merging and splitting.

// Tests may unwrap: a panic is a failure report.
#![allow(clippy::unwrap_used)]

mod merge_props;
mod props;
mod split_props;
