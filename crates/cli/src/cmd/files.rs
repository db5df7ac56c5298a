//! `batchkit files`: upload, list, get, content, delete.

use batchkit_client::Progress;
use batchkit_core::atomic::Output;

use std::path::PathBuf;

use super::service::{self, Printer, connect, failed};
use crate::exit::Exit;

/// Which call to make, of which service.
pub struct Options {
    /// The service.
    pub service: service::Options,
    /// The call.
    pub action: Action,
}

/// A `files` call.
pub enum Action {
    /// Upload `file` for `purpose`.
    Upload {
        /// The file.
        file: PathBuf,
        /// Its purpose.
        purpose: String,
    },
    /// List files, newest first.
    List {
        /// Only of this purpose.
        purpose: Option<String>,
        /// At most this many.
        limit: Option<u32>,
        /// After this file id.
        after: Option<String>,
    },
    /// Get a file's object.
    Get {
        /// The file id.
        id: String,
    },
    /// Download a file's content to `output` (`-`: standard output).
    Content {
        /// The file id.
        id: String,
        /// Where to write it.
        output: PathBuf,
    },
    /// Delete a file.
    Delete {
        /// The file id.
        id: String,
    },
}

/// Run a `files` call.
pub fn run(args: &Options) -> anyhow::Result<Exit> {
    let (rt, client) = connect(&args.service)?;
    let mut print = Printer::new(args.service.format);
    match &args.action {
        Action::Upload { file, purpose } => {
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
        Action::List {
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
        Action::Get { id } => match rt.block_on(client.file(id)) {
            Ok(f) => print.file(&f)?,
            Err(e) => return failed(&format!("file {id}"), e),
        },
        Action::Content { id, output } => {
            let mut out = Output::create(output, false)?;
            match rt.block_on(client.content(id, &mut out, None)) {
                // Only a complete download replaces the target.
                Ok(_) => out.commit()?,
                Err(e) => return failed(&format!("file {id}"), e),
            }
        }
        Action::Delete { id } => match rt.block_on(client.delete_file(id)) {
            Ok(v) => print.object(&v, || format!("{id} deleted"))?,
            Err(e) => return failed(&format!("file {id}"), e),
        },
    }
    print.finish()?;
    Ok(Exit::Ok)
}
