//! How a command ended, and the exit code a scheduler sees (SPEC 1).
//!
//! Fatal errors are not an `Outcome`: they travel as `Err` to `main`, which prints them once and
//! exits 2.

use std::process::ExitCode;

/// A command that ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every row accepted, or a command other than `run` succeeded: exit 0.
    Ok,
    /// Some rows rejected, the accepted ones written: exit 1.
    Partial,
    /// Stopped by policy (all-or-nothing rollback, max_rejected): exit 3.
    Stopped,
    /// Ctrl-C or SIGTERM: exit 130.
    Interrupted,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The numeric exit code.
    pub const fn code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Partial => 1,
            Outcome::Stopped => 3,
            Outcome::Interrupted => 130,
        }
    }
}

/// Whether an error comes from writing to a closed pipe (`--report - | head`): the reader left,
/// which is not the run's failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn exit_codes_follow_the_spec() {
        let codes: Vec<u8> = [
            Outcome::Ok,
            Outcome::Partial,
            Outcome::Stopped,
            Outcome::Interrupted,
        ]
        .iter()
        .map(|o| o.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 3, 130]);
    }
}
