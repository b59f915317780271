//! Health checks: `scheduler` (sans-IO rise/fall state and timing), `check` (the checkers that do IO).

pub mod scheduler;
pub mod spec;
