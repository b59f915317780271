//! `lbctl config import`: keepalived.conf into our TOML.
//!
//! [`parse`] reads keepalived's syntax (includes, quotes, comments) into statements with
//! their locations; [`convert`] and [`lvs`] map them onto our tables, remarking on every
//! keyword they cannot map; [`crate::import::output::finish`] renders and validates the
//! result. The mapping table is `docs/import.md`.

use std::path::Path;

use super::{output, ImportError, Imported, Options};

pub mod convert;
pub mod lvs;
pub mod parse;

/// Converts the keepalived configuration at `path` (named as given in remarks).
pub fn import_file(path: &Path, opts: &Options) -> Result<Imported, ImportError> {
    let doc = parse::parse_file(path)?;
    let (draft, remarks) = convert::convert(doc, opts, &path.to_string_lossy());
    output::finish(draft, remarks)
}

/// Converts keepalived configuration text named `name`; relative includes are resolved
/// against `dir`.
pub fn import_str(
    text: &str,
    name: &str,
    dir: &Path,
    opts: &Options,
) -> Result<Imported, ImportError> {
    let doc = parse::parse_str(text, name, dir)?;
    let (draft, remarks) = convert::convert(doc, opts, name);
    output::finish(draft, remarks)
}
