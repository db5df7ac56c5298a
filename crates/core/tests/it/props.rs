//! Properties of the validator over generated inputs: it never panics, and
//! its report does not depend on the thread count, the chunk size, or on
//! whether the input is mapped or streamed in blocks; and the lines it finds
//! while reading them are the lines `Lines` finds.

use std::io::Cursor;

use batchkit_core::lines::{Line, Lines, is_blank};
use batchkit_core::{Config, Input, Provider, Report, validate, validate_bytes};
use proptest::prelude::*;

fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
    let ids = prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("a\\u0062".to_owned()),
        "[a-z]{1,3}",
    ];
    let good = (ids, prop_oneof![Just("gpt-4o-mini"), Just("gpt-4o")], any::<bool>()).prop_map(
        |(id, model, stream)| {
            format!(
                r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[{{"role":"user","content":"é \ud83d\ude00"}}],"stream":{stream}}}}}"#
            )
            .into_bytes()
        },
    );
    let emb = (1usize..4).prop_map(|n| {
        let inputs: Vec<String> = (0..n).map(|i| format!("\"t{i}\"")).collect();
        format!(
            r#"{{"custom_id":"e{n}","method":"POST","url":"/v1/embeddings","body":{{"model":"text-embedding-3-small","input":[{}]}}}}"#,
            inputs.join(",")
        )
        .into_bytes()
    });
    // Lines before the first one with a url or a model must be judged the
    // same whether or not that line is in the same block.
    let partial = prop_oneof![
        Just(br#"{"custom_id":"n","method":"POST","body":{"model":"gpt-4o"}}"#.to_vec()),
        Just(br#"{"custom_id":"m","method":"POST","url":"/v1/embeddings","body":{"input":"x"}}"#.to_vec()),
        Just(br#"{"custom_id":"k","method":"POST","url":"/v1/completions","body":{"model":"gpt-4o"}}"#.to_vec()),
    ];
    prop_oneof![
        4 => good,
        1 => emb,
        1 => partial,
        1 => Just(Vec::new()),
        1 => Just(b"\xEF\xBB\xBF{}".to_vec()),
        1 => Just(b"{\"custom_id\":\"\\ud800\"}".to_vec()),
        1 => Just(b"[1,2]".to_vec()),
        2 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn file_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(line_strategy(), 0..40),
        prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..])],
        any::<bool>(),
    )
        .prop_map(|(lines, eol, final_eol)| {
            let mut out = lines.join(eol);
            if final_eol && !out.is_empty() {
                out.extend_from_slice(eol);
            }
            out
        })
}

fn config(chunk: Option<usize>, block: usize) -> Config {
    let mut cfg = Config::new(Provider::OpenAi);
    cfg.limits.max_requests = Some(7);
    cfg.limits.max_embedding_inputs = Some(5);
    cfg.limits.max_bytes = Some(2_000);
    cfg.keep = Some(25);
    cfg.chunk_size = chunk;
    cfg.block_size = block;
    cfg
}

