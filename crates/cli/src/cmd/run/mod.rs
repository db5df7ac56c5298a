//! `batchkit run`: from a request file to merged results in one command.
//!
//! Round 1 validates and splits the input; every round uploads its chunks,
//! creates a batch per chunk, waits, downloads; then all results so far are
//! merged with the input, and what can succeed when sent again is the next
//! round's input. The state file records each step as it happens.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use batchkit_client::ClientConfig;
use batchkit_core::Input;
use batchkit_core::results::Status;
use batchkit_core::split::{FactSink, Manifest, Plan, SplitConfig};
use batchkit_core::validate::validate_bytes_into;
use sha2::{Digest, Sha256};

use crate::cmd::{join, split};
use crate::exit::Exit;
use crate::report::thousands;

mod drive;
mod state;

use state::{Chunk, Round, State};

/// What to run, where, and how.
pub struct Options {
    /// The request file.
    pub file: PathBuf,
    /// Where the merged results go.
    pub output: PathBuf,
    /// The rules, limits and token counting of the chunks.
    pub config: SplitConfig,
    /// How to reach the service (or why that is not known: only a dry run
    /// goes on without it).
    pub client: Result<ClientConfig, String>,
    /// The batches' completion window.
    pub completion_window: String,
    /// Metadata pairs for every batch.
    pub metadata: Vec<(String, String)>,
    /// Rounds in all.
    pub max_rounds: u32,
    /// Print the plan and the estimate only.
    pub dry_run: bool,
    /// With `dry_run`: USD per million input and output tokens.
    pub prices: (Option<f64>, Option<f64>),
    /// The state file (default: beside the output).
    pub state: Option<PathBuf>,
    /// Delete the work folder and the state once the output is written.
    pub clean: bool,
    /// On Ctrl-C, leave the batches running without asking.
    pub yes: bool,
    /// Time between polls of the batches.
    pub every: std::time::Duration,
}

/// Where a run keeps its state, chunks and downloads.
struct Paths {
    state: PathBuf,
    work: PathBuf,
}

impl Paths {
    fn of(args: &Options) -> Paths {
        let state = args.state.clone().unwrap_or_else(|| {
            let mut s = args.output.clone().into_os_string();
            s.push(".run.json");
            PathBuf::from(s)
        });
        let mut work = state.clone().into_os_string();
        work.push(".d");
        let work = match state.to_str().and_then(|s| s.strip_suffix(".json")) {
            Some(stripped) => PathBuf::from(stripped),
            None => PathBuf::from(work),
        };
        Paths { state, work }
    }
}

/// Run.
pub fn run(args: &Options) -> Result<Exit> {
    let paths = Paths::of(args);
    let input = Input::open(&args.file)?;
    let name = input.name.clone();
    let mapped = input.into_mapped()?;
    let bytes = mapped.bytes();
    let digest: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut cfg = args.config.clone();
    // The batch endpoint of {custom_id, body} lines.
    cfg.endpoint = cfg
        .endpoint
        .or_else(|| cfg.profile.default_endpoint().map(str::to_owned));

    let mut state = match State::load(&paths.state)? {
        Some(s) if s.input_sha256 != digest => anyhow::bail!(
            "{} has changed since the run in {} started; delete {} (and {}) to start a new run",
            name.display(),
            paths.state.display(),
            paths.state.display(),
            paths.work.display()
        ),
        Some(s) => {
            eprintln!("resuming {} from {}", s.run_id, paths.state.display());
            s
        }
        None => State::new(&name, digest),
    };

    if args.dry_run {
        return dry_run(bytes, &name, &cfg, &state, args.prices);
    }
    if state.rounds.is_empty() {
        let dir = paths.work.join("round-1");
        let manifest = match split_into(bytes, &name, &cfg, &dir, &format!("{}.r1", state.run_id))?
        {
            Ok(m) => m,
            Err(exit) => return Ok(exit),
        };
        state.rounds.push(round(1, &manifest, "round-1"));
        state.save(&paths.state)?;
    }
    drive::run(args, &paths, &mut state, &cfg, &name)
}

fn round(number: u32, manifest: &Manifest, dir: &str) -> Round {
    Round {
        number,
        requests: manifest.requests,
        chunks: manifest
            .chunks
            .iter()
            .map(|c| Chunk {
                name: c.path.clone(),
                path: format!("{dir}/{}", c.path),
                endpoint: c.endpoint.clone(),
                requests: c.requests,
                bytes: c.bytes,
                file_id: None,
                batch_id: None,
                status: None,
                results: Vec::new(),
                downloaded: false,
                errors: Vec::new(),
            })
            .collect(),
        done: false,
    }
}

