//! The Linux capabilities lbd needs when it does not run as root.
//!
//! Found by experiment on Linux 6.18 (run lbd under `setpriv` with the set minus one,
//! see `tests/tests/least_privilege.rs`, which keeps proving it): with all four the agent
//! balances, answers `lbctl` and runs VRRP; without any one of them the kernel refuses a
//! step of the start. Not needed: CAP_SYS_ADMIN (no map type or helper lbd uses asks for it)
//! and CAP_SYS_RESOURCE (since Linux 5.11 BPF memory is charged to the memory cgroup, not
//! RLIMIT_MEMLOCK). docs/operations.md explains the set to operators.

use std::io;

/// A capability lbd needs, with what it is needed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// As `capabilities(7)`, systemd and `setpriv` name it (`CAP_BPF`).
    pub name: &'static str,
    /// Its bit in `/proc/PID/status` masks (`linux/capability.h`).
    pub bit: u32,
    /// What fails without it.
    pub needed_for: &'static str,
    /// Needed only when the config has `[[vrrp]]` instances.
    pub vrrp_only: bool,
}

/// Every capability lbd may use, in the order `capabilities(7)` numbers them.
pub const REQUIRED: [Capability; 4] = [
    Capability {
        name: "CAP_NET_ADMIN",
        bit: 12,
        needed_for: "attaching XDP, creating the devmap NAT redirects through, adding and removing VRRP addresses, and asking the kernel to resolve backend MACs",
        vrrp_only: false,
    },
    Capability {
        name: "CAP_NET_RAW",
        bit: 13,
        needed_for: "the raw socket VRRP adverts travel on and the packet socket gratuitous ARP / unsolicited NA leave by",
        vrrp_only: true,
    },
    Capability {
        name: "CAP_PERFMON",
        bit: 38,
        needed_for: "loading the XDP program: without it the verifier refuses arithmetic between packet pointers (`data_end - data`)",
        vrrp_only: false,
    },
    Capability {
        name: "CAP_BPF",
        bit: 39,
        needed_for: "creating the BPF maps and loading the XDP program",
        vrrp_only: false,
    },
];

/// The bit mask of `caps`, as `/proc/PID/status` prints it (`CapEff:\t00000000000c3000`).
pub fn mask<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> u64 {
    caps.into_iter().fold(0, |m, c| m | 1 << c.bit)
}

/// Parses one `CapXxx:` line of a `/proc/PID/status` text.
pub fn parse_status(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let value = l.strip_prefix(field)?.strip_prefix(':')?;
        u64::from_str_radix(value.trim(), 16).ok()
    })
}

/// This process's effective capabilities.
pub fn effective() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_status(&status, "CapEff")
        .ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

/// The needed capabilities missing from `effective`, for a config with or without VRRP.
pub fn missing(effective: u64, vrrp: bool) -> Vec<&'static Capability> {
    REQUIRED
        .iter()
        .filter(|c| (vrrp || !c.vrrp_only) && effective & (1 << c.bit) == 0)
        .collect()
}

/// Logs a warning per needed capability lbd lacks. A warning, not a refusal: the kernel's
/// own answer stays the judge (a future kernel may need less), and an operator reading
/// the log sees which capability to grant before the kernel's EPERM.
pub fn warn_missing(vrrp: bool) {
    match effective() {
        Ok(eff) => {
            for c in missing(eff, vrrp) {
                tracing::warn!(
                    "lbd lacks {}, needed for {}; run lbd as root or grant it (AmbientCapabilities= in lbd.service, see docs/operations.md)",
                    c.name,
                    c.needed_for
                );
            }
        }
        Err(e) => tracing::warn!("cannot read this process's capabilities: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_set_is_the_mask_the_kernel_prints() {
        // What /proc/PID/status showed for an lbd started with exactly these four.
        assert_eq!(mask(&REQUIRED), 0x0000_00c0_0000_3000);
        let status = "Name:\tlbd\nCapInh:\t0000000000000000\nCapEff:\t000000c000003000\n";
        assert_eq!(parse_status(status, "CapEff"), Some(0xc0_0000_3000));
        assert_eq!(parse_status(status, "CapBnd"), None);
    }

    #[test]
    fn missing_names_only_what_the_config_needs() {
        let all = mask(&REQUIRED);
        assert!(missing(all, true).is_empty());
        assert!(missing(u64::MAX, true).is_empty());
        let no_raw = all & !(1 << 13);
        assert!(missing(no_raw, false).is_empty(), "NET_RAW only for VRRP");
        assert_eq!(missing(no_raw, true)[0].name, "CAP_NET_RAW");
        let names: Vec<_> = missing(0, false).iter().map(|c| c.name).collect();
        assert_eq!(names, ["CAP_NET_ADMIN", "CAP_PERFMON", "CAP_BPF"]);
    }

    #[test]
    fn the_unit_grants_exactly_the_set() {
        let unit = include_str!("../../dist/lbd.service");
        let names: Vec<&str> = REQUIRED.iter().map(|c| c.name).collect();
        for key in ["AmbientCapabilities=", "CapabilityBoundingSet="] {
            let line = unit
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("dist/lbd.service has no {key}"));
            let mut granted: Vec<&str> = line.split_whitespace().collect();
            granted.sort_unstable();
            let mut want = names.clone();
            want.sort_unstable();
            assert_eq!(granted, want, "{key} in dist/lbd.service");
        }
        let doc = include_str!("../../docs/operations.md");
        for name in names {
            assert!(
                doc.contains(name),
                "docs/operations.md does not explain {name}"
            );
        }
    }
}
