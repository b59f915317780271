//! Control plane: the time an `lbctl` change takes end to end, and one table that gathers
//! the other benchmarks' control-plane figures from their JSON results.
//!
//! An `lbctl` change is timed from spawning the process to its exit: process start, the
//! request on the control socket, the agent validating the edit, rebuilding the VIP's
//! Maglev table and writing the difference into the maps, and the reply (the agent
//! replies after the maps are written). Beside it, in the same run, `lbctl status`: the same
//! round trip with nothing to change. After every change the agent's `state` (the config
//! and a snapshot read back from the kernel's maps) must differ from the one before, or
//! the figure is refused.

use std::{path::Path, time::Instant};

use anyhow::{ensure, Result};
use lb_tests::{agent::lbctl, Lab};
use lb_userspace::control::Command;
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
struct Row {
    change: &'static str,
    command: String,
    /// Whether the maps must differ afterwards (false for the `status` baseline).
    changes_maps: bool,
    ms: Vec<f64>,
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
    /// Median minus the `status` baseline's median: the agent's share.
    over_baseline_ms: f64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: crate::machine::Machine,
    rounds: usize,
    backends: usize,
    table_size: u32,
    rows: Vec<Row>,
}

/// A change and the one that undoes it, so every timed call changes something.
struct Case {
    name: &'static str,
    forth: &'static [&'static str],
    back: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "nothing (lbctl status, baseline)",
        forth: &["status"],
        back: &["status"],
    },
    Case {
        name: "backend weight",
        forth: &["backend", "weight", "web", "10.99.0.21", "3"],
        back: &["backend", "weight", "web", "10.99.0.21", "1"],
    },
    Case {
        name: "backend drain / undrain",
        forth: &["backend", "drain", "web", "10.99.0.22"],
        back: &["backend", "undrain", "web", "10.99.0.22"],
    },
    Case {
        name: "backend add / del",
        forth: &["backend", "add", "web", "10.99.0.24"],
        back: &["backend", "del", "web", "10.99.0.24"],
    },
    Case {
        name: "vip add / del",
        forth: &["vip", "add", "10.99.0.51:80/tcp", "--name", "extra"],
        back: &["vip", "del", "extra"],
    },
];

