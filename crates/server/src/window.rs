//! Completion windows: OpenAI's `24h`, and for a local server any
//! `<n>s`, `<n>m`, `<n>h` or `<n>d`.

/// The longest window accepted (30 days).
pub const MAX_WINDOW_SECS: i64 = 30 * 86_400;

/// The window in seconds, or why it is not one.
pub fn parse(window: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "Invalid completion_window '{window}': use '24h' or a duration such as '90s', '30m', '2h' or '7d' (at most 30d)."
        )
    };
    let split = window.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = window.split_at(split);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    if !(1..=MAX_WINDOW_SECS).contains(&secs) {
        return Err(bad());
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn windows() {
        assert_eq!(parse("24h"), Ok(86_400));
        assert_eq!(parse("3s"), Ok(3));
        assert_eq!(parse("90m"), Ok(5_400));
        assert_eq!(parse("7d"), Ok(604_800));
        for bad in [
            "",
            "h",
            "24",
            "0s",
            "24H",
            "1.5h",
            "-1h",
            "31d",
            "99999999999999999999s",
            " 24h",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
