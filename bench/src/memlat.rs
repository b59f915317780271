//! Memory latency of this machine: dependent reads at random places in a buffer (each
//! read's address comes from the one before, so they cannot overlap). What a packet costs
//! when its flow's state has left the CPU's caches starts from this figure.

use serde::Serialize;

#[derive(Serialize, Clone, Copy)]
pub struct Latency {
    pub bytes: usize,
    pub ns_per_read: f64,
}

/// The latency of a dependent read in buffers of each of `sizes` bytes.
pub fn measure(sizes: &[usize]) -> Vec<Latency> {
    sizes
        .iter()
        .map(|&bytes| Latency {
            bytes,
            ns_per_read: chase(bytes / std::mem::size_of::<usize>()),
        })
        .collect()
}

fn chase(slots: usize) -> f64 {
    // One random cycle through every slot (Sattolo's algorithm), so the walk visits them
    // all in an order no prefetcher predicts.
    let mut next: Vec<usize> = (0..slots).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..slots).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % i as u64) as usize;
        next.swap(i, j);
    }
    let reads = 5_000_000;
    let mut at = 0;
    // Warm the page tables and whatever of the buffer the caches hold.
    for _ in 0..slots.min(reads) {
        at = next[at];
    }
    let start = std::time::Instant::now();
    for _ in 0..reads {
        at = next[at];
    }
    let elapsed = start.elapsed();
    std::hint::black_box(at);
    elapsed.as_nanos() as f64 / reads as f64
}