pub fn run(out_dir: &Path, rounds: usize) -> Result<()> {
    let lab = Lab::new()?;
    let lbd = lab.start_lbd(&lab.write_lbd_config(""))?;
    let socket = lbd.socket().to_owned();
    let state = || -> Result<Value> { lbd.request(&Command::State) };

    let mut rows = Vec::new();
    for case in CASES {
        let changes_maps = case.forth[0] != "status";
        let mut ms = Vec::new();
        for round in 0..rounds {
            for args in [case.forth, case.back] {
                let before = state()?;
                let t = Instant::now();
                let (code, out) = lbctl(&socket, args);
                let took = t.elapsed();
                ensure!(code == 0, "lbctl {} failed ({code}): {out}", args.join(" "));
                if changes_maps {
                    ensure!(
                        state()? != before,
                        "lbctl {} succeeded but the agent's maps did not change",
                        args.join(" ")
                    );
                }
                // The first round warms the page cache for the binary; it is not counted.
                if round > 0 || rounds == 1 {
                    ms.push(took.as_secs_f64() * 1e3);
                }
            }
        }
        ms.sort_by(f64::total_cmp);
        rows.push(Row {
            change: case.name,
            command: format!(
                "lbctl {} | lbctl {}",
                case.forth.join(" "),
                case.back.join(" ")
            ),
            changes_maps,
            min_ms: ms[0],
            median_ms: ms[ms.len() / 2],
            max_ms: ms[ms.len() - 1],
            over_baseline_ms: 0.0,
            ms,
        });
    }
    let base = rows[0].median_ms;
    for r in &mut rows {
        r.over_baseline_ms = r.median_ms - base;
    }
    drop(lbd);

    println!(
        "lbctl change, end to end (process start to exit, maps written), 3 backends, 65,537 slots; \
         {} calls per row",
        rows[0].ms.len()
    );
    println!(
        "{:<34} {:>8} {:>10} {:>8} {:>12}",
        "change", "min ms", "median ms", "max ms", "vs status"
    );
    for r in &rows {
        println!(
            "{:<34} {:>8.2} {:>10.2} {:>8.2} {:>+12.2}",
            r.change, r.min_ms, r.median_ms, r.max_ms, r.over_baseline_ms
        );
    }
    let report = Report {
        benchmark: "control",
        machine: crate::machine::describe(),
        rounds,
        backends: lab.backends().len(),
        table_size: 65_537,
        rows,
    };
    let path = out_dir.join("control.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// The control-plane table: failover gap, health-check detection, Maglev build and update,
/// `lbctl` change, from the JSON the benchmarks wrote to `dir` (a benchmark not run yet
/// shows as such).
pub fn summary(dir: &Path) -> Result<()> {
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let median = |v: &Value| -> f64 {
        let mut xs: Vec<f64> = v
            .as_array()
            .map(|a| a.iter().map(f).collect())
            .unwrap_or_default();
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
    };

    match read("failover.json") {
        Some(j) => {
            for s in j["scenarios"].as_array().into_iter().flatten() {
                if s["implementation"] != "lbd" {
                    continue;
                }
                let keepalived = j["scenarios"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|k| {
                        k["implementation"] == "keepalived"
                            && k["event"] == s["event"]
                            && k["advert_interval_ms"] == s["advert_interval_ms"]
                    })
                    .map_or(String::new(), |k| {
                        format!(" (keepalived {:.0} ms)", f(&k["median_ms"]))
                    });
                rows.push((
                    format!(
                        "failover gap, master {}, {} ms adverts",
                        s["event"].as_str().unwrap_or("?"),
                        f(&s["advert_interval_ms"])
                    ),
                    format!("{:.0} ms{keepalived}", f(&s["median_ms"])),
                    format!(
                        "{} runs, median",
                        s["gaps_ms"].as_array().map_or(0, Vec::len)
                    ),
                ));
            }
        }
        None => rows.push(("failover gap".into(), "not measured".into(), String::new())),
    }
    match read("health.json") {
        Some(j) => {
            for k in j["kinds"].as_array().into_iter().flatten() {
                rows.push((
                    format!(
                        "health: {} backend down detected",
                        k["kind"].as_str().unwrap_or("?")
                    ),
                    format!("{:.0} ms", median(&k["detect_ms"])),
                    format!(
                        "interval {} ms x fall {}, timeout {} ms; up again {:.0} ms",
                        j["interval_ms"],
                        j["fall"],
                        j["timeout_ms"],
                        median(&k["recover_ms"])
                    ),
                ));
            }
        }
        None => rows.push((
            "health detection".into(),
            "not measured".into(),
            String::new(),
        )),
    }
    match read("maglev.json") {
        Some(j) => {
            for r in j["rows"].as_array().into_iter().flatten() {
                if r["table_size"] != 65_537 {
                    continue;
                }
                rows.push((
                    format!("Maglev, {} backends x 65,537 slots", r["backends"]),
                    format!(
                        "build {:.2} ms, change to map {:.2} ms",
                        f(&r["build_ms"]),
                        f(&r["change_to_written_ms"])
                    ),
                    format!(
                        "flows moved, one backend removed: {:.2} % (ideal {:.2} %)",
                        f(&r["flows_moved_remove_one"]) * 100.0,
                        f(&r["ideal_remove_one"]) * 100.0
                    ),
                ));
            }
        }
        None => rows.push(("Maglev".into(), "not measured".into(), String::new())),
    }
    match read("control.json") {
        Some(j) => {
            for r in j["rows"].as_array().into_iter().flatten() {
                rows.push((
                    format!("lbctl: {}", r["change"].as_str().unwrap_or("?")),
                    format!("{:.1} ms", f(&r["median_ms"])),
                    format!(
                        "end to end; {:+.1} ms over status",
                        f(&r["over_baseline_ms"])
                    ),
                ));
            }
        }
        None => rows.push(("lbctl change".into(), "not measured".into(), String::new())),
    }

    // Markdown, so it goes into bench/README.md as it is.
    println!("Control plane (from {})\n", dir.display());
    println!("| what | median | conditions |\n|---|---|---|");
    for (a, b, c) in &rows {
        println!("| {a} | {b} | {c} |");
    }
    Ok(())
}
