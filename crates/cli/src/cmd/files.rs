//! `batchkit files`: upload, list, get, content, delete.

use batchkit_client::Progress;
use batchkit_core::atomic::Output;

use super::service::{Printer, connect, failed};
use crate::cli::{FilesArgs, FilesCommand};
use crate::exit::Exit;

/// Run a `files` subcommand.
pub fn run(args: &FilesArgs) -> anyhow::Result<Exit> {
    let (rt, client) = connect(&args.service)?;
    let mut print = Printer::new(args.service.format);
    match &args.command {
        FilesCommand::Upload { file, purpose } => {
            let len = std::fs::metadata(file).map(|m| m.len()).ok();
            let bar = crate::progress::bytes_bar(len, "uploading");
            let tick = bar.clone();
            let progress: Progress = std::sync::Arc::new(move |n| tick.inc(n));
            let uploaded = rt.block_on(client.upload(file, purpose, Some(progress)));
            bar.finish_and_clear();
            match uploaded {
                Ok(f) => print.file(&f)?,
                Err(e) => return failed(&format!("upload of {}", file.display()), e),
            }
        }
        FilesCommand::List {
            purpose,
            limit,
            after,
        } => match rt.block_on(client.files(purpose.as_deref(), *limit, after.as_deref())) {
            Ok(page) => {
                for f in &page.data {
                    print.file(f)?;
                }
            }
            Err(e) => return failed("files", e),
        },
        FilesCommand::Get { id } => match rt.block_on(client.file(id)) {
            Ok(f) => print.file(&f)?,
            Err(e) => return failed(&format!("file {id}"), e),
        },
        FilesCommand::Content { id, output } => {
            let target = output.clone().unwrap_or_else(|| "-".into());
            let mut out = Output::create(&target, false)?;
            match rt.block_on(client.content(id, &mut out, None)) {
                // Only a complete download replaces the target.
                Ok(_) => out.commit()?,
                Err(e) => return failed(&format!("file {id}"), e),
            }
        }
        FilesCommand::Delete { id } => match rt.block_on(client.delete_file(id)) {
            Ok(v) => print.object(&v, || format!("{id} deleted"))?,
            Err(e) => return failed(&format!("file {id}"), e),
        },
    }
    print.finish()?;
    Ok(Exit::Ok)
}
