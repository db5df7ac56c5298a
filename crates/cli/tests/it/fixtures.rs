//! Every fixture under `testdata/valid` and `testdata/invalid`: the real
//! binary validates the file, and its diagnostics must equal the
//! `.expected` file beside it. A `.args` file beside a fixture holds extra
//! command-line arguments, one per line. A failure lists every fixture
//! that differs, by path.
//!
//! `BATCHKIT_BLESS=1 cargo test -p batchkit fixtures` rewrites the
//! `.expected` files; review the diff before committing it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

#[derive(Deserialize)]
struct Report {
    errors: List,
    warnings: List,
}

#[derive(Deserialize)]
struct List {
    data: Vec<Diag>,
}

#[derive(Deserialize)]
struct Diag {
    code: String,
    message: String,
    param: Option<String>,
    line: Option<u64>,
}

fn companion(path: &Path, ext: &str) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name.strip_suffix(".gz").unwrap_or(name);
    let stem = stem.strip_suffix(".jsonl").unwrap_or(stem);
    path.with_file_name(format!("{stem}.{ext}"))
}

fn check(path: &Path) -> Result<(), String> {
    let mut args: Vec<String> = vec!["validate".into(), "--format".into(), "json".into()];
    if let Ok(extra) = std::fs::read_to_string(companion(path, "args")) {
        args.extend(
            extra
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_batchkit"))
        .args(&args)
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run batchkit: {e}"))?;
    let code = out.status.code().unwrap_or(-1);
    let expected_code = if path.components().any(|c| c.as_os_str() == "invalid") {
        1
    } else {
        0
    };
    let report: Report = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "stdout is not one report ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let mut got = format!("exit: {code}\n");
    let mut all: Vec<(&str, &Diag)> = report.errors.data.iter().map(|d| ("error", d)).collect();
    all.extend(report.warnings.data.iter().map(|d| ("warning", d)));
    all.sort_by_key(|(_, d)| d.line.unwrap_or(u64::MAX));
    for (severity, d) in all {
        let line = d.line.map_or("-".to_owned(), |l| l.to_string());
        let param = d.param.as_deref().unwrap_or("-");
        got.push_str(&format!(
            "{line} {severity} {} {param}: {}\n",
            d.code, d.message
        ));
    }
    let expected_path = companion(path, "expected");
    if std::env::var_os("BATCHKIT_BLESS").is_some() {
        std::fs::write(&expected_path, &got).map_err(|e| e.to_string())?;
    }
    let expected = std::fs::read_to_string(&expected_path).map_err(|e| {
        format!(
            "{}: {e} (run with BATCHKIT_BLESS=1 to create it)",
            expected_path.display()
        )
    })?;
    if got != expected {
        return Err(format!(
            "diagnostics differ for {}\n--- expected\n{expected}--- got\n{got}",
            path.display()
        ));
    }
    if code != expected_code {
        return Err(format!(
            "exit {code}, expected {expected_code} for a fixture in this folder"
        ));
    }
    Ok(())
}

/// The fixtures below `dir`, in every subfolder, sorted.
fn fixtures(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy();
        if path.is_dir() {
            fixtures(&path, out);
        } else if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
            out.push(path);
        }
    }
    out.sort();
}

#[test]
fn every_fixture_gives_its_expected_diagnostics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let mut all = Vec::new();
    fixtures(&root.join("valid"), &mut all);
    fixtures(&root.join("invalid"), &mut all);
    assert!(all.len() > 20, "the fixtures are missing: {all:?}");
    let failures: Vec<String> = all
        .iter()
        .filter_map(|p| check(p).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
