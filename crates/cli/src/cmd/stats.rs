//! `batchkit stats`: what a request file holds, before you pay for it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use batchkit_core::split::{FactSink, Plan, SplitConfig};
use batchkit_core::validate::validate_bytes_into;
use batchkit_core::{Input, Severity};
use serde::Serialize;

use crate::exit::Exit;
use crate::progress;
use crate::report::{Format, count, thousands};

#[derive(Serialize)]
pub struct Stats {
    file: String,
    provider: &'static str,
    requests: u64,
    lines: u64,
    blank_lines: u64,
    bytes: u64,
    longest_line: u64,
    groups: Vec<GroupStats>,
    tokens: Tokens,
    embedding_inputs: u64,
    /// Chunks `split` would make with the same limits (null: some line fits no chunk).
    chunks: Option<u64>,
    cost_usd: Option<Cost>,
    /// Lines the service would reject (`batchkit validate` lists them).
    errors: Errors,
}

#[derive(Serialize)]
struct Errors {
    lines: u64,
    by_code: BTreeMap<&'static str, u64>,
}

#[derive(Serialize, Default)]
struct GroupStats {
    endpoint: String,
    model: Option<String>,
    requests: u64,
    bytes: u64,
    input_tokens: u64,
    max_output_tokens: u64,
}

#[derive(Serialize)]
struct Tokens {
    encodings: BTreeMap<&'static str, u64>,
    input_total: u64,
    input_p50: u64,
    input_p95: u64,
    input_max: u64,
    max_output_total: u64,
}

#[derive(Serialize)]
struct Cost {
    input: Option<f64>,
    max_output: Option<f64>,
    total_at_most: Option<f64>,
    /// Per model, at its own price (`--price`) or the general one.
    by_model: Vec<ModelCost>,
    /// Some model has its own price (the per-model lines are shown).
    #[serde(skip)]
    own_prices: bool,
}

#[derive(Serialize)]
struct ModelCost {
    model: Option<String>,
    input: Option<f64>,
    max_output: Option<f64>,
}

/// Every group at its model's price (`--price MODEL=IN/OUT`) or the general
/// one; a total only when every group has a price.
fn cost(prices: &Prices, groups: &[GroupStats]) -> Cost {
    let price = |tokens: u64, usd: Option<f64>| usd.map(|p| tokens as f64 * p / 1e6);
    let mut by_model: Vec<ModelCost> = Vec::new();
    for g in groups {
        let own = prices
            .per_model
            .iter()
            .find(|(m, _, _)| Some(m.as_str()) == g.model.as_deref());
        let (pin, pout) = match own {
            Some((_, i, o)) => (Some(*i), Some(*o)),
            None => (prices.input, prices.output),
        };
        let (input, max_output) = (price(g.input_tokens, pin), price(g.max_output_tokens, pout));
        match by_model.iter_mut().find(|m| m.model == g.model) {
            Some(m) => {
                m.input = m.input.zip(input).map(|(a, b)| a + b);
                m.max_output = m.max_output.zip(max_output).map(|(a, b)| a + b);
            }
            None => by_model.push(ModelCost {
                model: g.model.clone(),
                input,
                max_output,
            }),
        }
    }
    let sum = |f: fn(&ModelCost) -> Option<f64>| -> Option<f64> {
        by_model.iter().map(f).sum::<Option<f64>>()
    };
    let (input, max_output) = (sum(|m| m.input), sum(|m| m.max_output));
    Cost {
        input,
        max_output,
        total_at_most: input.zip(max_output).map(|(a, b)| a + b),
        by_model,
        own_prices: !prices.per_model.is_empty(),
    }
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as u64
}

/// What to count, and at what prices.
pub struct Options {
    /// Request files; `-` is standard input.
    pub files: Vec<PathBuf>,
    /// The rules, limits and token counting (for the chunk count).
    pub config: SplitConfig,
    /// The prices, if any.
    pub prices: Prices,
    /// How the report is printed.
    pub format: Format,
}

/// Prices in USD per million tokens.
pub struct Prices {
    /// Of input tokens, for models without their own.
    pub input: Option<f64>,
    /// Of output tokens, for models without their own.
    pub output: Option<f64>,
    /// Per model: (model, input, output).
    pub per_model: Vec<(String, f64, f64)>,
}

