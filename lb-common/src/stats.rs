//! Counters: per VIP (`VIP_STATS`), per backend (`BACKEND_STATS`), NAT replies per VIP and
//! per backend (`VIP_REPLY_STATS`, `BACKEND_REPLY_STATS`) and per reason (`REASON_STATS`),
//! all per-CPU arrays of [`Counter`]. Every packet the program sees is counted under exactly
//! one [`Reason`], so an operator can always tell why a packet was passed, dropped or
//! forwarded.

/// Value of every stats map (summed over CPUs by the reader).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

impl Counter {
    pub fn add(&mut self, other: &Counter) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// XDP verdicts (`enum xdp_action`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    pub fn from_u32(v: u32) -> Option<Verdict> {
        Some(match v {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            _ => return None,
        })
    }
}

macro_rules! reasons {
    ($($variant:ident = $n:literal, $name:literal, $verdict:ident, $doc:literal;)*) => {
        /// Why the program returned its verdict; the index into `REASON_STATS`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $(#[doc = $doc] $variant = $n,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];
            /// Number of reasons: the size of `REASON_STATS`.
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// Stable snake_case name used in logs, `lbctl stats` and JSON.
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

            /// The verdict a packet with this reason gets.
            #[inline(always)]
            pub const fn verdict(self) -> Verdict {
                match self { $(Reason::$variant => Verdict::$verdict,)* }
            }

            /// One-line explanation for operators.
            pub const fn describe(self) -> &'static str {
                match self { $(Reason::$variant => $doc,)* }
            }
        }
    };
}

reasons! {
    ForwardedDr = 0, "forwarded_dr", Tx, "forwarded to a backend in direct-return mode";
    PassNotIp = 1, "pass_not_ip", Pass, "not an IP packet (and not ARP)";
    PassArp = 2, "pass_arp", Pass, "ARP, always left to the kernel";
    PassIpv6Ext = 3, "pass_ipv6_ext", Pass, "IPv6 with extension headers the program does not walk (more than 6, or a routing header with segments left)";
    PassMalformed = 4, "pass_malformed", Pass, "truncated or invalid Ethernet/IP/TCP/UDP header";
    PassFragment = 5, "pass_fragment", Pass, "IP fragment (IPv4, or IPv6 with a fragment header), left to the kernel";
    PassVrrp = 6, "pass_vrrp", Pass, "VRRP advertisement, always left to the kernel";
    PassNotTcpUdp = 7, "pass_not_tcp_udp", Pass, "IP protocol other than TCP, UDP or ICMP (including IPsec AH/ESP)";
    PassNotVip = 8, "pass_not_vip", Pass, "destination (address, port, protocol) is not a VIP, nor is it a reply of a NAT connection";
    PassUnknownIface = 9, "pass_unknown_iface", Pass, "arrived on an interface the agent did not configure";
    DropNoBackend = 10, "drop_no_backend", Drop, "the VIP has no usable backend (of the packet's address family) and its all_down policy is \"drop\"";
    DropMacUnresolved = 11, "drop_mac_unresolved", Drop, "the chosen backend's MAC is not resolved yet";
    ForwardedNat = 12, "forwarded_nat", Tx, "NAT: translated to the backend, sent out of the interface it came in on";
    RedirectedNat = 13, "redirected_nat", Redirect, "NAT: translated to the backend, sent out of another interface";
    ForwardedNatReply = 14, "forwarded_nat_reply", Tx, "NAT: a backend's reply translated back to the VIP, sent out of the interface it came in on";
    RedirectedNatReply = 15, "redirected_nat_reply", Redirect, "NAT: a backend's reply translated back to the VIP, sent out of another interface";
    ForwardedIcmpDr = 16, "forwarded_icmp_dr", Tx, "ICMP error about a DR flow (e.g. fragmentation needed) sent to the flow's backend";
    ForwardedIcmpNat = 17, "forwarded_icmp_nat", Tx, "ICMP error about a NAT flow, translated, sent out of the interface it came in on";
    RedirectedIcmpNat = 18, "redirected_icmp_nat", Redirect, "ICMP error about a NAT flow, translated, sent out of another interface";
    PassIcmp = 19, "pass_icmp", Pass, "ICMP that is not an error about a balanced flow (echo, neighbour discovery, errors about the node's own traffic)";
    PassNatVlan = 20, "pass_nat_vlan", Pass, "NAT traffic in a VLAN-tagged frame, left to the kernel (NAT forwards untagged frames only)";
    DropTtlExceeded = 21, "drop_ttl_exceeded", Drop, "NAT: the TTL or hop limit would reach zero";
    PassFibNoNeigh = 22, "pass_fib_no_neigh", Pass, "NAT: the next hop's MAC is not in the kernel's neighbour table; the translated packet goes to the kernel, which resolves it and forwards";
    PassFibFwdDisabled = 23, "pass_fib_fwd_disabled", Pass, "NAT: forwarding is disabled (sysctl net.ipv4.ip_forward, net.ipv6.conf.all.forwarding); the translated packet goes to the kernel";
    PassFibNotForwarded = 24, "pass_fib_not_forwarded", Pass, "NAT: the route is not a plain forwarding route (local, broadcast, multicast, tunnel); the translated packet goes to the kernel";
    PassFibFragNeeded = 25, "pass_fib_frag_needed", Pass, "NAT: larger than the egress MTU; the translated packet goes to the kernel, which fragments it (IPv4 without don't-fragment) or drops it (an ICMP error about it)";
    DropFibUnreachable = 26, "drop_fib_unreachable", Drop, "NAT: the route is a blackhole, unreachable or prohibit route";
    PassNoTxPort = 27, "pass_no_tx_port", Pass, "NAT: the egress interface is not in TX_PORTS; the translated packet goes to the kernel";
    SentIcmpTooBig = 28, "sent_icmp_too_big", Tx, "NAT: larger than the egress MTU and not to be fragmented: answered with ICMP fragmentation needed / packet too big, so the sender's path MTU discovery works";
    PassNoBackend = 29, "pass_no_backend", Pass, "the VIP has no usable backend and its all_down policy is \"pass\": left to the kernel";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_dense_and_named_uniquely() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert!(Reason::ALL[..i].iter().all(|o| o.name() != r.name()));
        }
    }
}
