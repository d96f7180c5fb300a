//! `linecap`: capture frames from receive queues into rotating ERF+LZ4 files,
//! and read them back.
#![forbid(unsafe_code)]

use clap::Parser;
use linecap::{checkhost, cli, demo, flows, readback};

fn main() {
    let args = cli::Cli::parse();
    let code = match args.command {
        cli::Command::Capture(c) => cli::capture(c),
        cli::Command::Read(r) => readback::run(r),
        cli::Command::Demo(d) => demo::run(d),
        cli::Command::Anonymize(a) => cli::anonymize(a),
        cli::Command::Flows(f) => flows::run(f),
        cli::Command::CheckHost(c) => checkhost::run(c),
        cli::Command::Ctl(c) => linecap::ctl::run(c),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("linecap: error: {e:#}");
            std::process::exit(2);
        }
    }
}