impl Prices {
    fn any(&self) -> bool {
        self.input.is_some() || self.output.is_some() || !self.per_model.is_empty()
    }
}

/// Count, estimate and print each file; the exit status is the worst.
pub fn run(args: &Options) -> Result<Exit> {
    let mut worst = Exit::Ok;
    for file in &args.files {
        worst = worst.max(one(args, file)?);
    }
    Ok(worst)
}

fn one(args: &Options, file: &std::path::Path) -> Result<Exit> {
    let (stats, exit) = compute(args, file)?;
    crate::exit::record(exit);
    match args.format {
        Format::Json => {
            let mut out = anstream::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &stats)?;
            writeln!(out)?;
        }
        Format::Human => print_human(&stats)?,
        Format::Quiet => {}
    }
    Ok(exit)
}

/// The statistics of one file, and its exit status (1 when a line is
/// invalid), as `stats --format json` prints them.
pub fn compute(args: &Options, file: &std::path::Path) -> Result<(Stats, Exit)> {
    let input = Input::open(file)?;
    let name = input.name.clone();
    let mapped = input.into_mapped()?;
    let bytes = mapped.bytes();
    let cfg = &args.config;
    // One pass over the file, grouped per model and without limits (so it
    // cannot fail), then cut again under the provider's rules for the count.
    let mut by_model = cfg.clone();
    by_model.profile.single_model = true;
    by_model.limits = Default::default();
    by_model.max_tokens = None;
    // Validation and token counting each pass over the bytes once: a bar
    // each, of the file's size.
    let total = Some(bytes.len() as u64);
    let [checking, counting] = progress::bytes_bars(total, ["checking", "counting tokens"]);
    let mut vcfg = by_model.validation();
    vcfg.keep = Some(0);
    let sink = FactSink::default();
    let (report, sink) = validate_bytes_into(bytes, &vcfg, sink, &|n| checking.inc(n));
    checking.finish_and_clear();
    let mut facts = sink.into_facts();
    let bad_lines = std::mem::take(&mut facts.bad_lines).len() as u64;
    let plan = Plan::from_facts(
        bytes,
        &by_model,
        facts,
        report.summary.blank_lines,
        Vec::new(),
        &|n| counting.inc(n),
    );
    counting.finish_and_clear();
    let plan =
        plan.map_err(|_| anyhow::anyhow!("a plan without limits cannot have oversize lines"))?;
    let errors = Errors {
        lines: bad_lines,
        by_code: report
            .counts
            .iter()
            .filter(|(c, n)| *n > 0 && c.severity() == Severity::Error)
            .map(|(c, n)| (c.as_str(), n))
            .collect(),
    };
    let chunks = plan.recut(cfg).ok().map(|c| c.len() as u64);
    let mut groups: Vec<GroupStats> = plan
        .groups
        .iter()
        .map(|g| GroupStats {
            endpoint: g.endpoint.clone(),
            model: g.model.clone(),
            ..GroupStats::default()
        })
        .collect();
    let mut per_request: Vec<u32> = Vec::new();
    let (mut inputs, mut max_output) = (0u64, 0u64);
    let mut encodings: BTreeMap<&'static str, u64> = BTreeMap::new();
    for f in &plan.facts {
        let Some(g) = f.group() else { continue };
        let gs = &mut groups[g];
        gs.requests += 1;
        gs.bytes += f.len as u64;
        gs.input_tokens += f.tokens as u64;
        gs.max_output_tokens += f.max_output as u64;
        per_request.push(f.tokens);
        inputs += f.inputs as u64;
        max_output += f.max_output as u64;
    }
    for g in &groups {
        let enc = cfg.tokens.encoding(g.model.as_deref());
        *encodings.entry(enc.name()).or_default() += g.requests;
    }
    per_request.sort_unstable();
    let total: u64 = per_request.iter().map(|&t| t as u64).sum();
    let cost = args.prices.any().then(|| cost(&args.prices, &groups));
    let stats = Stats {
        file: name.display().to_string(),
        provider: cfg.profile.provider.name(),
        requests: per_request.len() as u64,
        lines: report.summary.lines,
        blank_lines: plan.blank_lines,
        bytes: bytes.len() as u64,
        longest_line: report.summary.longest_line,
        groups,
        tokens: Tokens {
            encodings,
            input_total: total,
            input_p50: percentile(&per_request, 50.0),
            input_p95: percentile(&per_request, 95.0),
            input_max: per_request.last().map_or(0, |&t| t as u64),
            max_output_total: max_output,
        },
        embedding_inputs: inputs,
        chunks,
        cost_usd: cost,
        errors,
    };
    let exit = if stats.errors.lines > 0 {
        Exit::Invalid
    } else {
        Exit::Ok
    };
    Ok((stats, exit))
}

