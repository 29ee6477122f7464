//! `canary`: the command-line front of the canary rollout engine.
//!
//! A thin binary: each subcommand lives in its own module, parses its flags
//! with clap, calls into the library crates and returns an exit code. Only
//! this crate reads the wall clock or seeds an RNG.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod backtest;
mod common;
mod demo;
mod demo_backend;
mod evaluate;
mod live;
mod plan;
mod proxy;
mod rollouts;
mod run;
mod serve;
mod simulate;
mod traffic;
mod validate;

/// Progressive delivery with statistical canary analysis.
#[derive(Parser)]
#[command(name = "canary", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Analyze(analyze::Args),
    Simulate(simulate::Args),
    Backtest(backtest::Args),
    Plan(plan::Args),
    Run(run::Args),
    Serve(serve::Args),
    Rollouts(rollouts::Args),
    Demo(demo::Args),
    DemoBackend(demo_backend::Args),
    Evaluate(evaluate::Args),
    Proxy(proxy::Args),
    Traffic(traffic::Args),
    Validate(validate::Args),
}

/// mimalloc, not the system allocator: see the dependency's note in
/// Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Backtest(a) => backtest::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Run(a) => run::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Rollouts(a) => rollouts::run(a),
        Command::Demo(a) => demo::run(a),
        Command::DemoBackend(a) => demo_backend::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Proxy(a) => proxy::run(a),
        Command::Traffic(a) => traffic::run(a),
        Command::Validate(a) => validate::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
