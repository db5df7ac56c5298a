//! `test-upstream [--listen ADDR] [--latency-ms MS] [--api-key KEY]`: the
//! test upstream as a process, for benchmarks and trying `batchkit serve`
//! by hand. Prints `listening on http://ADDR` on stderr when ready.

use std::time::Duration;

use batchkit_testkit::{Options, TestUpstream};

fn main() {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("error: {a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--listen" => match value().parse() {
                Ok(addr) => opts.listen = Some(addr),
                Err(e) => fail(&format!("--listen: {e}")),
            },
            "--latency-ms" => match value().parse() {
                Ok(ms) => opts.latency = Duration::from_millis(ms),
                Err(e) => fail(&format!("--latency-ms: {e}")),
            },
            "--api-key" => opts.api_key = Some(value()),
            "-h" | "--help" => {
                eprintln!("usage: test-upstream [--listen ADDR] [--latency-ms MS] [--api-key KEY]");
                return;
            }
            other => fail(&format!("unknown argument '{other}'")),
        }
    }
    let rt = tokio::runtime::Runtime::new()
        .unwrap_or_else(|e| fail(&format!("cannot start a runtime: {e}")));
    rt.block_on(async {
        let up = TestUpstream::start(opts).await;
        eprintln!("listening on http://{}", up.addr());
        let _ = tokio::signal::ctrl_c().await;
    });
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}
