//! `merge`: one record per request line, with and without the request
//! bodies, or a refusal that names the problem; never a line left out.
//! The input is a request file and a result file, cut at the first NUL.
#![no_main]

use batchkit_core::lines::{Lines, is_blank};
use batchkit_core::merge::{Merge, MergeConfig, MergeError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (requests, results) = (&data[..cut], data.get(cut + 1..).unwrap_or_default());
    let dir = tempfile::tempdir_in(scratch()).expect("a scratch folder");
    let (req, res) = (
        dir.path().join("requests.jsonl"),
        dir.path().join("results.jsonl"),
    );
    std::fs::write(&req, requests).expect("write");
    std::fs::write(&res, results).expect("write");
    let cfg = MergeConfig {
        prefer_last: false,
        keep: 100,
    };
    let merge = match Merge::new(&[req], &[res], &cfg) {
        Ok(m) => m,
        // Lines without a readable, unique id: refused, with the problems.
        Err(MergeError::InvalidInput { problems, count }) => {
            assert!(count > 0 && !problems.is_empty());
            return;
        }
        // A request file given as results (or results as requests) is
        // refused by its first line's shape, with a message that says so.
        Err(e @ MergeError::Misplaced { .. }) => {
            assert!(e.to_string().contains("was given as"), "{e}");
            return;
        }
        Err(e) => panic!("merge failed: {e}"),
    };
    let lines = Lines::new(requests).filter(|l| !is_blank(l.bytes)).count() as u64;
    for with_request in [false, true] {
        let mut out = Vec::new();
        let tally = merge
            .write(
                &mut out,
                with_request,
                &|_, buf| {
                    buf.extend_from_slice(b"r\n");
                    true
                },
                &|_| {},
            )
            .expect("writing to memory");
        assert_eq!(tally.total(), lines, "--with-request {with_request}");
        assert_eq!(tally.written, lines);
        assert_eq!(out.len() as u64, 2 * lines);
    }
});

/// Memory-backed where the system has it: the target writes two files a run.
fn scratch() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}
