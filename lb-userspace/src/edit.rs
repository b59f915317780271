//! Runtime changes requested through `lbctl` (add/remove VIPs and backends, weights, drain),
//! as pure edits of the effective config. Each edit yields a whole new config that goes
//! through the same validation as a file (it is rendered to TOML and parsed again), so a
//! change made at runtime can never produce a state a config file could not describe.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{
    self, AllDown, BackendConfig, Config, ForwardingMode, Protocol, VipConfig, DEFAULT_TABLE_SIZE,
};

/// A new VIP as `lbctl vip add` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: ForwardingMode,
    #[serde(default)]
    pub table_size: Option<u32>,
    #[serde(default)]
    pub source_affinity: bool,
    #[serde(default)]
    pub all_down: AllDown,
}

/// One runtime change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    VipAdd(VipSpec),
    VipDel {
        vip: String,
    },
    BackendAdd {
        vip: String,
        address: IpAddr,
        weight: u32,
        /// NAT: the backend's port (None: the VIP's).
        port: Option<u16>,
    },
    BackendDel {
        vip: String,
        address: IpAddr,
    },
    BackendWeight {
        vip: String,
        address: IpAddr,
        weight: u32,
    },
    BackendDrain {
        vip: String,
        address: IpAddr,
        drain: bool,
    },
}

