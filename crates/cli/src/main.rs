//! `batchkit`: validate, split and merge the JSONL files of LLM Batch APIs.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(batchkit::main(std::env::args_os()))
}
