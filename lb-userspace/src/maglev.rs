//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): each backend walks its own
//! permutation of the table and claims the first free slot, round after round, until the
//! table is full. A change to the backend set then moves few slots besides the ones that
//! must move.
//!
//! Deterministic across nodes and restarts: backends are identified by their address and
//! port, sorted before filling, and hashed with a fixed algorithm (xxh3) seeded by the
//! cluster's `hash_seed`. Insertion order, process and time play no part.
//!
//! Weights: in every round a backend claims as many slots as its weight, so shares follow
//! integer weights. Weight 0 claims nothing (drained).

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// What identifies a backend for hashing: the same on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub address: IpAddr,
    pub port: u16,
}

impl BackendKey {
    fn bytes(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        let v6 = match self.address {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        b[..16].copy_from_slice(&v6.octets());
        b[16..].copy_from_slice(&self.port.to_be_bytes());
        b
    }
}

/// A slot that no backend claimed (only when every weight is 0).
pub const EMPTY: u32 = u32::MAX;

/// Builds a table of `size` slots (a prime). Each slot holds an index into `backends`,
/// or [`EMPTY`] if no backend has weight.
pub fn build(backends: &[(BackendKey, u32)], size: u32, seed: u32) -> Vec<u32> {
    let m = size as u64;
    let mut table = vec![EMPTY; size as usize];
    // Fill in a canonical order so the result does not depend on the caller's order.
    let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
    order.sort_by_key(|&i| backends[i].0);
    if order.is_empty() || m < 2 {
        return table;
    }
    // offset and skip define each backend's permutation: offset + j*skip (mod m); skip is
    // never 0 and m is prime, so the walk visits every slot.
    let walks: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let bytes = backends[i].0.bytes();
            let offset = xxh3_64_with_seed(&bytes, seed as u64) % m;
            let skip =
                xxh3_64_with_seed(&bytes, (seed as u64) ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; order.len()];
    let mut filled = 0u64;
    'rounds: loop {
        for (k, &i) in order.iter().enumerate() {
            let (offset, skip) = walks[k];
            for _ in 0..backends[i].1 {
                let slot = loop {
                    let s = (offset + next[k] * skip) % m;
                    next[k] += 1;
                    if table[s as usize] == EMPTY {
                        break s;
                    }
                };
                table[slot as usize] = i as u32;
                filled += 1;
                if filled == m {
                    break 'rounds;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests;
