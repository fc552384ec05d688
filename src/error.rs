//! sbx's errors as the user sees them: an error may carry a hint (what to do about it), and a
//! [`Report`] holds the message, its causes and every distinct hint of the chain, outermost
//! first. Each module's error type says its own hints (the [`Hint`] trait, next to the type);
//! `hints` finds them in a chain, and how a report looks on the terminal is `progress`'s. This
//! module imports none of sbx's others, so every module can use it.

/// An error type that can say what the user should do about it.
pub trait Hint {
    /// What to do about this error, when there is something to say.
    fn hint(&self) -> Option<String>;
}

/// An error that knows what the user should do about it, for failures without a type of their
/// own (a command's own checks).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl Hint for Hinted {
    fn hint(&self) -> Option<String> {
        Some(self.hint.clone())
    }
}

pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    Hinted {
        message: message.into(),
        hint: hint.into(),
    }
    .into()
}

/// What the user is told about a failure: the message, the causes below it (a cause repeated
/// by the next layer shown once), and every distinct hint of the chain, outermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub message: String,
    pub causes: Vec<String>,
    pub hints: Vec<String>,
}

impl Report {
    /// A failure that is only a message.
    pub fn message(message: impl Into<String>) -> Report {
        Report {
            message: message.into(),
            causes: Vec::new(),
            hints: Vec::new(),
        }
    }
}
