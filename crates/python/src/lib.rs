//! `batchkit_jsonl._native`: the Rust half of the Python package. Each
//! function runs the same code as the `batchkit` command, with the GIL
//! released while Rust works; the Python half (`batchkit_jsonl`) turns the
//! JSON it returns into typed objects.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use batchkit_core::merge::{Merge, MergeConfig, MergedLine};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(
    _native,
    BatchkitError,
    PyException,
    "A command could not do its job: bad arguments, a file that cannot be read or written."
);

/// Run `batchkit` with `argv` (the program's name first) in this process:
/// the exit status.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| batchkit::main(argv))
}

/// A command's exit status and its JSON report (text), or its failure.
type Called = PyResult<(u8, Option<String>)>;

fn called(r: Result<batchkit::api::Done, batchkit::api::Error>) -> Called {
    match r {
        Ok((exit, json)) => Ok((exit, json.map(|v| v.to_string()))),
        Err(e) => Err(BatchkitError::new_err(e.0)),
    }
}

/// `batchkit validate ARGS` of a file, or of `data` (named by the file
/// argument).
#[pyfunction]
#[pyo3(signature = (args, data=None))]
fn validate(py: Python<'_>, args: Vec<String>, data: Option<&[u8]>) -> Called {
    called(py.detach(|| batchkit::api::validate(&args, data)))
}

/// `batchkit split ARGS`.
#[pyfunction]
fn split(py: Python<'_>, args: Vec<String>) -> Called {
    called(py.detach(|| batchkit::api::split(&args)))
}

/// `batchkit stats ARGS`.
#[pyfunction]
fn stats(py: Python<'_>, args: Vec<String>) -> Called {
    called(py.detach(|| batchkit::api::stats(&args)))
}

/// `batchkit merge ARGS`.
#[pyfunction]
fn merge_to(py: Python<'_>, args: Vec<String>) -> Called {
    called(py.detach(|| batchkit::api::merge(&args)))
}

/// `batchkit retry ARGS`.
#[pyfunction]
fn retry(py: Python<'_>, args: Vec<String>) -> Called {
    called(py.detach(|| batchkit::api::retry(&args)))
}

/// Bytes of merged lines handed over at once (whole lines, at least this
/// many unless the merge is ending), and how many such blocks may wait:
/// the memory a merge holds whatever the files' sizes.
const BLOCK: usize = 256 << 10;
const WAITING: usize = 8;

/// The merged lines of requests and results, in input order, in blocks of
/// whole lines (`bytes`), made on a thread of their own while Python reads
/// them. Dropped before the end, it stops the merge.
#[pyclass]
struct MergeLines {
    blocks: Mutex<Receiver<Result<Vec<u8>, String>>>,
}

#[pymethods]
impl MergeLines {
    #[new]
    #[pyo3(signature = (requests, results, with_request=false, text=false))]
    fn new(
        requests: Vec<PathBuf>,
        results: Vec<PathBuf>,
        with_request: bool,
        text: bool,
    ) -> MergeLines {
        let (tx, rx) = sync_channel(WAITING);
        std::thread::spawn(move || {
            let failed = tx.clone();
            if let Err(e) = merge_lines(&requests, &results, with_request, text, tx) {
                let _ = failed.send(Err(e));
            }
        });
        MergeLines {
            blocks: Mutex::new(rx),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let next = py.detach(|| match self.blocks.lock() {
            Ok(rx) => rx.recv().ok(),
            Err(_) => None,
        });
        match next {
            Some(Ok(block)) => Ok(Some(PyBytes::new(py, &block).unbind())),
            Some(Err(e)) => Err(BatchkitError::new_err(e)),
            None => Ok(None),
        }
    }
}

/// Merge into blocks sent on `tx`.
fn merge_lines(
    requests: &[PathBuf],
    results: &[PathBuf],
    with_request: bool,
    text: bool,
    tx: SyncSender<Result<Vec<u8>, String>>,
) -> Result<(), String> {
    let merge =
        Merge::new(requests, results, &MergeConfig::default()).map_err(|e| e.to_string())?;
    let line = MergedLine {
        with_request,
        text,
        input_name: merge.input_files() > 1,
    };
    let mut out = Blocks {
        tx,
        buf: Vec::with_capacity(BLOCK * 2),
    };
    match merge.write(
        &mut out,
        with_request,
        &|record, buf| {
            line.render(record, buf);
            true
        },
        &|_| {},
    ) {
        Ok(_) => out.flush().map_err(|e| e.to_string()),
        // The reader is gone: nothing to say to anyone.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// A writer that sends whole lines in blocks.
struct Blocks {
    tx: SyncSender<Result<Vec<u8>, String>>,
    buf: Vec<u8>,
}

impl Blocks {
    fn send(&mut self, upto: usize) -> std::io::Result<()> {
        let rest = self.buf.split_off(upto);
        let block = std::mem::replace(&mut self.buf, rest);
        self.tx
            .send(Ok(block))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for Blocks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= BLOCK {
            if let Some(end) = self.buf.iter().rposition(|&b| b == b'\n') {
                self.send(end + 1)?;
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Called at the end: what is left is the last lines.
        if !self.buf.is_empty() {
            self.send(self.buf.len())?;
        }
        Ok(())
    }
}

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BatchkitError", m.py().get_type::<BatchkitError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(split, m)?)?;
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    m.add_function(wrap_pyfunction!(merge_to, m)?)?;
    m.add_function(wrap_pyfunction!(retry, m)?)?;
    m.add_class::<MergeLines>()?;
    Ok(())
}