fn print_human(s: &Stats) -> Result<()> {
    let mut out = anstream::stdout().lock();
    writeln!(out, "{} ({} limits)", s.file, s.provider)?;
    writeln!(
        out,
        "  requests:   {} in {} ({} blank), {}, longest line {}",
        thousands(s.requests),
        count(s.lines, "line"),
        thousands(s.blank_lines),
        count(s.bytes, "byte"),
        count(s.longest_line, "byte")
    )?;
    if s.errors.lines > 0 {
        let codes: Vec<String> = s
            .errors
            .by_code
            .iter()
            .map(|(c, n)| format!("{c}: {}", thousands(*n)))
            .collect();
        writeln!(
            out,
            "  errors:     {} would be rejected ({}); `batchkit validate {}` lists them",
            count(s.errors.lines, "line"),
            codes.join(", "),
            s.file
        )?;
    }
    for g in &s.groups {
        writeln!(
            out,
            "  {:<28} {:<28} {:>19} {:>20} {:>21}",
            g.endpoint,
            g.model.as_deref().unwrap_or("-"),
            count(g.requests, "request"),
            count(g.bytes, "byte"),
            count(g.input_tokens, "token")
        )?;
    }
    let t = &s.tokens;
    let encodings: Vec<String> = t
        .encodings
        .iter()
        .map(|(e, n)| format!("{e} ({})", count(*n, "request")))
        .collect();
    writeln!(
        out,
        "  input tokens (estimated, {}): {} in all; per request p50 {}, p95 {}, max {}",
        encodings.join(", "),
        thousands(t.input_total),
        thousands(t.input_p50),
        thousands(t.input_p95),
        thousands(t.input_max)
    )?;
    writeln!(
        out,
        "  output tokens at most (sum of max_tokens): {}",
        thousands(t.max_output_total)
    )?;
    if s.embedding_inputs > 0 {
        writeln!(out, "  embedding inputs: {}", thousands(s.embedding_inputs))?;
    }
    match s.chunks {
        Some(n) => writeln!(
            out,
            "  split would make {} ({} limits)",
            count(n, "chunk"),
            s.provider
        )?,
        None => writeln!(
            out,
            "  split would refuse: some line breaks a limit alone (see `batchkit split --dry-run`)"
        )?,
    }
    if let Some(c) = &s.cost_usd {
        writeln!(out, "  cost: {}", cost_text(c.input, c.max_output))?;
        if c.own_prices {
            for m in &c.by_model {
                writeln!(
                    out,
                    "    {}: {}",
                    m.model.as_deref().unwrap_or("-"),
                    cost_text(m.input, m.max_output)
                )?;
            }
        }
    }
    Ok(())
}

/// Dollars: cents for real sums, more digits where a small file costs a
/// fraction of one.
pub fn usd(v: f64) -> String {
    if v >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.6}")
    }
}

/// `input $X + output at most $Y = at most $Z`, or what can be said
/// without one of the prices, and which option gives it.
pub fn cost_text(input: Option<f64>, max_output: Option<f64>) -> String {
    match (input, max_output) {
        (Some(i), Some(o)) => format!(
            "input {} + output at most {} = at most {}",
            usd(i),
            usd(o),
            usd(i + o)
        ),
        (Some(i), None) => format!("input {} (no output price: --price-output)", usd(i)),
        (None, Some(o)) => format!("output at most {} (no input price: --price-input)", usd(o)),
        (None, None) => {
            "unknown: no price for these models (--price MODEL=INPUT/OUTPUT, USD per million tokens)"
                .to_owned()
        }
    }
}
