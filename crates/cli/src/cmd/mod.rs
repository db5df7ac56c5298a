//! One module per subcommand; `join` is what merge and retry share.

mod join;
pub mod merge;
pub mod retry;
pub mod serve;
pub mod split;
pub mod stats;
pub mod validate;
