//! The `custload` binary: parse the command line, run, print a fatal error once, exit with the
//! code of SPEC 1.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A bug must still end in one clear line, not a backtrace; the run reports the failure.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "custload: internal error: {}",
            info.to_string().replace('\n', " ")
        );
    }));
    let cli = custload::Cli::parse();
    match custload::run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) if custload::outcome::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("custload: {}", custload::error::one_line(&err));
            ExitCode::from(2)
        }
    }
}
