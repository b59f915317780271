//! VRRP (RFC 5798 v3, RFC 3768 v2), spoken as keepalived 2.2.7 speaks it so that `lbd` and
//! keepalived can share a virtual router.
//!
//! - [`wire`]: the codec. A zero-copy view and a parse/emit representation of the VRRP
//!   message, the IP headers and Ethernet frames around it, gratuitous ARP and unsolicited NA.
//!   Every malformed input is an [`wire::Invalid`] reason with a stable counter name.
//! - [`machine`]: the RFC 5798 state machine without IO: timestamped events in, polled
//!   [`machine::Action`]s and a timeout out.
//! - [`io`]: the raw sockets (protocol 112, IPv4 and IPv6), the packet socket for
//!   gratuitous ARP / unsolicited NA, and a microsecond timer.
//! - [`instance`]: lbd's instances: the machines driven by the real clock over [`io`], the
//!   virtual addresses added and removed with rtnetlink, XDP attached while master.
//!
//! The IO shell drives them like this:
//! deliver what the socket received, then run the timers that are due, then carry out the
//! actions in order, then sleep until the next timeout or packet.
//!
//! ```
//! use std::{net::IpAddr, time::{Duration, Instant}};
//! use lb_userspace::vrrp::{
//!     machine::{Action, Config, Machine, State},
//!     wire::{Advert, ChecksumKind, Family, IpHeader},
//! };
//!
//! let me: IpAddr = "10.0.0.2".parse().unwrap();
//! let mut vrrp = Machine::new(Config::new(51, 100, me, vec!["10.0.0.50".parse().unwrap()])).unwrap();
//! let mut now = Instant::now();
//! vrrp.startup(now);
//! let mut sent = Vec::new();
//! for _ in 0..10 {
//!     // 1. Received packets (here: none). From an IPv4 raw socket, the bytes are the IP packet:
//!     //    `Advert::parse_ip(&bytes)`, then count the error or hand over the advert.
//!     let received: Vec<Vec<u8>> = Vec::new();
//!     for bytes in received {
//!         match Advert::parse_ip(&bytes) {
//!             Ok(advert) => { let _ = vrrp.handle_advert(now, &advert.vrrp, advert.ip.src()); }
//!             Err(reason) => eprintln!("dropped: {reason}"),
//!         }
//!     }
//!     // 2. Timers.
//!     if vrrp.poll_timeout().is_some_and(|t| t <= now) {
//!         vrrp.handle_timeout(now);
//!     }
//!     // 3. Actions, in order.
//!     while let Some(action) = vrrp.poll_action() {
//!         match action {
//!             Action::SendAdvert(repr) => {
//!                 let group = Family::V4.multicast_group();
//!                 let kind = ChecksumKind::default_for(repr.version);
//!                 let ip = IpHeader::for_advert(me, group, 1, 0).unwrap();
//!                 sent.push(Advert { ip, vrrp: repr, checksum: kind }.to_ip_bytes().unwrap());
//!             }
//!             Action::BecameMaster => { /* attach XDP */ }
//!             Action::BecameBackup | Action::Stopped => { /* detach XDP */ }
//!             Action::AddVips(_) | Action::RemoveVips(_) => { /* rtnetlink */ }
//!             Action::SendGratuitous { .. } => { /* wire::emit_gratuitous_arp per VIP and round */ }
//!             Action::Notify(_) => { /* notify hook */ }
//!         }
//!     }
//!     // 4. Sleep until the next timeout (or a packet).
//!     now = vrrp.poll_timeout().unwrap_or(now + Duration::from_secs(1));
//! }
//! // Nobody else on this LAN: the backup took over after Master_Down_Interval.
//! assert_eq!(vrrp.state(), State::Master);
//! assert!(Advert::parse_ip(&sent[0]).is_ok());
//! ```

pub mod instance;
pub mod io;
pub mod machine;
pub mod wire;

#[cfg(test)]
mod captures;
#[cfg(test)]
mod sim;
