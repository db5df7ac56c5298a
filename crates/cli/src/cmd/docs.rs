//! `batchkit completions` and `batchkit man`: generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Exit;

/// Print the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<Exit> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "batchkit", &mut out);
    out.flush()?;
    Ok(Exit::Ok)
}

/// Print the man page of batchkit, or of one of its commands, or of one
/// of their subcommands (`batchkit man files upload`), named as the
/// `SEE ALSO` lines of the pages above them name it.
pub fn man(path: &[String]) -> Result<Exit> {
    let mut cli = Cli::command();
    cli.build();
    let mut page = cli;
    let mut name = "batchkit".to_owned();
    for part in path {
        let names: Vec<String> = page
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        let sub = page.find_subcommand(part).cloned().with_context(|| {
            if names.is_empty() {
                format!("`{name}` has no subcommands")
            } else {
                format!(
                    "`{name}` has no command '{part}' (it has: {})",
                    names.join(", ")
                )
            }
        })?;
        name = format!("{name}-{part}");
        page = sub.name(name.clone());
    }
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(page).render(&mut out)?;
    out.flush()?;
    Ok(Exit::Ok)
}
