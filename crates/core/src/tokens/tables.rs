//! The BPE encodings, built on first use from the tiktoken files embedded in
//! the binary (2.4 MB gzipped; built, the tables take 46 MB, which is what
//! the binary used to carry) and kept in the user's cache folder, from
//! which later runs load them in milliseconds.
//!
//! A text is counted as tiktoken counts it: split into pieces by the
//! encoding's pre-tokenization pattern, each piece encoded by byte-pair
//! merges (the `bpe` crate's backtracking encoder, which gives tiktoken's
//! tokens). The patterns are tiktoken's, except that the negative
//! look-ahead `\s+(?!\S)`, which `regex-automata` does not have, is written
//! as `\s+\s` whose last character is given back to the next piece.

use std::io::Read;
use std::path::{Path, PathBuf};

use bpe::byte_pair_encoding::{BytePairEncoding, read_tiktoken};
use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};

/// The seed of the `bpe` crate's token hash for these encodings: one under
/// which no two tokens of either table collide.
const HASH_FACTOR: u64 = 17_846_336_922_010_275_747;

/// Bumped when the cached form changes (with the `bpe` crate's version).
const CACHE_FORMAT: &str = "bpe0.2-v1";

/// One encoding: its tiktoken file and its pre-tokenization patterns, the
/// second of which ends in one character of look-ahead.
pub(super) struct Table {
    pub(super) name: &'static str,
    tiktoken_gz: &'static [u8],
    patterns: [&'static str; 3],
}

/// The alternatives tiktoken's patterns share after their first.
const WHITESPACE_AHEAD: &str = r"\s+\s";
const WHITESPACE: &str = r"\s+";

pub(super) const CL100K_BASE: Table = Table {
    name: "cl100k_base",
    tiktoken_gz: include_bytes!("../../data/cl100k_base.tiktoken.gz"),
    patterns: [
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+$",
        WHITESPACE_AHEAD,
        WHITESPACE,
    ],
};

pub(super) const O200K_BASE: Table = Table {
    name: "o200k_base",
    tiktoken_gz: include_bytes!("../../data/o200k_base.tiktoken.gz"),
    patterns: [
        concat!(
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|\p{N}{1,3}",
            r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
            r"|\s*[\r\n]+",
            r"|\s+$",
        ),
        WHITESPACE_AHEAD,
        WHITESPACE,
    ],
};

/// A built encoding.
pub(super) struct Tokenizer {
    bpe: BytePairEncoding,
    pieces: Regex,
}

impl Tokenizer {
    /// The encoding of `table`: from the cache, or built (and cached).
    pub(super) fn load(table: &Table) -> Tokenizer {
        let cache = cache_dir().map(|d| d.join(cache_name(table)));
        let cached = cache.as_deref().and_then(read_cached);
        let bpe = cached.unwrap_or_else(|| {
            let bpe = build(table);
            if let Some(path) = &cache {
                // A cache that cannot be written costs the next run the
                // build again, nothing else.
                let _ = write_cached(path, &bpe);
            }
            bpe
        });
        Tokenizer {
            bpe,
            pieces: pieces_regex(table),
        }
    }

    /// The tokens of `text`.
    pub(super) fn count(&self, text: &str) -> u64 {
        let mut n = 0;
        let mut at = 0;
        while at < text.len() {
            let rest = Input::new(&text[at..]).anchored(Anchored::Yes);
            let Some(m) = self.pieces.find(rest) else {
                break;
            };
            let mut end = at + m.end();
            if m.pattern().as_usize() == 1 {
                // `\s+\s`: the last whitespace character starts the next piece.
                end -= text[at..end].chars().next_back().map_or(0, char::len_utf8);
            }
            if end <= at {
                break;
            }
            n += self.bpe.count(&text.as_bytes()[at..end]) as u64;
            at = end;
        }
        n
    }
}

fn pieces_regex(table: &Table) -> Regex {
    // The patterns are constants, checked by the tests.
    Regex::new_many(&table.patterns).expect("the pre-tokenization patterns compile")
}

/// Build the tables from the embedded tiktoken file.
fn build(table: &Table) -> BytePairEncoding {
    let mut text = String::new();
    // The embedded files are constants, checked by the tests.
    flate2::read::GzDecoder::new(table.tiktoken_gz)
        .read_to_string(&mut text)
        .expect("the embedded tiktoken file is gzipped UTF-8");
    let tokens = read_tiktoken(&text).expect("the embedded tiktoken file reads");
    BytePairEncoding::from_dictionary(tokens, Some(HASH_FACTOR))
}

/// Where built tables are kept: `$BATCHKIT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/batchkit`, else `~/.cache/batchkit`.
fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("BATCHKIT_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("batchkit")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/batchkit")))
}

/// The cache file's name: the encoding, the cached form, and a digest of
/// the embedded file, so that a changed table never reads a stale cache.
fn cache_name(table: &Table) -> String {
    let digest = xxhash_rust::xxh3::xxh3_64(table.tiktoken_gz);
    format!("{}-{CACHE_FORMAT}-{digest:016x}.bpe", table.name)
}

/// The cached tables, if the file is there and whole: its last 8 bytes are
/// the xxh3 of the rest.
fn read_cached(path: &Path) -> Option<BytePairEncoding> {
    let bytes = std::fs::read(path).ok()?;
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    let sum = u64::from_le_bytes(sum.try_into().ok()?);
    if xxhash_rust::xxh3::xxh3_64(body) != sum {
        return None;
    }
    rmp_serde::from_slice(body).ok()
}

/// Keep `bpe` at `path`, atomically: a reader sees the whole file or none.
fn write_cached(path: &Path, bpe: &BytePairEncoding) -> std::io::Result<()> {
    let mut body = rmp_serde::to_vec(bpe).map_err(std::io::Error::other)?;
    let sum = xxhash_rust::xxh3::xxh3_64(&body);
    body.extend_from_slice(&sum.to_le_bytes());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &body)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn shipped_tables_are_tiktokens() {
        for (table, sha256, tokens) in [
            (
                &CL100K_BASE,
                "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
                100_256,
            ),
            (
                &O200K_BASE,
                "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
                199_998,
            ),
        ] {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(table.tiktoken_gz)
                .read_to_end(&mut text)
                .unwrap();
            let digest: String = Sha256::digest(&text)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(digest, sha256, "{}", table.name);
            assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), tokens);
            pieces_regex(table);
        }
    }

    /// A cache file that is cut short, or changed, is not read: the tables
    /// are built again and the file rewritten whole.
    #[test]
    fn a_damaged_cache_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.bpe");
        let small =
            BytePairEncoding::from_dictionary([b"a".to_vec(), b"b".to_vec(), b"ab".to_vec()], None);
        write_cached(&path, &small).unwrap();
        let whole = std::fs::read(&path).unwrap();
        assert!(read_cached(&path).is_some());
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        assert!(read_cached(&path).is_none(), "cut short");
        let mut changed = whole.clone();
        changed[4] ^= 1;
        std::fs::write(&path, &changed).unwrap();
        assert!(read_cached(&path).is_none(), "changed");
        assert!(read_cached(&dir.path().join("absent")).is_none());
    }
}
