//! rtnetlink, the thin IO shell for links, addresses and neighbours: the interface's index
//! and MAC, its addresses (VRRP adds and removes the virtual ones), the MACs of backends
//! from the kernel's neighbour table, and triggering resolution for backends the kernel
//! does not know yet.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Context as _};
use futures::{channel::mpsc::UnboundedReceiver, StreamExt, TryStreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlag, AddressHeaderFlag, AddressMessage},
    link::LinkAttribute,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlag, NeighbourMessage, NeighbourState,
    },
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::{Handle, IpVersion};

/// An interface the program attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: [u8; 6],
}

/// One entry of the kernel's neighbour table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    /// The link-layer address when the kernel has one (not for INCOMPLETE/FAILED).
    pub mac: Option<[u8; 6]>,
    /// Whether the kernel considers the entry confirmed (REACHABLE, PERMANENT, NOARP).
    pub confirmed: bool,
}

/// A change the kernel announced on the neighbour multicast group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeighbourEvent {
    Updated(Neighbour),
    Deleted { ifindex: u32, ip: IpAddr },
}

/// A request channel to rtnetlink. The connection runs as a spawned task.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a request connection. Must be called inside a tokio runtime.
    pub fn connect() -> anyhow::Result<Netlink> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening an rtnetlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn link(&self, name: &str) -> anyhow::Result<Link> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(_) => bail!(
                "interface {name:?} not found in this network namespace; check agent.interface (see `ip link`)"
            ),
        };
        let mac = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| anyhow!("interface {name:?} has no Ethernet address; XDP DR forwarding needs an Ethernet link"))?;
        Ok(Link {
            index: msg.header.index,
            mac,
        })
    }

    /// Every IPv4 and IPv6 neighbour on `ifindex`.
    pub async fn neighbours(&self, ifindex: u32) -> anyhow::Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let mut dump = self.handle.neighbours().get().set_family(version).execute();
            while let Some(msg) = dump
                .try_next()
                .await
                .context("dumping the neighbour table")?
            {
                if let Some(n) = neighbour(&msg).filter(|n| n.ifindex == ifindex) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Asks the kernel to resolve (or re-confirm) `ip` on `ifindex`, as if a packet were
    /// about to be sent there (NTF_USE): it sends ARP/ND and the answer lands in the
    /// neighbour table, where `neighbours` and the event stream see it.
    pub async fn resolve(&self, ifindex: u32, ip: IpAddr) -> anyhow::Result<()> {
        self.handle
            .neighbours()
            .add(ifindex, ip)
            .flags(vec![NeighbourFlag::Use])
            .replace()
            .execute()
            .await
            .with_context(|| format!("asking the kernel to resolve {ip}"))
    }
}

/// An address configured on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Netlink {
    /// The addresses on `ifindex`, in the kernel's order (for IPv4 the primary first).
    pub async fn addresses(&self, ifindex: u32) -> anyhow::Result<Vec<InterfaceAddress>> {
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .with_context(|| format!("listing the addresses of ifindex {ifindex}"))?
        {
            if msg.header.index != ifindex {
                continue;
            }
            // IFA_LOCAL is the node's own address; IFA_ADDRESS is the peer's on a
            // point-to-point link and the same as IFA_LOCAL elsewhere (IPv6 has only it).
            let find = |local: bool| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) if local => Some(*ip),
                    AddressAttribute::Address(ip) if !local => Some(*ip),
                    _ => None,
                })
            };
            if let Some(addr) = find(true).or_else(|| find(false)) {
                out.push(InterfaceAddress {
                    addr,
                    prefix_len: msg.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// Adds `addr/prefix_len` to `ifindex`. IPv6 addresses skip duplicate address
    /// detection (`nodad`, as keepalived adds VIPs): a VIP that moves between nodes would
    /// otherwise stay tentative, unusable, for a second after each takeover. Returns
    /// whether it was added (false: it was there already).
    pub async fn add_address(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> anyhow::Result<bool> {
        let mut req = self.handle.address().add(ifindex, addr, prefix_len);
        if addr.is_ipv6() {
            req.message_mut()
                .header
                .flags
                .push(AddressHeaderFlag::Nodad);
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(vec![AddressFlag::Nodad]));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("adding {addr}/{prefix_len} to ifindex {ifindex}"))
            }
        }
    }

    /// Removes `addr/prefix_len` from `ifindex`. Returns whether it was there.
    pub async fn remove_address(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> anyhow::Result<bool> {
        let mut msg = AddressMessage::default();
        msg.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = prefix_len;
        msg.header.index = ifindex;
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENOENT =>
            {
                Ok(false)
            }
            Err(e) => Err(e)
                .with_context(|| format!("removing {addr}/{prefix_len} from ifindex {ifindex}")),
        }
    }
}

/// Subscribes to neighbour table changes (RTNLGRP_NEIGH). Must be called inside a tokio
/// runtime.
pub fn watch_neighbours() -> anyhow::Result<impl futures::Stream<Item = NeighbourEvent>> {
    const RTMGRP_NEIGH: u32 = 4;
    let (mut conn, _handle, messages) =
        rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_NEIGH))
        .context("subscribing to neighbour table changes")?;
    tokio::spawn(conn);
    Ok(events(messages))
}

fn events(
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
) -> impl futures::Stream<Item = NeighbourEvent> {
    messages.filter_map(|(msg, _)| async move {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                neighbour(&m).map(NeighbourEvent::Updated)
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => neighbour(&m)
                .map(|n| NeighbourEvent::Deleted {
                    ifindex: n.ifindex,
                    ip: n.ip,
                }),
            _ => None,
        }
    })
}

fn neighbour(msg: &NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLocalAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
            }
            _ => {}
        }
    }
    let state = msg.header.state;
    // INCOMPLETE and FAILED entries may still carry a stale address; it is not usable.
    let usable = !matches!(
        state,
        NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
    );
    Some(Neighbour {
        ifindex: msg.header.ifindex,
        ip: ip?,
        mac: mac.filter(|_| usable),
        confirmed: matches!(
            state,
            NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp
        ),
    })
}

/// `02:99:00:00:00:21` form.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
