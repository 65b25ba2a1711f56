//! Why a command failed, and the exit code that says so.

use std::fmt;

use fitz::ErrorKind;

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// The broker answered with an error, or the domain refused (exit 1).
    Domain(String),
    /// Bad arguments or input (exit 2).
    Usage(String),
    /// The broker could not be reached or refused the credentials (exit 3).
    Connection(String),
    /// A command run by `fitz` (under a lease) exited with this status.
    Child(u8),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Domain(_) => 1,
            Self::Usage(_) => 2,
            Self::Connection(_) => 3,
            Self::Child(code) => *code,
        }
    }

    /// A usage failure.
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::Usage(msg.into())
    }

    /// A domain failure.
    pub fn domain(msg: impl Into<String>) -> Self {
        Self::Domain(msg.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(m) | Self::Usage(m) | Self::Connection(m) => f.write_str(m),
            Self::Child(code) => write!(f, "command exited with status {code}"),
        }
    }
}

impl From<fitz::Error> for Failure {
    fn from(e: fitz::Error) -> Self {
        // The client's Display names the broker code (`broker error 1002
        // (NAME): …`).
        let msg = e.to_string();
        match e.kind() {
            ErrorKind::Connection | ErrorKind::Auth | ErrorKind::Closed => Self::Connection(msg),
            ErrorKind::InvalidArgument => Self::Usage(msg),
            _ => Self::Domain(msg),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Domain(format!("i/o error: {e}"))
    }
}
