//! Counters: per VIP (`VIP_STATS`), per backend (`BACKEND_STATS`) and per reason
//! (`REASON_STATS`), all per-CPU arrays of [`Counter`]. Every packet the program sees is
//! counted under exactly one [`Reason`], so an operator can always tell why a packet was
//! passed, dropped or forwarded.

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
    PassIpv6 = 3, "pass_ipv6", Pass, "IPv6, not balanced by this version";
    PassMalformed = 4, "pass_malformed", Pass, "truncated or invalid Ethernet/IP/TCP/UDP header";
    PassFragment = 5, "pass_fragment", Pass, "IP fragment, left to the kernel";
    PassVrrp = 6, "pass_vrrp", Pass, "VRRP advertisement, always left to the kernel";
    PassNotTcpUdp = 7, "pass_not_tcp_udp", Pass, "IP protocol other than TCP or UDP";
    PassNotVip = 8, "pass_not_vip", Pass, "destination (address, port, protocol) is not a VIP";
    PassUnknownIface = 9, "pass_unknown_iface", Pass, "arrived on an interface the agent did not configure";
    DropNoBackend = 10, "drop_no_backend", Drop, "the VIP has no usable backend";
    DropMacUnresolved = 11, "drop_mac_unresolved", Drop, "the chosen backend's MAC is not resolved yet";
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
