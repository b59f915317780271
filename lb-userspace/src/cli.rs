//! The command lines of `lbd` and `lbctl`. They live in the library, not in the binaries,
//! so that `cargo xtask dist` can render man pages and shell completions from the very
//! definitions the binaries parse with: the documentation cannot drift from the flags.

pub mod lbctl;
pub mod lbd;

/// `lbd`'s command line, for generators (man page, completions).
pub fn lbd_command() -> clap::Command {
    <lbd::Args as clap::CommandFactory>::command()
}

/// `lbctl`'s command line, for generators (man pages, completions).
pub fn lbctl_command() -> clap::Command {
    <lbctl::Args as clap::CommandFactory>::command()
}
