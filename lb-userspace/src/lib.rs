//! The load-balancer agent (`lbd`) and its client (`lbctl`).
//!
//! Pure parts (`config`, `table`) know nothing of sockets or the kernel; `dataplane` is
//! the only writer of BPF maps; `net` talks rtnetlink; `control` is the local socket
//! protocol shared by `lbd` and `lbctl`; `agent` wires them together.

pub mod agent;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod edit;
pub mod health;
pub mod import;
pub mod layout;
pub mod maglev;
pub mod metrics;
pub mod net;
pub mod privilege;
pub mod vrrp;
