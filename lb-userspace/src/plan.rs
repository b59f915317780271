//! From a validated config to the exact map contents the data plane needs. Pure: no
//! kernel, so what gets written is unit-tested here.

use lb_common::{
    addr,
    backend::{Backend, BACKEND_F_MAC_VALID, BACKEND_F_PRESENT},
    vip::{VipInfo, VipKey, MODE_DR},
};

use crate::{
    config::{Config, ForwardingMode},
    table::weighted_fill,
};

/// Everything the maps should hold for one VIP.
#[derive(Clone, Debug, PartialEq)]
pub struct VipPlan {
    /// Index into `Config::vips`.
    pub index: usize,
    pub key: VipKey,
    pub info: VipInfo,
    /// Backend ids in `BACKENDS`, in config order.
    pub backend_ids: Vec<u32>,
    /// The VIP's lookup table (backend ids), written at `info.table_offset`.
    pub table: Vec<u32>,
}

/// Lays out every VIP: ids in config order, table slices packed from slot 0, backend ids
/// numbered across VIPs in config order.
pub fn vips(config: &Config) -> Vec<VipPlan> {
    let mut next_backend = 0u32;
    let mut next_slot = 0u32;
    config
        .vips
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let backend_ids: Vec<u32> =
                (next_backend..next_backend + v.backends.len() as u32).collect();
            next_backend += v.backends.len() as u32;
            let weights: Vec<u32> = v.backends.iter().map(|b| b.weight).collect();
            let table: Vec<u32> = weighted_fill(&weights, v.table_size)
                .into_iter()
                .map(|b| backend_ids[b as usize])
                .collect();
            let info = VipInfo {
                id: i as u32,
                mode: match v.mode {
                    ForwardingMode::Dr => MODE_DR,
                },
                table_offset: next_slot,
                // An empty table (no weighted backend) makes the program drop as no-backend.
                table_size: table.len() as u32,
            };
            next_slot += v.table_size;
            let key = VipKey {
                addr: addr::from_ip(v.address),
                port_be: v.port.to_be(),
                proto: v.protocol.number(),
                _pad: 0,
            };
            VipPlan {
                index: i,
                key,
                info,
                backend_ids,
                table,
            }
        })
        .collect()
}

/// The `BACKENDS` entry for a backend, with its MAC once resolved.
pub fn backend_entry(address: std::net::IpAddr, port: u16, mac: Option<[u8; 6]>) -> Backend {
    Backend {
        addr: addr::from_ip(address),
        mac: mac.unwrap_or_default(),
        port_be: port.to_be(),
        flags: BACKEND_F_PRESENT
            | if mac.is_some() {
                BACKEND_F_MAC_VALID
            } else {
                0
            },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn vips_get_disjoint_tables_and_backend_ids() {
        let c = config::parse(
            r#"
            [agent]
            interface = "eth0"
            [[vip]]
            address = "10.0.0.1"
            port = 80
            protocol = "tcp"
            table_size = 7
            [[vip.backend]]
            address = "10.0.0.2"
            [[vip.backend]]
            address = "10.0.0.3"
            weight = 0
            [[vip]]
            address = "10.0.0.1"
            port = 80
            protocol = "udp"
            table_size = 5
            [[vip.backend]]
            address = "10.0.0.4"
            [[vip]]
            address = "10.0.0.1"
            port = 53
            protocol = "udp"
            "#,
        )
        .unwrap();
        let p = vips(&c);
        assert_eq!(
            p[0].info,
            VipInfo {
                id: 0,
                mode: MODE_DR,
                table_offset: 0,
                table_size: 7
            }
        );
        assert_eq!(p[0].backend_ids, [0, 1]);
        assert_eq!(p[0].table, [0; 7], "weight 0 gets no slots");
        assert_eq!(
            p[1].info,
            VipInfo {
                id: 1,
                mode: MODE_DR,
                table_offset: 7,
                table_size: 5
            }
        );
        assert_eq!(p[1].table, [2; 5]);
        assert_eq!(p[2].info.table_offset, 12);
        assert_eq!(p[2].info.table_size, 0, "no backends: empty table");
        assert_eq!(p[1].key.port_be, 80u16.to_be());
        assert_eq!(p[1].key.proto, 17);
    }

    #[test]
    fn backend_is_valid_only_with_a_mac() {
        let ip = "10.0.0.2".parse().unwrap();
        assert_eq!(backend_entry(ip, 80, None).flags, BACKEND_F_PRESENT);
        let b = backend_entry(ip, 80, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(b.flags, BACKEND_F_PRESENT | BACKEND_F_MAC_VALID);
        assert_eq!(b.mac, [2, 0, 0, 0, 0, 1]);
    }
}
