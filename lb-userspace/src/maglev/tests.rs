use std::net::{IpAddr, Ipv4Addr};

use super::*;

const M: u32 = 65_537;

fn key(i: u32) -> BackendKey {
    BackendKey {
        address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
        port: 80,
    }
}

fn backends(n: u32, weight: impl Fn(u32) -> u32) -> Vec<(BackendKey, u32)> {
    (0..n).map(|i| (key(i), weight(i))).collect()
}

/// Slot → backend key, so tables over different input orders compare by identity.
fn by_key(table: &[u32], set: &[(BackendKey, u32)]) -> Vec<Option<BackendKey>> {
    table
        .iter()
        .map(|&i| (i != EMPTY).then(|| set[i as usize].0))
        .collect()
}

fn moved_fraction(a: &[Option<BackendKey>], b: &[Option<BackendKey>]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
}

/// The paper's algorithm written out plainly: full permutations up front, then rounds.
fn reference(set: &[(BackendKey, u32)], size: u32, seed: u32) -> Vec<u32> {
    let m = size as usize;
    let mut sorted: Vec<usize> = (0..set.len()).filter(|&i| set[i].1 > 0).collect();
    sorted.sort_by_key(|&i| set[i].0);
    let permutation: Vec<Vec<usize>> = sorted
        .iter()
        .map(|&i| {
            let b = set[i].0.bytes();
            let offset = (xxh3_64_with_seed(&b, seed as u64) % size as u64) as usize;
            let skip = (xxh3_64_with_seed(&b, seed as u64 ^ 0x9e37_79b9_7f4a_7c15)
                % (size as u64 - 1)
                + 1) as usize;
            (0..m).map(|j| (offset + j * skip) % m).collect()
        })
        .collect();
    let mut next = vec![0usize; sorted.len()];
    let mut entry = vec![EMPTY; m];
    let mut n = 0;
    while n < m && !sorted.is_empty() {
        for (k, &i) in sorted.iter().enumerate() {
            for _ in 0..set[i].1 {
                if n == m {
                    break;
                }
                let mut c = permutation[k][next[k]];
                while entry[c] != EMPTY {
                    next[k] += 1;
                    c = permutation[k][next[k]];
                }
                entry[c] = i as u32;
                next[k] += 1;
                n += 1;
            }
        }
    }
    entry
}

#[test]
fn shares_follow_weights_for_3_to_1000_backends() {
    for n in [3u32, 10, 100, 1000] {
        for (label, weight) in [
            ("equal", &(|_| 1u32) as &dyn Fn(u32) -> u32),
            ("1..=4", &|i| i % 4 + 1),
        ] {
            let set = backends(n, weight);
            let table = build(&set, M, 7);
            let total_weight: u32 = set.iter().map(|(_, w)| w).sum();
            let mut counts = vec![0u32; n as usize];
            for &b in &table {
                counts[b as usize] += 1;
            }
            for (i, &(_, w)) in set.iter().enumerate() {
                let expected = M as f64 * w as f64 / total_weight as f64;
                let got = counts[i] as f64;
                // Within 1% of the table in absolute terms, and never more than one
                // round's claim (its weight) away from the exact share.
                assert!(
                    (got - expected).abs() / M as f64 <= 0.01,
                    "{n} {label}: backend {i} {got} vs {expected}"
                );
                assert!(
                    (got - expected).abs() <= w as f64 + 1.0,
                    "{n} {label}: backend {i} {got} vs {expected:.1}"
                );
            }
        }
    }
}

#[test]
fn removing_one_of_n_moves_its_slots_and_at_most_one_percent_more() {
    for n in [3u32, 10, 100, 1000] {
        let set = backends(n, |_| 1);
        let before = by_key(&build(&set, M, 7), &set);
        for removed in [0, n / 2, n - 1] {
            let smaller: Vec<_> = set
                .iter()
                .copied()
                .filter(|(k, _)| *k != key(removed))
                .collect();
            let after = by_key(&build(&smaller, M, 7), &smaller);
            let moved = moved_fraction(&before, &after);
            let collateral = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| **b != Some(key(removed)) && b != a)
                .count();
            assert!(
                moved <= 1.0 / n as f64 + 0.01,
                "{n}: removing {removed} moved {moved:.4}"
            );
            assert!(
                collateral as f64 / M as f64 <= 0.01,
                "{n}: {collateral} slots of staying backends moved"
            );
        }
    }
}

#[test]
fn adding_one_to_n_moves_about_one_in_n_plus_one() {
    for n in [3u32, 10, 100, 1000] {
        let set = backends(n, |_| 1);
        let before = by_key(&build(&set, M, 7), &set);
        let mut bigger = set.clone();
        bigger.push((key(n + 5000), 1));
        let after = by_key(&build(&bigger, M, 7), &bigger);
        let moved = moved_fraction(&before, &after);
        let ideal = 1.0 / (n as f64 + 1.0);
        assert!(
            (moved - ideal).abs() <= 0.01,
            "{n}: adding moved {moved:.4}, ideal {ideal:.4}"
        );
    }
}

#[test]
fn input_order_does_not_matter() {
    let set = backends(100, |i| i % 3 + 1);
    let mut reversed = set.clone();
    reversed.reverse();
    let mut interleaved: Vec<_> = set
        .iter()
        .step_by(2)
        .chain(set.iter().skip(1).step_by(2))
        .copied()
        .collect();
    interleaved.rotate_left(17);
    let a = by_key(&build(&set, M, 7), &set);
    assert_eq!(a, by_key(&build(&reversed, M, 7), &reversed));
    assert_eq!(a, by_key(&build(&interleaved, M, 7), &interleaved));
}

#[test]
fn matches_a_straightforward_implementation() {
    for (n, size, seed) in [
        (3u32, 13u32, 0u32),
        (10, 65_537, 7),
        (37, 65_537, 0xdead_beef),
        (5, 655_373, 1),
    ] {
        let set = backends(n, |i| i % 3 + 1);
        assert_eq!(
            build(&set, size, seed),
            reference(&set, size, seed),
            "n={n} size={size} seed={seed}"
        );
    }
}

#[test]
fn seed_changes_the_table_and_weight_zero_claims_nothing() {
    let set = backends(10, |i| if i == 3 { 0 } else { 1 });
    let a = build(&set, M, 1);
    assert_ne!(a, build(&set, M, 2));
    assert!(!a.contains(&3));
    assert!(!a.contains(&EMPTY));
    assert!(build(&backends(3, |_| 0), 13, 0)
        .iter()
        .all(|&s| s == EMPTY));
    assert!(build(&[], 13, 0).iter().all(|&s| s == EMPTY));
}
