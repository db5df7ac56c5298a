//! Finding repeated `custom_id`s in bounded memory.
//!
//! Each id becomes a 128-bit xxh3 fingerprint of its *decoded* value plus its
//! line number: 24 bytes per request, whatever the id's length. Sorting the
//! fingerprints brings repeats together. A false match needs two different
//! ids with the same 128-bit hash: for 10^9 ids its probability is about
//! 10^-21, so the check is exact in practice, and it needs no second look at
//! the input, which a streamed input could not give.

use rayon::slice::ParallelSliceMut;

/// One `custom_id` occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdEntry {
    hi: u64,
    lo: u64,
    line: u64,
}

impl IdEntry {
    /// Fingerprint `custom_id` seen on `line`.
    pub fn new(custom_id: &str, line: u64) -> Self {
        let h = xxhash_rust::xxh3::xxh3_128(custom_id.as_bytes());
        IdEntry {
            hi: (h >> 64) as u64,
            lo: h as u64,
            line,
        }
    }

    /// The same id, seen `base` lines further on.
    pub fn shifted(self, base: u64) -> Self {
        IdEntry {
            line: self.line + base,
            ..self
        }
    }

    /// The line the id was seen on.
    pub fn line(&self) -> u64 {
        self.line
    }
}

/// A line whose `custom_id` an earlier line already used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Repeat {
    /// The repeating line.
    pub line: u64,
    /// The first line with the same id.
    pub first_line: u64,
}

/// Find every repeat among `ids`, consuming them. Returns how many repeats
/// there are and the first `keep` of them by line (all of them if `None`),
/// sorted by line. The repeats are written over the sorted ids, so no memory
/// beyond the ids themselves is needed.
pub fn find_repeats(mut ids: Vec<IdEntry>, keep: Option<usize>) -> (u64, Vec<Repeat>) {
    ids.par_sort_unstable();
    let mut repeats = 0usize;
    let Some(mut first) = ids.first().copied() else {
        return (0, Vec::new());
    };
    for i in 1..ids.len() {
        let cur = ids[i];
        if (first.hi, first.lo) == (cur.hi, cur.lo) {
            // Reuse the slot: `repeats < i`, so no unread entry is overwritten
            // (the group's first entry is held in `first`).
            ids[repeats] = IdEntry {
                hi: cur.line,
                lo: first.line,
                line: 0,
            };
            repeats += 1;
        } else {
            first = cur;
        }
    }
    ids.truncate(repeats);
    let mut found: Vec<Repeat> = ids
        .into_iter()
        .map(|e| Repeat {
            line: e.hi,
            first_line: e.lo,
        })
        .collect();
    found.par_sort_unstable();
    if let Some(keep) = keep {
        found.truncate(keep);
    }
    (repeats as u64, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<IdEntry> {
        list.iter()
            .enumerate()
            .map(|(i, s)| IdEntry::new(s, i as u64 + 1))
            .collect()
    }

    #[test]
    fn finds_every_repeat_with_its_first_line() {
        let (n, found) = find_repeats(ids(&["a", "b", "a", "c", "b", "a"]), None);
        assert_eq!(n, 3);
        assert_eq!(
            found,
            vec![
                Repeat {
                    line: 3,
                    first_line: 1
                },
                Repeat {
                    line: 5,
                    first_line: 2
                },
                Repeat {
                    line: 6,
                    first_line: 1
                },
            ]
        );
    }

    #[test]
    fn keeps_only_the_first_but_counts_all() {
        let all: Vec<String> = (0..100).map(|i| format!("id{}", i % 10)).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (n, found) = find_repeats(ids(&refs), Some(5));
        assert_eq!(n, 90);
        assert_eq!(found.len(), 5);
        assert_eq!(
            found[0],
            Repeat {
                line: 11,
                first_line: 1
            }
        );
    }

    #[test]
    fn no_repeats() {
        let (n, found) = find_repeats(ids(&["x", "y", "z"]), None);
        assert_eq!((n, found.len()), (0, 0));
    }
}