fn streamed(bytes: &[u8], cfg: &Config) -> Report {
    let input = Input::from_reader("-", Box::new(Cursor::new(bytes.to_vec()))).expect("memory");
    validate(input, cfg, &|_| {}).expect("memory reads cannot fail")
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn report_is_independent_of_how_the_input_is_cut(
        bytes in file_strategy(),
        chunk in 1usize..300,
        block in 1usize..500,
    ) {
        let reference = in_pool(1, || validate_bytes(&bytes, &config(None, 1 << 20)));
        let chunked = in_pool(3, || validate_bytes(&bytes, &config(Some(chunk), 1 << 20)));
        prop_assert_eq!(&reference, &chunked);
        let stream = in_pool(2, || streamed(&bytes, &config(Some(chunk), block)));
        prop_assert_eq!(&reference, &stream);
        // Every problem is counted, and the kept ones are a prefix by line.
        let kept = reference.diagnostics.len() as u64;
        prop_assert!(kept <= 25);
        prop_assert!(kept == 25 || kept == reference.errors() + reference.warnings());
        prop_assert_eq!(reference.summary.bytes, bytes.len() as u64);
    }

    /// The scanner finds line ends as it reads; the lines it finds are the
    /// lines `Lines` finds, whatever ends them (`\n`, `\r\n`, `\r\r\n`,
    /// the end of the file) and whatever surrounds the object.
    #[test]
    fn lines_are_found_as_lines_finds_them(
        lines in proptest::collection::vec(
            (line_strategy(), prop_oneof![Just(""), Just(" "), Just("\t"), Just("\r"), Just(" \r")]),
            0..30,
        ),
        eol in prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..])],
        final_eol in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        for (i, (line, pad)) in lines.iter().enumerate() {
            if i > 0 {
                bytes.extend_from_slice(eol);
            }
            bytes.extend_from_slice(pad.as_bytes());
            bytes.extend_from_slice(line);
            bytes.extend_from_slice(pad.as_bytes());
        }
        if final_eol && !bytes.is_empty() {
            bytes.extend_from_slice(eol);
        }
        let mut cfg = config(None, 1 << 20);
        cfg.keep = None;
        let report = validate_bytes(&bytes, &cfg);
        let found: Vec<Line<'_>> = Lines::new(&bytes).collect();
        prop_assert_eq!(report.summary.lines, found.len() as u64);
        let blank = found.iter().filter(|l| is_blank(l.bytes)).count() as u64;
        prop_assert_eq!(report.summary.blank_lines, blank);
        let longest = found.iter().map(|l| l.bytes.len() as u64).max().unwrap_or(0);
        prop_assert_eq!(report.summary.longest_line, longest);
        // Every diagnostic of a line points into that line.
        for d in &report.diagnostics {
            let (Some(line), Some(offset)) = (d.line, d.offset) else {
                continue;
            };
            let l = &found[line as usize - 1];
            let start = l.offset as u64;
            prop_assert!(
                (start..=start + l.bytes.len() as u64).contains(&offset),
                "line {} at {}..{} but the diagnostic is at {}", line, start, start + l.bytes.len() as u64, offset
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let report = validate_bytes(&bytes, &config(Some(16), 64));
        prop_assert!(report.summary.lines >= report.summary.requests);
        let stream = streamed(&bytes, &config(Some(16), 64));
        prop_assert_eq!(report, stream);
    }
}

