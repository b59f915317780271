//! The namespace lab for the load balancer's integration tests and demo: topology, backend
//! servers, clients and the agent runner, each owned by an RAII guard so nothing outlives
//! the test that made it. The topology and why each setting is there: `docs/lab.md`.

pub mod agent;
pub mod client;
pub mod frames;
pub mod http;
pub mod keepalived;
pub mod lab;
pub mod netns;
pub mod program;
pub mod root;
pub mod servers;
pub mod users;
pub mod vrrp;

pub use agent::LbdGuard;
pub use client::SourcePorts;
pub use lab::{Backend, Lab, LabBuilder, Node};
pub use root::require_root;
