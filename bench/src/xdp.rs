//! Per-packet cost of the XDP program, timed by the kernel (`BPF_PROG_TEST_RUN` with
//! `repeat`), beside two baselines loaded from the same object in the same run: an empty
//! XDP_PASS program (the harness's own cost) and a MAC-swapping XDP_TX program (the least
//! a forwarding program does).

use std::{path::Path, time::Duration};

use anyhow::{anyhow, Context as _};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_tests::{frames, program::Harness};
use lb_userspace::dataplane::HELPERS_OBJECT;
use serde::Serialize;

#[derive(Serialize)]
struct Case {
    name: &'static str,
    program: &'static str,
    frame_bytes: usize,
    min_ns: f64,
    median_ns: f64,
    /// Median minus the XDP_TX baseline's median.
    over_tx_baseline_ns: f64,
    mpps_per_core: f64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: crate::machine::Machine,
    repeat: u32,
    rounds: usize,
    cases: Vec<Case>,
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ns = |d: Duration| d.as_secs_f64() * 1e9;
    (ns(samples[0]), ns(samples[samples.len() / 2]))
}

/// Times a program of the helper object (baselines and flow-table probes).
fn time_baseline(
    program: &str,
    frame: &[u8],
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut ebpf =
        aya::Ebpf::load(HELPERS_OBJECT).context("loading the helper XDP object (run as root)")?;
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("no program {program}"))?
        .try_into()?;
    prog.load()?;
    let mut out = vec![0u8; frame.len() + 256];
    (0..rounds)
        .map(|_| {
            let r = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..Default::default()
            })?;
            Ok(r.duration)
        })
        .collect()
}

pub fn run(out_dir: &Path, repeat: u32, rounds: usize) -> anyhow::Result<()> {
    let vip_tcp = frames::vip_tcp_established(40000);
    let vip_syn = frames::vip_tcp(40000);
    let non_vip = frames::tcp(lb_tests::program::CLIENT, 40000, "10.99.0.10".parse()?, 80);
    let arp = frames::arp_who_has_vip();
    let mut harness = Harness::load();
    let mut lb = |frame: &[u8]| -> anyhow::Result<Vec<Duration>> {
        (0..rounds)
            .map(|_| harness.dp.time_run(frame, repeat))
            .collect()
    };

    let measured: Vec<(&'static str, &'static str, usize, Vec<Duration>)> = vec![
        (
            "empty program, XDP_PASS",
            "xdp_pass",
            vip_tcp.len(),
            time_baseline("xdp_pass", &vip_tcp, repeat, rounds)?,
        ),
        (
            "swap MACs, XDP_TX (baseline)",
            "xdp_tx_baseline",
            vip_tcp.len(),
            time_baseline("xdp_tx_baseline", &vip_tcp, repeat, rounds)?,
        ),
        (
            "VIP TCP established, forwarded",
            "xdp_lb",
            vip_tcp.len(),
            lb(&vip_tcp)?,
        ),
        (
            "VIP TCP SYN (new flow), forwarded",
            "xdp_lb",
            vip_syn.len(),
            lb(&vip_syn)?,
        ),
        (
            "non-VIP TCP, passed",
            "xdp_lb",
            non_vip.len(),
            lb(&non_vip)?,
        ),
        ("ARP, passed", "xdp_lb", arp.len(), lb(&arp)?),
        (
            "flow table hit, shared LRU",
            "flow_lru_shared",
            vip_tcp.len(),
            time_baseline("flow_lru_shared", &vip_tcp, repeat, rounds)?,
        ),
        (
            "flow table hit, per-CPU LRU",
            "flow_lru_percpu",
            vip_tcp.len(),
            time_baseline("flow_lru_percpu", &vip_tcp, repeat, rounds)?,
        ),
    ];
    let tx_median = stats(measured[1].3.clone()).1;
    let cases: Vec<Case> = measured
        .into_iter()
        .map(|(name, program, frame_bytes, samples)| {
            let (min_ns, median_ns) = stats(samples);
            Case {
                name,
                program,
                frame_bytes,
                min_ns,
                median_ns,
                over_tx_baseline_ns: median_ns - tx_median,
                mpps_per_core: 1e3 / median_ns,
            }
        })
        .collect();

    println!(
        "XDP per-packet cost (BPF_PROG_TEST_RUN, {repeat} runs x {rounds} rounds, kernel-timed)"
    );
    println!(
        "{:<34} {:<16} {:>9} {:>11} {:>13} {:>11}",
        "case", "program", "min ns", "median ns", "vs TX base", "Mpps/core"
    );
    for c in &cases {
        println!(
            "{:<34} {:<16} {:>9.1} {:>11.1} {:>+13.1} {:>11.1}",
            c.name, c.program, c.min_ns, c.median_ns, c.over_tx_baseline_ns, c.mpps_per_core
        );
    }
    let report = Report {
        benchmark: "xdp_per_packet",
        machine: crate::machine::describe(),
        repeat,
        rounds,
        cases,
    };
    let path = out_dir.join("xdp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}
