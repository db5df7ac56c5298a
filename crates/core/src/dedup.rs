//! Finding repeated `custom_id`s in bounded memory.
//!
//! Each id becomes a 128-bit xxh3 fingerprint of its *decoded* value plus its
//! line number: 24 bytes per request, whatever the id's length. Sorting the
//! fingerprints brings repeats together. A false match needs two different
//! ids with the same 128-bit hash: for 10^9 ids its probability is about
//! 10^-21, so the check is exact in practice, and it needs no second look at
//! the input, which a streamed input could not give.
//!
//! To *name* a repeated id without keeping every id's bytes, a small filter
//! ([`SeenFilter`], 2 to 3 bytes per id) is asked
//! about every id in input order: an id it has not seen is surely new; one it
//! may have seen is kept with its bytes. Every repeat is among those kept,
//! with about one new id in 200 (a false alarm).

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

/// A filter of the ids seen so far: a blocked Bloom filter with three bits in
/// one 64-bit word per id, between 16 and 24 bits per id (2-3 bytes), so one
/// cache line is touched per id and about one new id in 200 is a false
/// alarm. It grows by half (rebuilt from the fingerprints) as ids arrive.
#[derive(Debug)]
pub struct SeenFilter {
    words: Vec<u64>,
    /// Ids inserted.
    len: usize,
}

impl Default for SeenFilter {
    fn default() -> Self {
        SeenFilter {
            words: vec![0; 1 << 12],
            len: 0,
        }
    }
}

impl SeenFilter {
    const BITS_PER_ID: usize = 16;

    fn slot(&self, e: &IdEntry) -> (usize, u64) {
        // Any number of words: the high bits of `hi * len` pick one.
        let word = ((u128::from(e.hi) * self.words.len() as u128) >> 64) as usize;
        let bits =
            (1u64 << (e.lo & 63)) | (1u64 << ((e.lo >> 6) & 63)) | (1u64 << ((e.lo >> 12) & 63));
        (word, bits)
    }

    /// Record `e`; true if it may have been recorded before (always true if
    /// it was).
    pub fn insert(&mut self, e: &IdEntry) -> bool {
        let (word, bits) = self.slot(e);
        let w = &mut self.words[word];
        let seen = *w & bits == bits;
        *w |= bits;
        self.len += 1;
        seen
    }

    /// Make room for `more` ids beyond those inserted, rebuilding from
    /// `all`, every id inserted so far, when the filter would get too full.
    pub fn reserve(&mut self, more: usize, all: &[IdEntry]) {
        let want = (self.len + more) * Self::BITS_PER_ID;
        if want <= self.words.len() * 64 {
            return;
        }
        // 24 bits per id now, 16 when it is next rebuilt.
        let words = (want * 3 / 2).div_ceil(64);
        // Free the old words first: the peak stays at the new size.
        self.words = Vec::new();
        self.words = vec![0; words];
        self.len = 0;
        for e in all {
            self.insert(e);
        }
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
    fn the_filter_flags_every_repeat_and_few_others() {
        let mut filter = SeenFilter::default();
        let mut all = Vec::new();
        let mut alarms = 0;
        for i in 0..200_000u64 {
            let e = IdEntry::new(&format!("req-{}", i % 150_000), i + 1);
            filter.reserve(1, &all);
            let flagged = filter.insert(&e);
            if i >= 150_000 {
                assert!(flagged, "repeat on line {} not flagged", i + 1);
            } else if flagged {
                alarms += 1;
            }
            all.push(e);
        }
        assert!(alarms < 150_000 / 150, "{alarms} false alarms");
        assert!(
            filter.words.len() * 64 <= 200_000 * 24,
            "{} words",
            filter.words.len()
        );
    }

    #[test]
    fn no_repeats() {
        let (n, found) = find_repeats(ids(&["x", "y", "z"]), None);
        assert_eq!((n, found.len()), (0, 0));
    }
}
