//! The `batchkit` binary as its users run it: one test binary for the
//! crate (one link instead of ten, as in ripgrep and uv), a module per area.

// Tests may unwrap: a panic is a failure report.
#![allow(clippy::unwrap_used)]

mod common;

mod cli;
mod client;
mod docs;
mod engine;
mod fake_openai;
mod fixtures;
mod merge;
mod nodes;
mod python;
mod run;
mod serve;
mod split;
mod workflow;
