//! Fills a VIP's lookup table: slot → backend index. Any table where each backend's share
//! of slots follows its weight balances correctly, because the flow hash spreads flows
//! uniformly over slots. (Maglev, which also minimises disruption on change, replaces this.)

/// Returns `size` slots, each holding an index into `weights`, with every backend owning
/// a share of slots proportional to its weight. Empty when no backend has weight.
pub fn weighted_fill(weights: &[u32], size: u32) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    if total == 0 || size == 0 {
        return Vec::new();
    }
    // Interleave (smooth weighted round robin) so neighbouring slots differ: a biased hash
    // over a narrow slot range still spreads.
    let mut current = vec![0i64; weights.len()];
    (0..size)
        .map(|_| {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += w as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            best as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights_exactly_within_one_slot() {
        let weights = [1, 2, 3, 0];
        let table = weighted_fill(&weights, 65_537);
        assert_eq!(table.len(), 65_537);
        let mut counts = [0u32; 4];
        for &b in &table {
            counts[b as usize] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let want = 65_537.0 * w as f64 / 6.0;
            assert!((counts[i] as f64 - want).abs() <= 1.0, "{counts:?}");
        }
    }

    #[test]
    fn no_weight_means_no_table() {
        assert!(weighted_fill(&[], 7).is_empty());
        assert!(weighted_fill(&[0, 0], 7).is_empty());
    }
}
