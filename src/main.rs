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
            eprintln!("custload: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line (`{:#}`), newlines folded so a scheduler's log keeps it whole.
fn one_line(err: &anyhow::Error) -> String {
    // Some errors (sqlx's among them) repeat their source in their own message; a cause the
    // line already ends with is not printed twice.
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().replace(['\n', '\r'], " ");
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
