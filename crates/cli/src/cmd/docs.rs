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

/// Print the man page of batchkit, or of one of its commands.
pub fn man(command: Option<&str>) -> Result<Exit> {
    let mut cli = Cli::command();
    cli.build();
    let page = match command {
        None => cli,
        Some(name) => {
            let names: Vec<String> = cli
                .get_subcommands()
                .map(|c| c.get_name().to_owned())
                .collect();
            let sub = cli
                .find_subcommand(name)
                .cloned()
                .with_context(|| format!("no command '{name}' (commands: {})", names.join(", ")))?;
            sub.name(format!("batchkit-{name}"))
        }
    };
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(page).render(&mut out)?;
    out.flush()?;
    Ok(Exit::Ok)
}
