//! Asking for memory to be brought into the cache before it is read.

/// Hint that the cache line holding the start of `bytes` is read soon.
/// Only a hint: it changes nothing the program sees.
#[inline]
pub(crate) fn read(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        #[allow(unsafe_code)]
        // SAFETY: a prefetch reads nothing into the program and never
        // faults; the pointer is in bounds of a live slice in any case.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
