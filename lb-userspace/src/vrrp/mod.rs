//! VRRP (RFC 5798 v3, RFC 3768 v2): `wire` (packet codec), `machine` (sans-IO state machine).

pub mod machine;
pub mod wire;

#[cfg(test)]
mod captures;
#[cfg(test)]
mod sim;
