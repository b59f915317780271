//! The thin IO shell of VRRP: the raw sockets adverts travel on, the packet socket
//! gratuitous ARPs and unsolicited NAs leave by, and a precise timer. No protocol logic:
//! bytes in and out go through [`super::wire`], decisions are [`super::machine`]'s.
//!
//! - IPv4: a raw socket for protocol 112 that receives the IP header (so the TTL can be
//!   checked) and sends its own (`IP_HDRINCL`), built as keepalived builds it: TOS 0xc0,
//!   TTL 255, no DF, keepalived's per-instance IP ID counter. Bound to the interface,
//!   joined to 224.0.0.18 there when an instance uses multicast, loopback off (a node must
//!   not hear itself), and `IP_MULTICAST_ALL` off so that groups joined by other sockets
//!   on the node do not leak in.
//! - IPv6: a raw socket for next header 112. The kernel builds the header (traffic class
//!   0xc0, hop limit 255, source chosen per packet with `IPV6_PKTINFO`: the link-local
//!   address, as keepalived sends); the hop limit and destination of received packets come
//!   from ancillary data. The checksum is ours on both sides (no `IPV6_CHECKSUM`), so a bad
//!   one is counted rather than silently dropped by the kernel.
//! - Announcements: an `AF_PACKET` socket per interface sends the frames
//!   [`super::wire::emit_gratuitous_arp`] / [`super::wire::emit_unsolicited_na`] build.
//! - [`Timer`]: a `timerfd`, because tokio's timers round up to the millisecond and the
//!   protocol's timers are microsecond-exact (a takeover is due 3.609375 s after the last
//!   advert at 1 s and priority 100, and keepalived fires within a fraction of a ms).

use std::{
    io::{self, Read as _},
    mem::{size_of, MaybeUninit},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::FutureExt as _;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::wire::{
    Advert, ChecksumKind, Family, Invalid, IpContext, IpHeader, Ipv4Header, Packet, Repr,
    MULTICAST_V4, MULTICAST_V6, PROTOCOL, TOS_NETWORK_CONTROL, TTL,
};

/// Largest packet read: a VRRP advert with 255 IPv6 addresses is under 4.2 kB.
pub const RECV_BUFFER: usize = 8192;

/// A packet that arrived on an advert socket.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The IP source, when the IP header could be read.
    pub src: Option<IpAddr>,
    /// The VRID byte, when the VRRP header could be reached: it lets the caller charge a
    /// malformed advert to the instance it was meant for.
    pub vrid: Option<u8>,
    pub advert: Result<Received, Invalid>,
}

/// A well-formed advert and where it came from.
#[derive(Clone, Debug)]
pub struct Received {
    pub ip: IpContext,
    pub repr: Repr,
    pub checksum: ChecksumKind,
}

/// The raw socket VRRP adverts of one family travel on, on one interface.
#[derive(Debug)]
pub struct AdvertSocket {
    fd: AsyncFd<Socket>,
    family: Family,
    ifindex: u32,
}

fn setsockopt_int(sock: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a valid socket and a pointer to an int that lives through the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn context(e: io::Error, what: &str, ifname: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} on {ifname}: {e}"))
}

