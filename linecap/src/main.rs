//! `linecap`: capture frames from receive queues into rotating ERF+LZ4 files,
//! and read them back.
#![forbid(unsafe_code)]

use clap::{CommandFactory, FromArgMatches};
use linecap::{checkhost, cli, commands, demo, flows, logging, process, query, readback};

fn main() {
    // One parse: the typed arguments and clap's matches (which flags were
    // given, for layering them over a profile) come from it.
    let matches = cli::Cli::command().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = logging::init(&args.log) {
        eprintln!("linecap: error: {e:#}");
        std::process::exit(2);
    }
    let code = match args.command {
        cli::Command::Capture(c) => {
            let sub = matches
                .subcommand_matches("capture")
                .expect("the capture subcommand's matches");
            commands::capture(c, sub)
        }
        cli::Command::Read(r) => readback::run(r),
        cli::Command::Demo(d) => demo::run(d),
        cli::Command::Anonymize(a) => commands::anonymize(a),
        cli::Command::Flows(f) => flows::run(f),
        cli::Command::CheckHost(c) => checkhost::run(c),
        cli::Command::Query(q) => query::run_query(q),
        cli::Command::Index(i) => query::run_index(i),
        cli::Command::Ship(s) => linecap::ship::run(s),
        cli::Command::Process(p) => process::run(p),
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
