//! `repflow`: parse the command line, run the command, render errors with hints, exit.

use clap::Parser;
use repflow::cli::{Cli, Command};
use repflow::commands;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score(args) => commands::score::run(&args),
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(e.code);
    }
}