impl AdvertSocket {
    /// Opens the socket for `family` on `ifname`, joined to the VRRP group when
    /// `multicast`. Needs CAP_NET_RAW. Must be called inside a tokio runtime.
    pub fn open(
        family: Family,
        ifname: &str,
        ifindex: u32,
        multicast: bool,
    ) -> io::Result<AdvertSocket> {
        let domain = match family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let sock = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(PROTOCOL))))
            .map_err(|e| {
                context(
                    e,
                    "opening a raw socket for VRRP (needs CAP_NET_RAW)",
                    ifname,
                )
            })?;
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(|e| context(e, "binding the VRRP socket", ifname))?;
        match family {
            Family::V4 => {
                sock.set_header_included_v4(true)?;
                sock.set_multicast_loop_v4(false)?;
                sock.set_multicast_ttl_v4(u32::from(TTL))?;
                sock.set_multicast_all_v4(false)?;
                if multicast {
                    sock.join_multicast_v4_n(
                        &MULTICAST_V4,
                        &InterfaceIndexOrAddress::Index(ifindex),
                    )
                    .map_err(|e| context(e, "joining 224.0.0.18", ifname))?;
                }
            }
            Family::V6 => {
                sock.set_multicast_loop_v6(false)?;
                sock.set_multicast_hops_v6(u32::from(TTL))?;
                sock.set_unicast_hops_v6(u32::from(TTL))?;
                sock.set_multicast_if_v6(ifindex)?;
                sock.set_multicast_all_v6(false)?;
                sock.set_tclass_v6(u32::from(TOS_NETWORK_CONTROL))?;
                setsockopt_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
                setsockopt_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
                if multicast {
                    sock.join_multicast_v6(&MULTICAST_V6, ifindex)
                        .map_err(|e| context(e, "joining ff02::12", ifname))?;
                }
            }
        }
        sock.set_nonblocking(true)?;
        Ok(AdvertSocket {
            // SAFETY: the AsyncFd owns the socket, so its fd stays open and the same for
            // the AsyncFd's whole life.
            fd: unsafe { AsyncFd::register(sock)? },
            family,
            ifindex,
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Ready when a packet may be waiting; [`recv_all`](AdvertSocket::recv_all) reads it.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.fd.poll_read_ready(cx).map(|_| ())
    }

    /// Reads every packet waiting, without blocking, and hands each to `f`.
    pub fn recv_all(&self, buf: &mut [u8], mut f: impl FnMut(Incoming)) -> io::Result<()> {
        let Some(ready) = self.fd.readable().now_or_never() else {
            return Ok(());
        };
        let mut guard = ready?;
        loop {
            match guard.try_io(|fd| match self.family {
                Family::V4 => recv_v4(fd.get_ref(), buf),
                Family::V6 => recv_v6(fd.get_ref(), buf),
            }) {
                Ok(Ok(incoming)) => f(incoming),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                // Would block: readiness is cleared, the next packet wakes us again.
                Err(_) => return Ok(()),
            }
        }
    }

    /// Sends `repr` from `src` to `dst` (the group or a unicast peer) with checksum
    /// convention `kind`; `ident` is the IPv4 ID (ignored for IPv6).
    pub fn send(
        &self,
        repr: &Repr,
        src: IpAddr,
        dst: IpAddr,
        kind: ChecksumKind,
        ident: u16,
    ) -> io::Result<()> {
        let invalid = |e: super::wire::EmitError| io::Error::new(io::ErrorKind::InvalidInput, e);
        let sock = self.fd.get_ref();
        match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(d)) => {
                let ip = IpHeader::for_advert(src, dst, ident, 0)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
                let bytes = Advert {
                    ip,
                    vrrp: repr.clone(),
                    checksum: kind,
                }
                .to_ip_bytes()
                .map_err(invalid)?;
                let to = SockAddr::from(SocketAddrV4::new(d, 0));
                retry_interrupted(|| sock.send_to(&bytes, &to)).map(drop)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let bytes = repr.to_bytes(src, dst, kind).map_err(invalid)?;
                send_v6(sock, &bytes, s, d, self.ifindex)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "source and destination of different families",
            )),
        }
    }
}

fn retry_interrupted<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// An IPv4 packet as the raw socket hands it over, header included.
fn recv_v4(sock: &Socket, buf: &mut [u8]) -> io::Result<Incoming> {
    let n = (&*sock).read(buf)?;
    Ok(parse_v4(&buf[..n]))
}

/// Parses what an IPv4 raw socket received. Public for tests that feed it bytes.
pub fn parse_v4(packet: &[u8]) -> Incoming {
    let src = (packet.len() >= Ipv4Header::LEN).then(|| {
        IpAddr::V4(Ipv4Addr::new(
            packet[12], packet[13], packet[14], packet[15],
        ))
    });
    let header_len = packet.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
    let vrid = packet
        .get(header_len + 1)
        .copied()
        .filter(|_| header_len > 0);
    let advert = Advert::parse_ip(packet).map(|a| Received {
        ip: a.ip.context(),
        repr: a.vrrp,
        checksum: a.checksum,
    });
    Incoming { src, vrid, advert }
}

