//! Converting other load balancers' configurations into ours (`lbctl config import`).
//!
//! Only keepalived for now. A conversion never guesses silently: whatever it cannot map,
//! or maps to something that behaves differently, becomes a [`Remark`] naming the source
//! line, and every remark is listed at the top of the TOML it writes. What it writes always
//! passes [`crate::config::parse`]: anything our validation refuses is taken out again,
//! with a remark saying what and why (see [`output`]).
//!
//! The mapping decisions are in `docs/import.md`.

use std::{fmt, path::PathBuf, sync::Arc};

use crate::config::Config;

pub mod keepalived;
pub mod output;

/// How much a remark matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Not converted, or converted to something that behaves differently: read it.
    Warning,
    /// Converted as meant, or ignored because it has no meaning for lbd; for the record.
    Note,
}

/// One thing the operator should know about a conversion, at its source line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remark {
    pub file: Arc<str>,
    pub line: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Remark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{}:{}: {level}: {}", self.file, self.line, self.message)
    }
}

/// Options of a conversion.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `agent.interface`; by default the first VRRP instance's interface.
    pub interface: Option<String>,
}

/// A converted configuration.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The TOML, remarks listed in its header comment.
    pub toml: String,
    /// The same, validated.
    pub config: Config,
    /// Warnings first, then notes; each group in source order.
    pub remarks: Vec<Remark>,
}

/// Why nothing could be converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// The input file could not be read.
    Read { path: PathBuf, error: String },
    /// The input is not keepalived.conf syntax.
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The input parsed, but what it says cannot become a valid configuration (e.g. an
    /// interface name our validation refuses).
    Unconvertible(String),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Read { path, error } => {
                write!(f, "{}: cannot read it: {error}", path.display())
            }
            ImportError::Syntax {
                file,
                line,
                column,
                message,
            } => write!(f, "{file}:{line}:{column}: {message}"),
            ImportError::Unconvertible(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ImportError {}