/// Validate `bytes` with split's rules (several endpoints and models are
/// fine: they are what chunks are for) and plan the chunks; on errors, the
/// report is printed and nothing is sent.
fn plan_of(bytes: &[u8], name: &Path, cfg: &SplitConfig) -> Result<Result<Plan, Exit>> {
    let (report, facts) =
        validate_bytes_into(bytes, &cfg.validation(), FactSink::default(), &|_| {});
    if !report.is_valid() {
        crate::exit::record(Exit::Invalid);
        let mut err = anstream::stderr().lock();
        crate::report::human_diagnostics(&mut err, name, &report, crate::cli::DEFAULT_PER_CODE)?;
        writeln!(
            err,
            "error: {} has {} errors; nothing was sent",
            name.display(),
            thousands(report.errors())
        )?;
        return Ok(Err(Exit::Invalid));
    }
    let blank = report.summary.blank_lines;
    match Plan::from_facts(bytes, cfg, facts.into_facts(), blank, Vec::new(), &|_| {}) {
        Ok(p) => Ok(Ok(p)),
        Err(oversize) => {
            crate::exit::record(Exit::Invalid);
            split::print_oversize(name, &oversize)?;
            Ok(Err(Exit::Invalid))
        }
    }
}

/// Plan `bytes` and write the chunks into `dir` (replacing what a killed
/// earlier attempt may have left there).
fn split_into(
    bytes: &[u8],
    name: &Path,
    cfg: &SplitConfig,
    dir: &Path,
    stem: &str,
) -> Result<Result<Manifest, Exit>> {
    let plan = match plan_of(bytes, name, cfg)? {
        Ok(p) => p,
        Err(exit) => return Ok(Err(exit)),
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let manifest = plan
        .write(
            bytes,
            dir,
            &name.display().to_string(),
            stem,
            cfg,
            false,
            &|_| {},
        )
        .with_context(|| format!("cannot write chunks to {}", dir.display()))?;
    Ok(Ok(manifest))
}

/// The plan and the token estimate; nothing is sent or written.
fn dry_run(
    bytes: &[u8],
    name: &Path,
    cfg: &SplitConfig,
    state: &State,
    prices: (Option<f64>, Option<f64>),
) -> Result<Exit> {
    if !state.rounds.is_empty() {
        eprintln!("(a run is under way: {} rounds so far)", state.rounds.len());
    }
    let plan = match plan_of(bytes, name, cfg)? {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    let manifest = plan.manifest(&name.display().to_string(), "chunk", cfg, None);
    let mut out = std::io::stdout().lock();
    let tokens: u64 = manifest
        .chunks
        .iter()
        .filter_map(|c| c.estimated_tokens)
        .sum();
    writeln!(
        out,
        "would run {} requests as {} batches ({} limits), about {} input tokens; nothing was sent",
        thousands(manifest.requests),
        manifest.chunks.len(),
        manifest.provider,
        thousands(tokens)
    )?;
    if prices.0.is_some() || prices.1.is_some() {
        let max_output: u64 = plan
            .facts
            .iter()
            .filter(|f| f.group().is_some())
            .map(|f| u64::from(f.max_output))
            .sum();
        let price = |tokens: u64, usd: Option<f64>| usd.map(|p| tokens as f64 * p / 1e6);
        let (input, output) = (price(tokens, prices.0), price(max_output, prices.1));
        writeln!(
            out,
            "  cost: {}",
            crate::cmd::stats::cost_text(input, output)
        )?;
    }
    for c in &manifest.chunks {
        writeln!(
            out,
            "  {}  {}  {}, {}, ~{}",
            c.endpoint,
            c.model.as_deref().unwrap_or("-"),
            crate::report::count(c.requests, "request"),
            crate::report::count(c.bytes, "byte"),
            crate::report::count(c.estimated_tokens.unwrap_or(0), "token")
        )?;
    }
    Ok(Exit::Ok)
}

/// The merge of the input with every result file so far, into `output`,
/// keeping what `render` writes; the summary is printed when `report`.
fn merge_into(
    input: &Path,
    results: Vec<PathBuf>,
    output: &Path,
    render: &(dyn Fn(&batchkit_core::merge::Record<'_>, &mut Vec<u8>) -> bool + Sync),
    report: Option<&str>,
) -> Result<Result<(batchkit_core::merge::Tally, bool), Exit>> {
    let join_args = join::Options::new(input, results, output);
    let merge = match join::open(&join_args, &[])? {
        Ok((m, _)) => m,
        Err(exit) => return Ok(Err(exit)),
    };
    let tally = join::write(&merge, &join_args, false, render)?;
    if let Some(verb) = report {
        join::summarize(&merge, &join_args, &tally, verb)?;
    }
    let clean =
        merge.problem_counts().is_empty() && tally.count(Status::Succeeded) == tally.total();
    Ok(Ok((tally, clean)))
}

/// Whether to cancel the batches on Ctrl-C: asked on a terminal.
fn ask_cancel(running: usize, yes: bool) -> bool {
    if yes || running == 0 || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return false;
    }
    eprint!("\ninterrupted: cancel the {running} batches still running? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}