/// An IPv6 payload with its hop limit and destination from ancillary data.
fn recv_v6(sock: &Socket, buf: &mut [u8]) -> io::Result<Incoming> {
    // SAFETY: zeroed sockaddr_in6 / msghdr / control buffer are valid initial values;
    // every pointer handed to recvmsg points into locals that outlive the call.
    unsafe {
        let mut from: libc::sockaddr_in6 = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut hop_limit = None;
        let mut dst = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IPV6 {
                let data = libc::CMSG_DATA(cmsg);
                if c.cmsg_type == libc::IPV6_HOPLIMIT {
                    hop_limit = Some(std::ptr::read_unaligned(data.cast::<libc::c_int>()));
                } else if c.cmsg_type == libc::IPV6_PKTINFO {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
        let payload = &buf[..n as usize];
        Ok(parse_v6(
            payload,
            src,
            dst.unwrap_or(MULTICAST_V6),
            hop_limit.map_or(0, |h| h.clamp(0, 255) as u8),
        ))
    }
}

/// Parses an IPv6 VRRP payload received from `src` to `dst` with `hop_limit`.
pub fn parse_v6(payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Incoming {
    let ip = IpContext {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        ttl: hop_limit,
    };
    let view = Packet::new_unchecked(payload, Family::V6);
    let advert = Repr::parse(&view, &ip).map(|(repr, checksum)| Received { ip, repr, checksum });
    Incoming {
        src: Some(ip.src),
        vrid: payload.get(1).copied(),
        advert,
    }
}

/// Sends an IPv6 VRRP payload from `src` (set per packet with IPV6_PKTINFO) to `dst`.
fn send_v6(
    sock: &Socket,
    payload: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ifindex: u32,
) -> io::Result<()> {
    let scope = if dst.is_multicast() || (dst.segments()[0] & 0xffc0) == 0xfe80 {
        ifindex
    } else {
        0
    };
    let to = SockAddr::from(SocketAddr::V6(SocketAddrV6::new(dst, 0, 0, scope)));
    // SAFETY: every pointer refers to locals that outlive the call; the control buffer is
    // aligned (u64) and large enough for one in6_pktinfo cmsg.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut control = [0u64; 8];
        let space = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = to.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = to.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
        (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: src.octets(),
            },
            ipi6_ifindex: ifindex,
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>(), info);
        retry_interrupted(|| {
            let n = libc::sendmsg(sock.as_raw_fd(), &msg, 0);
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        })
    }
}

/// Sends whole Ethernet frames out of one interface: gratuitous ARPs and unsolicited NAs.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a send-only packet socket on `ifindex` (protocol 0: it receives nothing).
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends one frame (destination MAC in its first 6 bytes).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; the address and frame outlive the call.
        unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.ifindex as i32;
            addr.sll_halen = 6;
            if frame.len() >= 6 {
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            }
            retry_interrupted(|| {
                let n = libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                );
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            })
        }
    }
}

/// A one-shot timer with microsecond precision (timerfd, CLOCK_MONOTONIC: the clock
/// `std::time::Instant` reads on Linux).
#[derive(Debug)]
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
    armed: Option<Instant>,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: plain timerfd_create; the fd is owned at once.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Timer {
            // SAFETY: the AsyncFd owns the fd, so it stays open and the same for its life.
            fd: unsafe { AsyncFd::register(fd)? },
            armed: None,
        })
    }

    /// Fires at `at` (at once if it has passed); `None` disarms. Re-arming for the same
    /// instant is free.
    pub fn arm(&mut self, at: Option<Instant>) -> io::Result<()> {
        if at == self.armed {
            return Ok(());
        }
        let value = match at {
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            Some(at) => {
                // Zero would disarm: a deadline already past fires in a nanosecond.
                let d = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                }
            }
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: a valid timerfd and a spec that lives through the call.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = at;
        Ok(())
    }

    /// Ready once the armed instant has passed.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.fd.poll_read_ready(cx).map(|_| ())
    }

    /// Consumes an expiry, so the timer is not ready until it fires again.
    pub fn clear(&mut self) {
        let Some(Ok(mut guard)) = self.fd.readable().now_or_never() else {
            return;
        };
        let mut count = MaybeUninit::<u64>::uninit();
        // SAFETY: reads at most 8 bytes into `count`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        if n == 8 {
            // A one-shot timer that has been read is not readable until it is armed and
            // fires again: no second read to see EAGAIN.
            self.armed = None;
            guard.clear_ready();
        } else if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
            guard.clear_ready();
        }
    }
}
