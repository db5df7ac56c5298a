//! `validate`: the report of an input does not depend on how its bytes
//! arrive: held whole (as a mapped file), streamed in blocks as stdin is,
//! or streamed in tiny blocks and chunks. The first byte picks the sizes.
#![no_main]

use std::io::Cursor;

use batchkit_core::{Config, Input, Provider, validate, validate_bytes};
use libfuzzer_sys::fuzz_target;

fn config(block: usize, chunk: Option<usize>) -> Config {
    let mut cfg = Config::new(Provider::OpenAi);
    cfg.limits.max_requests = Some(50);
    cfg.limits.max_embedding_inputs = Some(20);
    cfg.limits.max_bytes = Some(4_000);
    cfg.keep = Some(40);
    cfg.block_size = block;
    cfg.chunk_size = chunk;
    cfg
}

/// Streamed as stdin is; only gzip data (damaged, say) can fail to read.
fn streamed(
    bytes: &[u8],
    cfg: &Config,
) -> Result<batchkit_core::Report, batchkit_core::InputError> {
    let input = Input::from_reader("-", Box::new(Cursor::new(bytes.to_vec())))?;
    validate(input, cfg, &|_| {})
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let block = 1 + usize::from(pick % 64);
    let chunk = 1 + usize::from(pick / 64) * 40;
    let whole = validate_bytes(bytes, &config(1 << 20, None));
    // Gzip input streams as well; the rest must agree exactly.
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let _ = streamed(bytes, &config(block, Some(chunk)));
        return;
    }
    let read = |cfg| streamed(bytes, &cfg).expect("plain bytes in memory are read whole");
    assert_eq!(whole, read(config(8 << 20, None)), "stdin");
    assert_eq!(whole, read(config(block, Some(chunk))), "blocks of {block}");
});
