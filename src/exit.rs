//! What sbx exits with: success, the sandboxed command's own code passed through, sbx's own
//! failure (one code, so scripts can tell it from the command's), a check that found a problem,
//! or the signal that stopped a session. Commands return one; only the binary turns it into a
//! process exit code.

/// What sbx exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success,
    /// The code of the command sbx ran in the sandbox (`sbx run`, `sbx exec`), passed
    /// through as it is.
    Command(i32),
    /// sbx itself failed, wholly or in part (`sbx gc` that could not clean up one session):
    /// 125, as `docker run` and `podman run` report their own failures, so that it stands
    /// apart from the codes of the command.
    Failure,
    /// The command ran and found a problem it told the user about: a failing check (`sbx
    /// doctor`), a leak (`sbx doctor --leaks`), a cache it had to keep (`sbx cache rm`, when a
    /// session uses it). 1, the general failure of command-line tools.
    Problem,
    /// A session stopped by this signal: 128 plus its number, as shells report it.
    Signal(i32),
}

impl ExitStatus {
    /// sbx's own failures.
    const FAILURE: i32 = 125;

    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Command(code) => code,
            ExitStatus::Failure => Self::FAILURE,
            ExitStatus::Problem => 1,
            ExitStatus::Signal(sig) => 128 + sig,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(ExitStatus::Success.code(), 0);
        assert_eq!(ExitStatus::Command(0).code(), 0);
        assert_eq!(ExitStatus::Command(3).code(), 3);
        assert_eq!(ExitStatus::Command(125).code(), 125);
        assert_eq!(ExitStatus::Failure.code(), 125);
        assert_eq!(ExitStatus::Problem.code(), 1);
        assert_eq!(ExitStatus::Signal(libc::SIGINT).code(), 130);
        assert_eq!(ExitStatus::Signal(libc::SIGTERM).code(), 143);
    }
}
