//! The state file of `batchkit run`: every chunk, file id and batch id as
//! soon as it exists, written atomically after each change, so a killed run
//! carries on where it was.

use std::path::Path;

use anyhow::{Context, Result};
use batchkit_core::atomic::AtomicFile;
use serde::{Deserialize, Serialize};

/// The format's version.
const VERSION: u32 = 1;

/// A run.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    /// The format's version.
    pub version: u32,
    /// Names this run's files and batches (`batchkit_run` metadata).
    pub run_id: String,
    /// The request file.
    pub input: String,
    /// Its SHA-256: a rerun on a changed file is refused.
    pub input_sha256: String,
    /// The rounds so far.
    pub rounds: Vec<Round>,
}

/// One round: the first, or a resubmission.
#[derive(Debug, Serialize, Deserialize)]
pub struct Round {
    /// From 1.
    pub number: u32,
    /// Requests sent in it.
    pub requests: u64,
    /// Its chunks.
    pub chunks: Vec<Chunk>,
    /// Every batch ended and its files are downloaded.
    pub done: bool,
}

/// One chunk and what became of it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Chunk {
    /// File name (unique to the run: it is how an upload is found again).
    pub name: String,
    /// Path, relative to the work directory.
    pub path: String,
    /// Its endpoint.
    pub endpoint: String,
    /// Requests in it.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
    /// Once uploaded.
    pub file_id: Option<String>,
    /// Once created.
    pub batch_id: Option<String>,
    /// The batch's last status seen.
    pub status: Option<String>,
    /// Downloaded result files, relative to the work directory.
    pub results: Vec<String>,
    /// Its results are downloaded.
    pub downloaded: bool,
    /// Why its batch failed, if it did (the batch's `errors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<batchkit_client::BatchErrorItem>,
}

impl State {
    /// A new run of the input with this digest.
    pub fn new(input: &Path, input_sha256: String) -> State {
        State {
            version: VERSION,
            run_id: batchkit_run_id(),
            input: input.display().to_string(),
            input_sha256,
            rounds: Vec::new(),
        }
    }

    /// The state at `path`, if there is one.
    pub fn load(path: &Path) -> Result<Option<State>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let state: State = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a batchkit run state; delete it to start over",
                path.display()
            )
        })?;
        if state.version != VERSION {
            anyhow::bail!(
                "{} was written by another version of batchkit (state version {})",
                path.display(),
                state.version
            );
        }
        Ok(Some(state))
    }

    /// Write the state atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut f =
            AtomicFile::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        // Batch ids must survive a power cut too: they are what a rerun uses
        // to find batches that are already paid for.
        f.durable = true;
        serde_json::to_writer_pretty(&mut f, self)?;
        f.commit()
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

fn batchkit_run_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed = xxhash_rust::xxh3::xxh3_64(
        &[
            nanos.to_le_bytes(),
            u128::from(std::process::id()).to_le_bytes(),
        ]
        .concat(),
    );
    format!("run-{mixed:016x}")
}