/// Applies `edit` to a copy of `config` and validates the result. Errors say what to do.
pub fn apply(config: &Config, edit: &Edit) -> Result<Config, String> {
    let mut new = config.clone();
    match edit {
        Edit::VipAdd(spec) => {
            let name = spec
                .name
                .clone()
                .unwrap_or_else(|| format!("{}:{}/{}", spec.address, spec.port, spec.protocol));
            if let Some(v) = new.vips.iter().find(|v| {
                v.name == name
                    || (v.address, v.port, v.protocol) == (spec.address, spec.port, spec.protocol)
            }) {
                return Err(format!(
                    "VIP {} ({}:{}/{}) already exists",
                    v.name, v.address, v.port, v.protocol
                ));
            }
            new.vips.push(VipConfig {
                name,
                address: spec.address,
                port: spec.port,
                protocol: spec.protocol,
                mode: spec.mode,
                table_size: spec.table_size.unwrap_or(DEFAULT_TABLE_SIZE),
                source_affinity: spec.source_affinity,
                all_down: spec.all_down,
                health_check: None,
                backends: Vec::new(),
            });
        }
        Edit::VipDel { vip } => {
            let i = find_vip(&new, vip)?;
            new.vips.remove(i);
        }
        Edit::BackendAdd {
            vip,
            address,
            weight,
            port,
        } => {
            let v = &mut new.vips[find_vip(config, vip)?];
            if v.backends.iter().any(|b| b.address == *address) {
                return Err(format!("backend {address} is already in VIP {}", v.name));
            }
            v.backends.push(BackendConfig {
                address: *address,
                port: *port,
                weight: *weight,
                drain: false,
            });
        }
        Edit::BackendDel { vip, address } => {
            let v = &mut new.vips[find_vip(config, vip)?];
            let i = find_backend(v, address)?;
            v.backends.remove(i);
        }
        Edit::BackendWeight {
            vip,
            address,
            weight,
        } => {
            let v = &mut new.vips[find_vip(config, vip)?];
            let i = find_backend(v, address)?;
            v.backends[i].weight = *weight;
        }
        Edit::BackendDrain {
            vip,
            address,
            drain,
        } => {
            let v = &mut new.vips[find_vip(config, vip)?];
            let i = find_backend(v, address)?;
            v.backends[i].drain = *drain;
        }
    }
    config::parse(&config::to_toml(&new)).map_err(|diags| {
        diags
            .iter()
            .map(|d| {
                if d.key.is_empty() {
                    d.message.clone()
                } else {
                    format!("{}: {}", d.key, d.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Finds a VIP by name, or by `ADDRESS:PORT/PROTOCOL`.
pub fn find_vip(config: &Config, selector: &str) -> Result<usize, String> {
    config
        .vips
        .iter()
        .position(|v| {
            v.name == selector || format!("{}:{}/{}", v.address, v.port, v.protocol) == selector
        })
        .ok_or_else(|| {
            let known: Vec<String> = config
                .vips
                .iter()
                .map(|v| format!("{} ({}:{}/{})", v.name, v.address, v.port, v.protocol))
                .collect();
            if known.is_empty() {
                format!("no VIP {selector:?}: no VIP is configured (add one with `lbctl vip add`)")
            } else {
                format!(
                    "no VIP {selector:?}; give a name or ADDRESS:PORT/PROTOCOL of one of: {}",
                    known.join(", ")
                )
            }
        })
}

fn find_backend(v: &VipConfig, address: &IpAddr) -> Result<usize, String> {
    v.backends
        .iter()
        .position(|b| b.address == *address)
        .ok_or_else(|| {
            let known: Vec<String> = v.backends.iter().map(|b| b.address.to_string()).collect();
            format!(
                "VIP {} has no backend {address} (its backends: {})",
                v.name,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        config::parse(
            "[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n\
             [[vip.backend]]\naddress = \"10.0.0.2\"\n",
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn edits_change_exactly_what_they_name() {
        let c = base();
        let c = apply(
            &c,
            &Edit::BackendAdd {
                vip: "web".into(),
                address: ip("10.0.0.3"),
                weight: 2,
                port: None,
            },
        )
        .unwrap();
        assert_eq!(c.vips[0].backends.len(), 2);
        let c = apply(
            &c,
            &Edit::BackendWeight {
                vip: "10.0.0.1:80/tcp".into(),
                address: ip("10.0.0.3"),
                weight: 5,
            },
        )
        .unwrap();
        assert_eq!(c.vips[0].backends[1].weight, 5);
        let c = apply(
            &c,
            &Edit::BackendDrain {
                vip: "web".into(),
                address: ip("10.0.0.3"),
                drain: true,
            },
        )
        .unwrap();
        assert_eq!(
            (
                c.vips[0].backends[1].weight,
                c.vips[0].backends[1].effective_weight()
            ),
            (5, 0)
        );
        let c = apply(
            &c,
            &Edit::BackendDel {
                vip: "web".into(),
                address: ip("10.0.0.2"),
            },
        )
        .unwrap();
        assert_eq!(c.vips[0].backends.len(), 1);
        let spec = VipSpec {
            name: None,
            address: ip("10.0.0.9"),
            port: 53,
            protocol: Protocol::Udp,
            mode: ForwardingMode::Dr,
            table_size: Some(13),
            source_affinity: false,
            all_down: AllDown::Drop,
        };
        let c = apply(&c, &Edit::VipAdd(spec)).unwrap();
        assert_eq!(
            (c.vips[1].name.as_str(), c.vips[1].table_size),
            ("10.0.0.9:53/udp", 13)
        );
        let c = apply(&c, &Edit::VipDel { vip: "web".into() }).unwrap();
        assert_eq!(c.vips.len(), 1);
        let nat = VipSpec {
            name: Some("nat6".into()),
            address: ip("2001:db8::50"),
            port: 80,
            protocol: Protocol::Tcp,
            mode: ForwardingMode::Nat,
            table_size: Some(13),
            source_affinity: false,
            all_down: AllDown::Drop,
        };
        let c = apply(&c, &Edit::VipAdd(nat)).unwrap();
        let c = apply(
            &c,
            &Edit::BackendAdd {
                vip: "nat6".into(),
                address: ip("2001:db8:1::21"),
                weight: 1,
                port: Some(8080),
            },
        )
        .unwrap();
        assert_eq!(c.vips[1].mode, ForwardingMode::Nat);
        assert_eq!(c.vips[1].backends[0].port_for(80), 8080);
    }

    #[test]
    fn bad_edits_are_refused_with_a_precise_message() {
        let c = base();
        let spec = |port, table_size| VipSpec {
            name: None,
            address: ip("10.0.0.1"),
            port,
            protocol: Protocol::Tcp,
            mode: ForwardingMode::Dr,
            table_size,
            source_affinity: false,
            all_down: AllDown::Drop,
        };
        let cases: Vec<(Edit, &str)> = vec![
            (Edit::VipAdd(spec(80, None)), "VIP web (10.0.0.1:80/tcp) already exists"),
            (Edit::VipAdd(spec(0, None)), "vip[1].port: port 0 is not allowed"),
            (Edit::VipAdd(spec(81, Some(100))), "vip[1].table_size: 100 is not prime"),
            (Edit::VipDel { vip: "nope".into() }, "no VIP \"nope\"; give a name or ADDRESS:PORT/PROTOCOL of one of: web (10.0.0.1:80/tcp)"),
            (Edit::BackendAdd { vip: "web".into(), address: ip("10.0.0.2"), weight: 1, port: None }, "backend 10.0.0.2 is already in VIP web"),
            (Edit::BackendAdd { vip: "web".into(), address: ip("2001:db8::1"), weight: 1, port: None }, "different address families"),
            (Edit::BackendAdd { vip: "web".into(), address: ip("10.0.0.3"), weight: 10_001, port: None }, "above the maximum weight"),
            (Edit::BackendAdd { vip: "web".into(), address: ip("10.0.0.3"), weight: 1, port: Some(8080) }, "vip[0].backend[1].port: a backend port needs mode = \"nat\""),
            (Edit::BackendDel { vip: "web".into(), address: ip("10.0.0.7") }, "VIP web has no backend 10.0.0.7 (its backends: 10.0.0.2)"),
            (Edit::BackendWeight { vip: "www".into(), address: ip("10.0.0.2"), weight: 1 }, "no VIP \"www\""),
        ];
        for (edit, want) in cases {
            let err = apply(&c, &edit).unwrap_err();
            assert!(err.contains(want), "{edit:?}: {err}");
        }
    }
}
