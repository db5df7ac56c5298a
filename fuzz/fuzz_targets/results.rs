//! Result lines: where merge's fast path calls a line a plain success,
//! `classify` (the full reader) agrees on the id, the status code and the
//! body; and `classify` never panics on any line.
#![no_main]

use batchkit_core::results::{Status, classify, scan_success};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let full = std::str::from_utf8(line).ok().map(classify);
        let Some((id, code, body)) = scan_success(line) else {
            continue;
        };
        let Some(Ok(outcome)) = full else {
            panic!(
                "fast path read a line classify rejects: {:?}",
                String::from_utf8_lossy(line)
            );
        };
        assert_eq!(outcome.status, Status::Succeeded);
        assert_eq!(outcome.custom_id, id);
        assert_eq!(outcome.status_code, code);
        assert_eq!(outcome.response, line.get(body));
    }
});
