//! Keys: a 128-bit fingerprint of a `custom_id` and where its line is, and
//! the packing of a result's location and status into one `u64`.

use crate::results::Status;

pub(super) const NONE: u64 = u64::MAX;
/// Status bits of a result whose line is broken but whose id was salvaged.
pub(super) const BROKEN: u64 = 5;
const OFFSET_BITS: u32 = 45;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) hi: u64,
    pub(super) lo: u64,
    /// Inputs: file << 48 | line index. Results: file << 48 | offset << 3 | status.
    pub(super) at: u64,
}

impl Key {
    pub(super) fn new(custom_id: &str, at: u64) -> Key {
        let h = xxhash_rust::xxh3::xxh3_128(custom_id.as_bytes());
        Key {
            hi: (h >> 64) as u64,
            lo: h as u64,
            at,
        }
    }

    pub(super) fn same_id(&self, other: &Key) -> bool {
        (self.hi, self.lo) == (other.hi, other.lo)
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
