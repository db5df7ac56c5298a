//! The Batch API's limits on a batch's parameters, checked the same way by
//! `batchkit serve` (answering 400) and the client (before sending).

use std::ops::RangeInclusive;

/// Most `metadata` pairs.
pub const MAX_METADATA_PAIRS: usize = 16;
/// Most characters in a `metadata` key.
pub const MAX_METADATA_KEY: usize = 64;
/// Most characters in a `metadata` value.
pub const MAX_METADATA_VALUE: usize = 512;
/// Allowed `output_expires_after.seconds` (and a file's `expires_after`).
pub const EXPIRY_SECONDS: RangeInclusive<i64> = 3_600..=2_592_000;

/// A parameter outside its limits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// The parameter (`metadata`, `metadata.KEY`, ...).
    pub param: String,
    /// What is wrong.
    pub message: String,
}

/// Check `metadata` pairs: at most 16, keys of at most 64 characters,
/// values of at most 512.
pub fn check_metadata<'a>(
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ParamError> {
    if pairs.len() > MAX_METADATA_PAIRS {
        return Err(ParamError {
            param: "metadata".into(),
            message: format!(
                "Invalid 'metadata': at most {MAX_METADATA_PAIRS} pairs, got {}.",
                pairs.len()
            ),
        });
    }
    for (k, v) in pairs {
        let (kn, vn) = (k.chars().count(), v.chars().count());
        if kn > MAX_METADATA_KEY {
            return Err(ParamError {
                param: format!("metadata.{k}"),
                message: format!(
                    "Invalid 'metadata': keys have at most {MAX_METADATA_KEY} characters, '{k}' has {kn}."
                ),
            });
        }
        if vn > MAX_METADATA_VALUE {
            return Err(ParamError {
                param: format!("metadata.{k}"),
                message: format!(
                    "Invalid 'metadata': values have at most {MAX_METADATA_VALUE} characters, the value of '{k}' has {vn}."
                ),
            });
        }
    }
    Ok(())
}

/// Check `output_expires_after.seconds`.
pub fn check_output_expiry(seconds: i64) -> Result<(), ParamError> {
    if EXPIRY_SECONDS.contains(&seconds) {
        Ok(())
    } else {
        Err(ParamError {
            param: "output_expires_after.seconds".into(),
            message: format!(
                "Invalid 'output_expires_after.seconds': expected an integer from {} to {}, got {seconds}.",
                EXPIRY_SECONDS.start(),
                EXPIRY_SECONDS.end()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_limits() {
        let ok: Vec<(String, String)> = (0..16)
            .map(|i| (format!("k{i}"), "v".repeat(512)))
            .collect();
        assert!(check_metadata(ok.iter().map(|(k, v)| (k.as_str(), v.as_str()))).is_ok());
        let many: Vec<(String, String)> =
            (0..17).map(|i| (format!("k{i}"), String::new())).collect();
        let e = check_metadata(many.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_err();
        assert_eq!(e.param, "metadata");
        let long_key = "é".repeat(65);
        let e = check_metadata([(long_key.as_str(), "v")].into_iter()).unwrap_err();
        assert_eq!(e.param, format!("metadata.{long_key}"));
        assert!(check_metadata([("é".repeat(64).as_str(), "v")].into_iter()).is_ok());
        let long_value = "v".repeat(513);
        assert!(check_metadata([("k", long_value.as_str())].into_iter()).is_err());
    }

    #[test]
    fn expiry_limits() {
        assert!(check_output_expiry(3_600).is_ok());
        assert!(check_output_expiry(2_592_000).is_ok());
        assert!(check_output_expiry(3_599).is_err());
        assert!(check_output_expiry(2_592_001).is_err());
    }
}
