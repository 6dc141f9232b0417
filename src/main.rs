//! `repflow`: parse the command line, run the command, render errors with hints, exit.

use clap::Parser;
use repflow::cli::{Cli, Command};
use repflow::commands;

/// candle allocates (and zeroes) a fresh multi-megabyte buffer for every tensor op; glibc's
/// malloc returns each to the kernel on free (mmap/munmap and page faults every step), mimalloc
/// keeps freed memory for reuse (for how long: [`repflow::allocator`]).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    repflow::allocator::configure();
    // Rust ignores SIGPIPE, so `repflow plan P | head` would panic in println! once `head`
    // exits; the default action ends the process quietly, as every Unix filter does.
    // SAFETY: called first, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // The commands that score pick their device here; `run` picks its own (flag over its
    // pipeline's `options.device`; a Slurm driver tolerates a GPU it lacks), reading the flag
    // from `REPFLOW_DEVICE`, which its cluster jobs inherit.
    if let (Command::Run(_), Some(choice)) = (&cli.command, cli.device.as_deref()) {
        // (set before any thread starts)
        std::env::set_var("REPFLOW_DEVICE", choice);
    }
    let scores = matches!(
        cli.command,
        Command::Score(_) | Command::Pairs(_) | Command::Shift(_) | Command::ExecNode(_)
    );
    let own = !matches!(cli.command, Command::Run(_));
    if let Some(choice) = cli
        .device
        .as_deref()
        .filter(|_| own)
        .or(scores.then_some("auto"))
    {
        // compiled GPU kernels live in the store of the commands that have one
        let ptx = match &cli.command {
            Command::ExecNode(a) => Some(a.store.dir().join("ptx")),
            _ => None,
        };
        if let Err(e) = repflow::device::install(choice, "--device", ptx.as_deref()) {
            eprintln!("{e}");
            std::process::exit(e.code);
        }
    }
    let result = match cli.command {
        Command::Score(args) => commands::score::run(&args),
        Command::Pairs(args) => commands::pairs::run(&args),
        Command::Shift(args) => commands::shift::run(&args),
        Command::Run(args) => commands::run::run(&args),
        Command::Plan(args) => commands::plan::run(&args).map(|_| 0),
        Command::Why(args) => commands::why::run(&args).map(|_| 0),
        Command::Cache(args) => commands::cache::run(&args).map(|_| 0),
        Command::ExecNode(args) => commands::exec_node::run(&args).map(|_| 0),
        Command::Extract(args) => commands::extract::run(&args).map(|_| 0),
        Command::Train(args) => commands::train::run(&args).map(|_| 0),
        Command::TrainLm(args) => commands::train_lm::run(&args).map(|_| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(e.code);
        }
    }
}
