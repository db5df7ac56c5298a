//! One module per subcommand; `join` is what merge and retry share.

pub mod batches;
pub mod docs;
pub mod files;
pub mod join;
pub mod merge;
pub mod retry;
pub mod run;
pub mod serve;
pub mod service;
pub mod split;
pub mod stats;
pub mod validate;
