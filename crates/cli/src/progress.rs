//! Progress bars on stderr, only when stderr is a terminal and the work is
//! long enough to be worth one.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Inputs smaller than this finish before a bar would be seen.
const MIN_BYTES: u64 = 32 << 20;

/// A bar for reading `total` bytes (`None`: unknown, e.g. stdin), or a
/// hidden one when stderr is not a terminal or the input is small.
pub fn bytes_bar(total: Option<u64>, label: &str) -> ProgressBar {
    let worth_it = total.is_none_or(|t| t >= MIN_BYTES);
    if !worth_it || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