/// The file's endpoint and model come from the first lines that have them,
/// wherever the blocks are cut: a line before them is judged without them.
/// They were once looked for in the current block only, so a file whose
/// first url came after the first 8 MiB got an extra `invalid_request` on
/// line 1 when mapped (64 MiB blocks) and not from stdin (8 MiB).
#[test]
fn the_first_url_and_model_count_from_their_line_on_whatever_the_blocks() {
    let mut text = br#"{"custom_id":"a","method":"POST","body":{"temperature":1}}"#.to_vec();
    text.extend(std::iter::repeat_n(b'\n', 9 << 20));
    text.extend_from_slice(br#"{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}}"#);
    text.extend_from_slice(b"\n");
    let cfg = |block: usize| {
        let mut cfg = Config::new(Provider::OpenAi);
        // Line 1's diagnostics, then the first blank line's.
        cfg.keep = Some(3);
        cfg.block_size = block;
        cfg
    };
    let mapped = validate_bytes(&text, &cfg(8 << 20));
    assert_eq!(mapped, streamed(&text, &cfg(8 << 20)));
    assert_eq!(mapped, streamed(&text, &cfg(4096)));
    let codes: Vec<_> = mapped
        .diagnostics
        .iter()
        .map(|d| (d.code.as_str(), d.line))
        .collect();
    assert_eq!(
        codes,
        [
            ("missing_required_parameter", Some(1)),
            ("invalid_request", Some(1)),
            ("blank_line", Some(2))
        ],
        "{:#?}",
        mapped.diagnostics
    );
}

/// Found by the `validate` fuzz target: the diagnostic of the line that
/// sets an unsupported endpoint was kept when it was found, at the start
/// of its block, ahead of the earlier lines' diagnostics; so which ones
/// were kept (of `--max-errors`) depended on the block size.
#[test]
fn the_kept_diagnostics_do_not_depend_on_the_block_size() {
    let mut text = b"[1\n".to_vec();
    text.extend(std::iter::repeat_n(b'\n', 43));
    text.extend_from_slice(br#"{"custom_id":"x","method":"POST","url":"/v0/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}}"#);
    text.extend_from_slice(b"\n\n");
    let cfg = |block: usize| {
        let mut cfg = Config::new(Provider::OpenAi);
        cfg.keep = Some(40);
        cfg.block_size = block;
        cfg
    };
    let whole = validate_bytes(&text, &cfg(1 << 20));
    for block in [1, 7, 64, 1 << 20] {
        assert_eq!(whole, streamed(&text, &cfg(block)), "blocks of {block}");
    }
    // The first 40 by line: line 1's error and 39 blank lines.
    let lines: Vec<u64> = whole.diagnostics.iter().filter_map(|d| d.line).collect();
    assert_eq!(lines, (1..=40).collect::<Vec<u64>>());
    assert_eq!(
        whole.errors(),
        2,
        "the endpoint's error is counted all the same"
    );
}

/// Found by the `validate` fuzz target: a byte order mark is allowed only
/// at the file's start, but the file's endpoint was looked for with a mark
/// stripped from the first line of every block, so a line `\u{feff}{...}`
/// that began a block set the endpoint only when streamed.
#[test]
fn a_byte_order_mark_inside_the_file_sets_no_endpoint_in_any_block() {
    let mut text = b"\n\n".to_vec();
    text.extend_from_slice("\u{feff}".as_bytes());
    text.extend_from_slice(br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}"#);
    text.push(b'\n');
    let cfg = |block: usize| {
        let mut cfg = Config::new(Provider::OpenAi);
        cfg.block_size = block;
        cfg
    };
    let whole = validate_bytes(&text, &cfg(1 << 20));
    assert_eq!(whole.summary.endpoint, None);
    for block in [1, 2, 3, 1 << 20] {
        assert_eq!(whole, streamed(&text, &cfg(block)), "blocks of {block}");
    }
}

#[test]
fn duplicates_across_chunk_and_block_boundaries() {
    let line = |id: usize| {
        format!(
            r#"{{"custom_id":"id-{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"m","messages":[{{"role":"user","content":"x"}}]}}}}"#
        )
    };
    let mut text = String::new();
    for i in 0..5_000 {
        text.push_str(&line(i % 4_000));
        text.push('\n');
    }
    let mut cfg = config(Some(4096), 10_000);
    cfg.limits = Default::default();
    cfg.keep = None;
    let report = validate_bytes(text.as_bytes(), &cfg);
    let dups: Vec<(u64, &str)> = report
        .diagnostics
        .iter()
        .map(|d| (d.line.unwrap_or(0), d.code.as_str()))
        .collect();
    assert_eq!(dups.len(), 1_000);
    assert_eq!(dups[0], (4_001, "duplicate_custom_id"));
    assert!(report.diagnostics[0].message.contains("(line 1)"));
    // Every repeat is named, across chunks and blocks alike.
    for d in &report.diagnostics {
        let line = d.line.unwrap_or(0) as usize;
        let id = format!("id-{}", (line - 1) % 4_000);
        assert_eq!(d.custom_id.as_deref(), Some(id.as_str()), "line {line}");
    }
    assert_eq!(report, streamed(text.as_bytes(), &cfg));
}

#[test]
fn a_misspelt_key_is_pointed_at() {
    let text = concat!(
        r#"{"Custom-ID":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}"#,
        "\n",
        r#"{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"m","mesages":[]}}"#,
        "\n",
        r#"{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{"modle":"m","messages":[{"role":"user","content":"x"}]}}"#,
        "\n",
        r#"{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","prompt":"x"}}"#,
        "\n",
    );
    let mut cfg = Config::new(Provider::OpenAi);
    cfg.single_model = false;
    let report = validate_bytes(text.as_bytes(), &cfg);
    let hints: Vec<(u64, Option<&str>, u64)> = report
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.line.unwrap_or(0),
                d.hint.as_deref(),
                d.offset.unwrap_or(0),
            )
        })
        .collect();
    let at = |key: &str| text.find(key).expect("key") as u64;
    assert_eq!(
        hints,
        vec![
            (
                1,
                Some(r#"did you mean "custom_id"? the request has "Custom-ID""#),
                1
            ),
            (
                2,
                Some(r#"did you mean "messages"? the request has "mesages""#),
                at("\"mesages\"")
            ),
            (
                3,
                Some(r#"did you mean "model"? the request has "modle""#),
                at("\"modle\"")
            ),
            // `prompt` is no near miss of `messages`.
            (4, None, at(r#"{"custom_id":"d""#)),
        ]
    );
}
