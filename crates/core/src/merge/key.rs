//! Keys: a 128-bit fingerprint of a `custom_id` and where its line is, and
//! the packing of a result's location and status into one `u64`.

use std::ops::Range;

use crate::results::Status;

pub(super) const NONE: u64 = u64::MAX;
/// Status bits of a result whose line is broken but whose id was salvaged.
pub(super) const BROKEN: u64 = 5;
const OFFSET_BITS: u32 = 45;

/// The key of a line: inputs carry nothing more (24 bytes), results what
/// [`pack_success`] kept of a plain success, or 0 (32 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key<P = ()> {
    pub(super) hi: u64,
    pub(super) lo: u64,
    /// Inputs: file << 48 | line index. Results: file << 48 | offset << 3 | status.
    pub(super) at: u64,
    pub(super) more: P,
}

/// The key of a result line.
pub(super) type ResultKey = Key<u64>;

impl<P> Key<P> {
    pub(super) fn with(custom_id: &str, at: u64, more: P) -> Key<P> {
        let h = xxhash_rust::xxh3::xxh3_128(custom_id.as_bytes());
        Key {
            hi: (h >> 64) as u64,
            lo: h as u64,
            at,
            more,
        }
    }

    pub(super) fn same_id<Q>(&self, other: &Key<Q>) -> bool {
        self.id() == other.id()
    }

    pub(super) fn id(&self) -> (u64, u64) {
        (self.hi, self.lo)
    }
}

impl Key {
    pub(super) fn new(custom_id: &str, at: u64) -> Key {
        Key::with(custom_id, at, ())
    }
}

pub(super) fn result_ref(file: usize, offset: usize, status: u64) -> u64 {
    ((file as u64) << 48) | ((offset as u64) << 3) | status
}

pub(super) fn ref_file(r: u64) -> usize {
    (r >> 48) as usize
}

pub(super) fn ref_offset(r: u64) -> usize {
    ((r >> 3) & ((1 << OFFSET_BITS) - 1)) as usize
}

pub(super) fn ref_status(r: u64) -> Status {
    match r & 7 {
        BROKEN => Status::Failed,
        b => Status::from_bits(b),
    }
}

/// A request and the result chosen for it: the request's place (as an
/// input [`Key::at`]), the result's location and status (as a result's
/// [`Key::at`], or [`NONE`]) and, for a plain success, what
/// [`pack_success`] kept. The same size as an input key, so the join
/// turns the sorted input keys into these in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Chosen {
    pub(super) request: u64,
    pub(super) at: u64,
    pub(super) success: u64,
}

impl Chosen {
    /// No result for any request.
    pub(super) const NONE: Chosen = Chosen {
        request: NONE,
        at: NONE,
        success: 0,
    };
}

const START_BITS: u32 = 24;
const LEN_BITS: u32 = 32;

/// A plain success's status code and where its body is in its line, in
/// one `u64`, so that rendering copies the body without reading the line
/// again: the code (0 for none, else the code less 199: 1 to 100) in the
/// top 8 bits, the body's start in the line in 24 bits, its length in 32.
/// 0, which no body has (it is at least one byte), when it does not fit:
/// the line is then read again.
pub(super) fn pack_success(status_code: Option<i64>, body: Range<usize>) -> u64 {
    let code = match status_code {
        None => 0,
        Some(c @ 200..=299) => (c - 199) as u64,
        Some(_) => return 0,
    };
    let (start, len) = (body.start as u64, body.len() as u64);
    if len == 0 || start >= 1 << START_BITS || len >= 1 << LEN_BITS {
        return 0;
    }
    (code << (START_BITS + LEN_BITS)) | (start << LEN_BITS) | len
}

/// The status code and body range (in the line) [`pack_success`] packed.
pub(super) fn unpack_success(packed: u64) -> Option<(Option<i64>, Range<usize>)> {
    let len = (packed & ((1 << LEN_BITS) - 1)) as usize;
    if len == 0 {
        return None;
    }
    let start = ((packed >> LEN_BITS) & ((1 << START_BITS) - 1)) as usize;
    let code = (packed >> (START_BITS + LEN_BITS)) as i64;
    Some(((code > 0).then_some(code + 199), start..start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_unpacks_as_packed_or_not_at_all() {
        for code in [None, Some(200), Some(201), Some(299)] {
            for body in [0..1, 17..4000, 5..5 + (1 << 20), ((1 << 24) - 1)..(1 << 24)] {
                let packed = pack_success(code, body.clone());
                assert_eq!(unpack_success(packed), Some((code, body)));
            }
        }
        for (code, body) in [
            (Some(300), 1..2),
            (Some(199), 1..2),
            (None, 3..3),
            (None, (1 << 24)..(1 << 24) + 1),
            (Some(200), 0..(1 << 32)),
        ] {
            assert_eq!(pack_success(code, body), 0);
        }
        assert_eq!(unpack_success(0), None);
    }
}
