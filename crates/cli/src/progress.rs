//! Progress bars on stderr, only when stderr is a terminal and the work is
//! long enough to be worth one.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Inputs smaller than this finish before a bar would be seen.
const MIN_BYTES: u64 = 32 << 20;

fn worth_it(total: Option<u64>) -> bool {
    total.is_none_or(|t| t >= MIN_BYTES) && std::io::stderr().is_terminal()
}

/// A bar for `total` bytes (`None`: unknown, a spinner), not yet drawn.
fn styled(total: Option<u64>, label: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
            .with_style(
                ProgressStyle::with_template(
                    "{msg:14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()).with_style(
            ProgressStyle::with_template("{msg:14} {spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(label.to_owned());
    bar
}

/// A bar for reading `total` bytes (`None`: unknown, e.g. stdin), or a
/// hidden one when stderr is not a terminal or the input is small.
pub fn bytes_bar(total: Option<u64>, label: &str) -> ProgressBar {
    if !worth_it(total) {
        return ProgressBar::hidden();
    }
    let bar = styled(total, label);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Two bars over the same `total` bytes, drawn one above the other, for
/// two kinds of work that run at once (checking and writing).
pub fn bytes_bars(total: Option<u64>, labels: [&str; 2]) -> [ProgressBar; 2] {
    if !worth_it(total) {
        return [ProgressBar::hidden(), ProgressBar::hidden()];
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    labels.map(|label| {
        let bar = multi.add(styled(total, label));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    })
}
