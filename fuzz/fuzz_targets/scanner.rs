//! The request envelope's byte scanner against `serde_json`: wherever the
//! scanner reads a line, serde_json reads the same view from it.
#![no_main]

use batchkit_core::internals::{parse_line_serde, scan_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let Some(view) = scan_bytes(line) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(line) else {
            panic!("the scanner accepted bytes that are not UTF-8: {line:?}");
        };
        match parse_line_serde(text) {
            Ok(reference) => assert_eq!(view, reference, "{text}"),
            Err(e) => panic!("the scanner accepted what serde_json rejects ({e}): {text}"),
        }
    }
});
