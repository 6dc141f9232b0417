//! Errors shown to users: a one-line message, an optional hint, and an exit code.

use std::fmt;

/// Exit code of a usage or input error (bad flag, bad file, bad shape).
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a numerical failure inside a metric.
pub const EXIT_FAILURE: i32 = 1;

/// An error for the user: what is wrong (naming the file, flag or shape) and how to fix it.
#[derive(Debug)]
pub struct UserError {
    /// One line saying what is wrong.
    pub message: String,
    /// What would fix it, when there is something to say.
    pub hint: Option<String>,
    /// The process exit code.
    pub code: i32,
}

impl UserError {
    /// An input or usage error (exit code 2).
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            code: EXIT_USAGE,
        }
    }

    /// Puts `prefix` (e.g. the file it concerns) before the message.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}{}", self.message);
        self
    }

    /// Adds a `hint:` line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl From<repflow_kernels::KernelError> for UserError {
    fn from(e: repflow_kernels::KernelError) -> Self {
        match e {
            repflow_kernels::KernelError::Invalid(msg) => UserError::input(msg),
            repflow_kernels::KernelError::Numerical(msg) => UserError {
                message: format!("numerical failure: {msg}"),
                hint: None,
                code: EXIT_FAILURE,
            },
        }
    }
}

impl From<UserError> for repflow_engine::NodeError {
    fn from(e: UserError) -> Self {
        match e.hint {
            Some(h) => repflow_engine::NodeError::new(format!("{} (hint: {h})", e.message)),
            None => repflow_engine::NodeError::new(e.message),
        }
    }
}
