//! `split --skip-invalid`: every line is in exactly one chunk, set aside
//! as invalid, or blank; and every chunk fits the limits unless a line is
//! too large on its own (then the split is refused).
#![no_main]

use batchkit_core::Provider;
use batchkit_core::lines::{Lines, is_blank};
use batchkit_core::split::{FactSink, Plan, SplitConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut profile = Provider::OpenAi.profile();
    profile.limits.max_requests = Some(5);
    profile.limits.max_bytes = Some(2_000);
    profile.limits.max_embedding_inputs = Some(8);
    let cfg = SplitConfig::within(profile);
    let mut vcfg = cfg.validation();
    vcfg.keep = Some(0);
    let sink = FactSink::default();
    let (_, sink) = batchkit_core::validate::validate_bytes_into(data, &vcfg, sink, &|_| {});
    let rejected = sink.into_facts().bad_lines;
    let Ok(plan) = Plan::new(data, &cfg, rejected.clone(), &|_| {}) else {
        return;
    };
    let lines: Vec<&[u8]> = Lines::new(data).map(|l| l.bytes).collect();
    let mut seen = vec![0u8; lines.len()];
    for c in &plan.chunks {
        assert!(c.requests <= 5 && c.bytes <= 2_000, "{c:?}");
        let mut n = 0;
        for r in &c.lines {
            for i in r.clone() {
                seen[i as usize] += 1;
                n += 1;
            }
        }
        assert_eq!(n, c.requests);
    }
    for &line in &rejected {
        seen[line as usize - 1] += 1;
    }
    for (i, line) in lines.iter().enumerate() {
        let want = u8::from(!is_blank(line) || rejected.contains(&(i as u64 + 1)));
        assert_eq!(
            seen[i],
            want,
            "line {}: {:?}",
            i + 1,
            String::from_utf8_lossy(line)
        );
    }
});
