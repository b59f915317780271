//! Maglev: how long a table takes to build, how long a backend change takes to reach the
//! kernel's map, and how many flows it moves. The map write is compared, in the same run,
//! with rewriting the whole table one `bpf_map_update_elem` per slot.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lb_common::flow::flow_hash;
use lb_tests::program::flow_key;
use lb_userspace::{
    dataplane::{Dataplane, EBPF_OBJECT},
    maglev::{self, BackendKey},
};
use serde::Serialize;

const SIZES: [u32; 2] = [65_537, 655_373];
const BACKENDS: [u32; 3] = [10, 100, 1000];
const SEED: u32 = 0;
const FLOWS: u32 = 1_000_000;

#[derive(Serialize)]
struct Row {
    backends: u32,
    table_size: u32,
    build_ms: f64,
    /// Build of the new table plus writing the changed slots into the kernel map.
    change_to_written_ms: f64,
    slots_written: usize,
    /// Baseline: every slot rewritten with one syscall each.
    syscall_rewrite_ms: f64,
    flows_moved_remove_one: f64,
    ideal_remove_one: f64,
    flows_moved_add_one: f64,
    ideal_add_one: f64,
}

fn set(n: u32) -> Vec<(BackendKey, u32)> {
    (0..n)
        .map(|i| {
            (
                BackendKey {
                    address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                    port: 80,
                },
                1,
            )
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// Fraction of `FLOWS` pseudo-random flows whose backend differs between two tables.
fn flows_moved(
    a: &[u32],
    a_set: &[(BackendKey, u32)],
    b: &[u32],
    b_set: &[(BackendKey, u32)],
) -> f64 {
    let m = a.len() as u32;
    let mut moved = 0;
    for i in 0..FLOWS {
        let key = flow_key(
            IpAddr::V4(Ipv4Addr::from(0xc000_0000 ^ i.wrapping_mul(2_654_435_761))),
            (i % 28_000) as u16 + 32_768,
            IpAddr::V4(Ipv4Addr::new(10, 99, 0, 50)),
            80,
            6,
        );
        let slot = (flow_hash(&key, SEED) % m) as usize;
        if a_set[a[slot] as usize].0 != b_set[b[slot] as usize].0 {
            moved += 1;
        }
    }
    moved as f64 / FLOWS as f64
}

pub fn run(out_dir: &Path, rounds: usize) -> anyhow::Result<()> {
    let capacity = SIZES[1];
    let mut dp =
        Dataplane::load(capacity, 1024).context("loading the XDP program (run as root)")?;
    let mut raw = aya::EbpfLoader::new()
        .map_max_entries("BACKEND_TABLE", capacity)
        .load(EBPF_OBJECT)?;
    let mut raw_table = aya::maps::Array::<_, u32>::try_from(
        raw.map_mut("BACKEND_TABLE").context("BACKEND_TABLE")?,
    )?;

    let mut rows = Vec::new();
    for &size in &SIZES {
        for &n in &BACKENDS {
            let full = set(n);
            let builds = (0..rounds).map(|_| {
                let t = Instant::now();
                std::hint::black_box(maglev::build(&full, size, SEED));
                t.elapsed()
            });
            let build_ms = median(builds.collect());
            let before = maglev::build(&full, size, SEED);
            let smaller: Vec<_> = full[1..].to_vec();
            let mut bigger = full.clone();
            bigger.push((
                BackendKey {
                    address: IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
                    port: 80,
                },
                1,
            ));

            // A backend removed, then restored, `rounds` times: each change is a Maglev
            // build plus the diff written into the live map.
            let mut changes = Vec::new();
            let mut slots_written = 0;
            for _ in 0..rounds {
                dp.write_table(0, &before)?;
                let t = Instant::now();
                let removed: Vec<u32> = maglev::build(&smaller, size, SEED)
                    .into_iter()
                    .map(|i| i + 1)
                    .collect();
                slots_written = dp.write_table(0, &removed)?;
                changes.push(t.elapsed());
            }
            let change_ms = median(changes);
            // The map holds the new table, read back through the same mapping the program
            // reads (after the last round's write).
            let expected: Vec<u32> = maglev::build(&smaller, size, SEED)
                .into_iter()
                .map(|i| i + 1)
                .collect();
            anyhow::ensure!(
                dp.read_table(0, size) == expected,
                "{n} backends, {size} slots: the map does not hold the table just written"
            );
            anyhow::ensure!(
                slots_written > 0 && slots_written < size as usize,
                "{n} backends, {size} slots: {slots_written} slots written for one backend removed"
            );
            let syscalls: Vec<Duration> = (0..rounds.min(3))
                .map(|_| {
                    let t = Instant::now();
                    for (i, &v) in before.iter().enumerate() {
                        raw_table.set(i as u32, v, 0)?;
                    }
                    Ok(t.elapsed())
                })
                .collect::<anyhow::Result<_>>()?;

            for (i, &v) in before.iter().enumerate().step_by(997) {
                anyhow::ensure!(
                    raw_table.get(&(i as u32), 0)? == v,
                    "slot {i} not rewritten by the syscall baseline"
                );
            }

            let after_remove = maglev::build(&smaller, size, SEED);
            let after_add = maglev::build(&bigger, size, SEED);
            let (moved_remove, moved_add) = (
                flows_moved(&before, &full, &after_remove, &smaller),
                flows_moved(&before, &full, &after_add, &bigger),
            );
            // A removed backend's own flows must all move, a new one must get its share, and
            // Maglev's collateral stays small.
            for (moved, ideal, what) in [
                (moved_remove, 1.0 / n as f64, "removed"),
                (moved_add, 1.0 / (n as f64 + 1.0), "added"),
            ] {
                anyhow::ensure!(
                    moved >= 0.9 * ideal && moved <= ideal + 0.02,
                    "{n} backends, {size} slots, one {what}: {moved:.4} of the flows moved \
                     (ideal {ideal:.4})"
                );
            }
            rows.push(Row {
                backends: n,
                table_size: size,
                build_ms,
                change_to_written_ms: change_ms,
                slots_written,
                syscall_rewrite_ms: median(syscalls),
                flows_moved_remove_one: moved_remove,
                ideal_remove_one: 1.0 / n as f64,
                flows_moved_add_one: moved_add,
                ideal_add_one: 1.0 / (n as f64 + 1.0),
            });
        }
    }

    println!("Maglev (median of {rounds}; flows moved over {FLOWS} flows)");
    println!(
        "{:>8} {:>8} {:>9} {:>14} {:>9} {:>15} {:>17} {:>15}",
        "backends",
        "slots",
        "build ms",
        "change->map ms",
        "written",
        "syscall-all ms",
        "moved -1 (ideal)",
        "moved +1 (ideal)"
    );
    for r in &rows {
        println!(
            "{:>8} {:>8} {:>9.2} {:>14.2} {:>9} {:>15.1} {:>8.4} ({:.4}) {:>7.4} ({:.4})",
            r.backends,
            r.table_size,
            r.build_ms,
            r.change_to_written_ms,
            r.slots_written,
            r.syscall_rewrite_ms,
            r.flows_moved_remove_one,
            r.ideal_remove_one,
            r.flows_moved_add_one,
            r.ideal_add_one
        );
    }
    let report = serde_json::json!({ "benchmark": "maglev", "machine": crate::machine::describe(), "rounds": rounds, "rows": rows });
    let path = out_dir.join("maglev.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}
