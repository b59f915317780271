//! Per-packet cost of the XDP program (DR and NAT, IPv4 and IPv6), timed by the kernel
//! (`BPF_PROG_TEST_RUN` with `repeat`), against two baselines loaded from the helper object
//! and measured in every round, right before the cases of that round: an empty XDP_PASS
//! program (the harness's own cost) and a MAC-swapping XDP_TX program (the least a
//! forwarding program does). Each case is reported as ns per packet (min / median / max over
//! the rounds) and as the ratio to its own round's baseline.
//!
//! Every measurement is checked with the program's own counters: each run must count its
//! case's reason once and nothing else, and must have found its flow pinned (or not, for a
//! new flow) as the case intends. A case that fails a check is refused: printed as such,
//! left out of the figures, and the runner exits with an error.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_common::{
    flow::DEFAULT_FLOW_CAPACITY,
    stats::{Reason, Verdict},
    vip::{VipInfo, MODE_DR},
};
use lb_tests::{
    frames::{self, Frame},
    program::{backend, vip_key_of, Harness, HARNESS_SLOTS, SEED},
};
use lb_userspace::{dataplane::HELPERS_OBJECT, maglev};
use serde::Serialize;

/// The large DR VIP (TCP/80 and UDP/80): [`BIG_BACKENDS`] backends on [`BIG_SLOTS`] slots.
const BIG_VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const BIG_BACKENDS: u32 = 100;
const BIG_SLOTS: u32 = 65_537;
/// Backend ids of the large VIP start here (the harness uses 0..16).
const BIG_BACKEND_BASE: u32 = 16;
/// VIP ids: the harness's are 0..10.
const BIG_VIP_IDS: [u32; 2] = [10, 11];
/// The many-VIPs configuration: this many more TCP/80 VIPs (10.101.x.y) over the large
/// VIP's table, ids from `MANY_VIP_BASE`.
const MANY_VIPS: u32 = 1_000;
const MANY_VIP_BASE: u32 = 12;
/// Distinct flows of the cycling cases (`bench_cycle` counts source ports modulo this).
const CYCLE: u32 = 65_536;

/// Targets from the issue: median ratio to the case's baseline.
const TARGET_ESTABLISHED: f64 = 2.6;
const TARGET_NEW_FLOW: f64 = 6.0;
const TARGET_NOT_VIP: f64 = 1.6;

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Baseline {
    /// `xdp_pass`: for cases that pass the frame to the kernel.
    Pass,
    /// `xdp_tx_baseline`: for cases that forward.
    Tx,
}

/// What every run of a case must do.
#[derive(Clone, Copy)]
struct Expect {
    verdict: Verdict,
    /// The reason each run counts; `None`: an entry point that counts nothing.
    reason: Option<Reason>,
    /// One run in how many is balanced through the lookup table (a new flow) rather than
    /// by its flow's entry: 1 for new flows, 0 for none; `None` for cases that do not
    /// balance.
    hashed: Option<u64>,
    /// One run in how many is forwarded from the flow cache (`FLOW_STAT_CACHE_HITS`), the
    /// same way; `None` where it varies (flows that do not all fit the cache).
    cached: Option<u64>,
}

struct Spec {
    name: String,
    program: &'static str,
    frame: Vec<u8>,
    ifindex: u32,
    /// Runs per measurement (one `BPF_PROG_TEST_RUN` call).
    runs: u32,
    baseline: Baseline,
    expect: Expect,
    /// Measured right after the case in the same round: its excess over the TX baseline
    /// is subtracted from the case (the benchmark entry point's own work).
    floor: Option<&'static str>,
    target: Option<f64>,
}

#[derive(Serialize)]
struct Case {
    name: String,
    program: &'static str,
    frame_bytes: usize,
    runs_per_round: u64,
    baseline: Baseline,
    /// `None` when refused.
    #[serde(flatten)]
    figures: Option<Figures>,
    /// Target for the median ratio, if the issue sets one.
    target_ratio: Option<f64>,
    met: Option<bool>,
    /// Why the figures were refused.
    refused: Option<String>,
}

#[derive(Serialize, Clone)]
struct Figures {
    min_ns: f64,
    median_ns: f64,
    max_ns: f64,
    /// ns / the same round's baseline ns.
    ratio_min: f64,
    ratio_median: f64,
    ratio_max: f64,
    mpps_per_core: f64,
}

#[derive(Serialize)]
struct BaselineFigures {
    program: &'static str,
    min_ns: f64,
    median_ns: f64,
    max_ns: f64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: crate::machine::Machine,
    repeat: u32,
    rounds: usize,
    baselines: Vec<BaselineFigures>,
    cases: Vec<Case>,
}

/// min, median, max.
fn spread(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

/// Figures of (ns, ratio to the round's baseline) samples.
fn figures(samples: &[(f64, f64)]) -> Figures {
    let values: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let ratios: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let (min_ns, median_ns, max_ns) = spread(&values);
    let (ratio_min, ratio_median, ratio_max) = spread(&ratios);
    Figures {
        min_ns,
        median_ns,
        max_ns,
        ratio_min: round3(ratio_min),
        ratio_median: round3(ratio_median),
        ratio_max: round3(ratio_max),
        mpps_per_core: round3(1e3 / median_ns),
    }
}

/// The helper object's baseline programs, loaded once.
struct Baselines {
    ebpf: aya::Ebpf,
}

impl Baselines {
    fn load() -> anyhow::Result<Baselines> {
        let mut ebpf = aya::Ebpf::load(HELPERS_OBJECT)
            .context("loading the helper XDP object (run as root)")?;
        for name in ["xdp_pass", "xdp_tx_baseline"] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("no program {name}"))?
                .try_into()?;
            prog.load()?;
        }
        Ok(Baselines { ebpf })
    }

    /// Mean ns per run of `which` over `repeat` runs, its verdict checked.
    fn time(&self, which: Baseline, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
        let (name, verdict) = match which {
            Baseline::Pass => ("xdp_pass", Verdict::Pass),
            Baseline::Tx => ("xdp_tx_baseline", Verdict::Tx),
        };
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        if r.return_value != verdict as u32 {
            bail!(
                "baseline returned {} instead of {verdict:?}",
                r.return_value
            );
        }
        Ok(ns(r.duration))
    }
}

/// The kernel reports whole nanoseconds.
fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Three decimals are more than the figures hold.
fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// The program's counters that the checks compare.
struct Counters {
    reasons: Vec<u64>,
    hashed: u64,
    cached: u64,
}

fn counters(h: &Harness) -> anyhow::Result<Counters> {
    Ok(Counters {
        reasons: h
            .dp
            .reason_counters()?
            .into_iter()
            .map(|(_, c)| c.packets)
            .collect(),
        hashed: h.dp.flows_hashed()?,
        cached: h.dp.flow_cache_hits()?,
    })
}

/// Whether `runs` runs did exactly what `expect` says, judged by the counters. A cached
/// flow takes the full path once a second to refresh its flow-table entry: the runs of
/// `seconds` may fall short of the cache hits expected by that many, and no more.
fn check(
    expect: &Expect,
    runs: u64,
    seconds: f64,
    before: &Counters,
    after: &Counters,
) -> Result<(), String> {
    for (i, (b, a)) in before.reasons.iter().zip(&after.reasons).enumerate() {
        let reason = Reason::ALL[i];
        let want = if expect.reason == Some(reason) {
            runs
        } else {
            0
        };
        if a - b != want {
            return Err(format!(
                "{} counted {} times over {runs} runs, expected {want}",
                reason.name(),
                a - b
            ));
        }
    }
    let refreshes = seconds.ceil() as u64 + 1;
    for (every, got, slack, what) in [
        (
            expect.hashed,
            after.hashed - before.hashed,
            0,
            "balanced through the lookup table",
        ),
        (
            expect.cached,
            after.cached - before.cached,
            refreshes,
            "forwarded from the flow cache",
        ),
    ] {
        let Some(every) = every else { continue };
        let want = runs.checked_div(every).unwrap_or(0);
        if got > want || got + slack < want {
            return Err(format!("{got} of {runs} runs {what}, expected {want}"));
        }
    }
    Ok(())
}

/// One measurement of `spec`: mean ns per run, or why it is refused.
fn measure(h: &mut Harness, spec: &Spec) -> anyhow::Result<Result<f64, String>> {
    let before = counters(h)?;
    let (verdict, d) =
        h.dp.time_program(spec.program, spec.ifindex, &spec.frame, spec.runs)?;
    let mean = ns(d);
    let after = counters(h)?;
    if verdict != spec.expect.verdict as u32 {
        return Ok(Err(format!(
            "verdict {verdict}, expected {:?}",
            spec.expect.verdict
        )));
    }
    let seconds = mean * f64::from(spec.runs) / 1e9;
    Ok(check(&spec.expect, spec.runs as u64, seconds, &before, &after).map(|()| mean))
}

/// Runs `specs` for `rounds` rounds, each round measuring both baselines first.
fn run_rounds(
    h: &mut Harness,
    base: &Baselines,
    specs: &[Spec],
    repeat: u32,
    rounds: usize,
    base_samples: &mut [Vec<f64>; 2],
) -> anyhow::Result<Vec<Case>> {
    let probe = frames::vip_tcp_established(40000);
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); specs.len()];
    let mut refused: Vec<Option<String>> = vec![None; specs.len()];
    for round in 0..rounds {
        let pass = base.time(Baseline::Pass, &probe, repeat)?;
        let tx = base.time(Baseline::Tx, &probe, repeat)?;
        base_samples[0].push(pass);
        base_samples[1].push(tx);
        for (i, spec) in specs.iter().enumerate() {
            if refused[i].is_some() {
                continue;
            }
            let mut value = match measure(h, spec)? {
                Ok(v) => v,
                Err(why) => {
                    refused[i] = Some(format!("round {}: {why}", round + 1));
                    continue;
                }
            };
            if let Some(floor) = spec.floor {
                let (v, d) =
                    h.dp.time_program(floor, spec.ifindex, &spec.frame, repeat)?;
                if v != Verdict::Tx as u32 {
                    refused[i] = Some(format!("floor {floor} returned {v}"));
                    continue;
                }
                value -= ns(d) - tx;
            }
            let b = match spec.baseline {
                Baseline::Pass => pass,
                Baseline::Tx => tx,
            };
            samples[i].push((value, value / b));
        }
    }
    Ok(specs
        .iter()
        .zip(samples)
        .zip(refused)
        .map(|((spec, samples), refused)| {
            let figures = refused.is_none().then(|| figures(&samples));
            Case {
                name: spec.name.clone(),
                program: spec.program,
                frame_bytes: spec.frame.len(),
                runs_per_round: spec.runs as u64,
                baseline: spec.baseline,
                met: spec
                    .target
                    .zip(figures.as_ref())
                    .map(|(t, f)| f.ratio_median <= t),
                figures,
                target_ratio: spec.target,
                refused,
            }
        })
        .collect())
}

fn print(cases: &[Case]) {
    println!(
        "{:<52} {:>7} {:>7} {:>7}  {:>4} {:>6} {:>13} {:>7}",
        "case", "min", "median", "max", "base", "ratio", "(min..max)", "target"
    );
    for c in cases {
        let base = match c.baseline {
            Baseline::Pass => "pass",
            Baseline::Tx => "tx",
        };
        let target = match (c.target_ratio, c.met) {
            (Some(t), Some(true)) => format!("≤{t} ok"),
            (Some(t), _) => format!("≤{t} MISS"),
            _ => String::new(),
        };
        match (&c.figures, &c.refused) {
            (Some(f), _) => println!(
                "{:<52} {:>7.1} {:>7.1} {:>7.1}  {:>4} {:>6.2} {:>13} {:>7}",
                c.name,
                f.min_ns,
                f.median_ns,
                f.max_ns,
                base,
                f.ratio_median,
                format!("{:.2}..{:.2}", f.ratio_min, f.ratio_max),
                target
            ),
            (None, Some(why)) => println!("{:<52} REFUSED: {why}", c.name),
            (None, None) => unreachable!("a case has figures or a refusal"),
        }
    }
}

/// The lookup table of the large VIP: backend ids from [`BIG_BACKEND_BASE`].
fn big_table() -> Vec<u32> {
    let keys: Vec<(maglev::BackendKey, u32)> = (0..BIG_BACKENDS)
        .map(|i| {
            (
                maglev::BackendKey {
                    address: big_backend(i).into(),
                    port: 80,
                },
                1,
            )
        })
        .collect();
    maglev::build(&keys, BIG_SLOTS, SEED)
        .into_iter()
        .map(|i| BIG_BACKEND_BASE + i)
        .collect()
}

fn big_backend(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 100, 1 + (i >> 8) as u8, i as u8)
}

fn many_vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 101, (i >> 8) as u8, i as u8)
}

/// Adds the large VIP (TCP and UDP) and, with `many`, the [`MANY_VIPS`] others.
fn configure_big(h: &mut Harness, many: bool) -> anyhow::Result<()> {
    for i in 0..BIG_BACKENDS {
        let mac = [0x02, 0x98, 0, 0, (i >> 8) as u8, i as u8];
        h.dp.set_backend(
            BIG_BACKEND_BASE + i,
            backend(big_backend(i).into(), Some(mac), 80),
        )?;
    }
    h.dp.write_table(HARNESS_SLOTS, &big_table())?;
    let info = |id| VipInfo {
        id,
        mode: MODE_DR,
        table_offset: HARNESS_SLOTS,
        table_size: BIG_SLOTS,
        flags: 0,
    };
    h.dp.set_vip(vip_key_of(BIG_VIP.into(), 80, 6), info(BIG_VIP_IDS[0]))?;
    h.dp.set_vip(vip_key_of(BIG_VIP.into(), 80, 17), info(BIG_VIP_IDS[1]))?;
    if many {
        // They share the large VIP's table: what 1,000 VIPs change per packet is the VIP
        // lookup's hash table, not the slot read.
        for i in 0..MANY_VIPS {
            h.dp.set_vip(
                vip_key_of(many_vip(i).into(), 80, 6),
                info(MANY_VIP_BASE + i),
            )?;
        }
    }
    Ok(())
}

pub fn run(out_dir: &Path, repeat: u32, rounds: usize) -> anyhow::Result<()> {
    use lb_tests::program::{CLIENT, CLIENT6, VIP6};
    let client: IpAddr = CLIENT.into();
    let big = |sport| Frame::new(client, sport, BIG_VIP.into(), 80);
    // Everything runs in a namespace with fixed routes and neighbours (NAT's FIB lookup is
    // part of its cost); frames arrive on the client side, NAT replies on the backend side.
    let mut h = Harness::load_in_fibnet_sized(HARNESS_SLOTS + BIG_SLOTS, DEFAULT_FLOW_CAPACITY);
    configure_big(&mut h, true)?;
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    let base = Baselines::load()?;
    let cycle_repeat = (repeat / CYCLE).max(1) * CYCLE;

    let dr = |hashed: bool| Expect {
        verdict: Verdict::Tx,
        reason: Some(Reason::ForwardedDr),
        hashed: Some(hashed.into()),
        cached: Some((!hashed).into()),
    };
    let pass = |reason| Expect {
        verdict: Verdict::Pass,
        reason: Some(reason),
        hashed: Some(0),
        cached: Some(0),
    };
    let stage = Expect {
        verdict: Verdict::Pass,
        reason: None,
        hashed: Some(0),
        cached: Some(0),
    };
    let spec = |name: &str, program, frame: Vec<u8>, baseline, expect, target| Spec {
        name: name.to_owned(),
        program,
        frame,
        ifindex: cl0,
        runs: repeat,
        baseline,
        expect,
        floor: None,
        target,
    };
    let established = big(40000).established().tcp();
    let udp = big(40000).udp();
    let many = Frame::new(client, 40000, many_vip(MANY_VIPS / 2).into(), 80)
        .established()
        .tcp();
    let ipv6 = Frame::new(CLIENT6.into(), 40000, VIP6.into(), 80)
        .established()
        .tcp();
    let not_vip = frames::tcp(CLIENT, 40000, "10.99.0.10".parse()?, 80);
    let dr_specs = vec![
        spec(
            "DR TCP established (1 VIP, 100 backends)",
            "xdp_lb",
            established.clone(),
            Baseline::Tx,
            dr(false),
            Some(TARGET_ESTABLISHED),
        ),
        spec(
            "DR TCP SYN, new flow (1 VIP, 100 backends)",
            "xdp_lb",
            big(40001).tcp(),
            Baseline::Tx,
            dr(true),
            Some(TARGET_NEW_FLOW),
        ),
        spec(
            "DR UDP (1 VIP, 100 backends)",
            "xdp_lb",
            udp.clone(),
            Baseline::Tx,
            dr(false),
            None,
        ),
        spec(
            "DR TCP established, 1,000 VIPs",
            "xdp_lb",
            many.clone(),
            Baseline::Tx,
            dr(false),
            None,
        ),
        Spec {
            runs: cycle_repeat,
            floor: Some("bench_cycle_floor"),
            ..spec(
                "DR TCP established, 65,536 flows cycling",
                "bench_cycle",
                established.clone(),
                Baseline::Tx,
                Expect {
                    cached: None,
                    ..dr(false)
                },
                None,
            )
        },
        Spec {
            runs: cycle_repeat,
            floor: Some("bench_cycle_floor"),
            ..spec(
                "DR TCP SYN, 65,536 new flows cycling",
                "bench_cycle",
                big(40000).tcp(),
                Baseline::Tx,
                dr(true),
                None,
            )
        },
        Spec {
            runs: cycle_repeat,
            floor: Some("bench_cycle_floor"),
            ..spec(
                "DR TCP connection start, 65,536 new flows cycling: SYN, then first ACK (the mean of the two)",
                "bench_handshake",
                big(40000).tcp(),
                Baseline::Tx,
                Expect {
                    hashed: Some(2),
                    cached: Some(2),
                    ..dr(true)
                },
                None,
            )
        },
        spec(
            "DR IPv6 TCP established (3 backends)",
            "xdp_lb",
            ipv6.clone(),
            Baseline::Tx,
            dr(false),
            None,
        ),
        spec(
            "non-VIP TCP, passed",
            "xdp_lb",
            not_vip.clone(),
            Baseline::Pass,
            pass(Reason::PassNotVip),
            Some(TARGET_NOT_VIP),
        ),
        spec(
            "ARP, passed",
            "xdp_lb",
            frames::arp_who_has_vip(),
            Baseline::Pass,
            pass(Reason::PassArp),
            None,
        ),
        spec(
            "stage: parse",
            "bench_stage_parse",
            established.clone(),
            Baseline::Pass,
            stage,
            None,
        ),
        spec(
            "stage: parse + VIP lookup",
            "bench_stage_vip",
            established.clone(),
            Baseline::Pass,
            stage,
            None,
        ),
        spec(
            "stage: parse + VIP + flow lookup",
            "bench_stage_flow",
            established.clone(),
            Baseline::Pass,
            stage,
            None,
        ),
        spec(
            "stage: parse + VIP + flow + interface lookup",
            "bench_stage_iface",
            established.clone(),
            Baseline::Pass,
            stage,
            None,
        ),
    ];
    // Flows exist before they are measured as established: pin them once.
    for frame in [&established, &udp, &many, &ipv6] {
        h.dp.test_run_on(cl0, frame)?;
    }
    h.dp.time_program("bench_cycle", cl0, &established, CYCLE)?;
    // Helper-object rows: the flow-table lookup on its own, per map type.
    let lru = |program: &'static str, name: &str| Spec {
        expect: Expect {
            verdict: Verdict::Pass,
            reason: None,
            hashed: None,
            cached: None,
        },
        ..spec(
            name,
            program,
            established.clone(),
            Baseline::Pass,
            stage,
            None,
        )
    };
    let lru_specs = [
        lru("flow_lru_shared", "flow table hit alone, shared LRU"),
        lru("flow_lru_percpu", "flow table hit alone, per-CPU LRU"),
        lru(
            "flow_lru_insert",
            "flow table insert alone (replacing), shared LRU",
        ),
    ];

    println!(
        "XDP per-packet cost (BPF_PROG_TEST_RUN, {repeat} runs x {rounds} rounds, kernel-timed, ns per packet)"
    );
    let mut base_samples = [Vec::new(), Vec::new()];
    let mut cases = run_rounds(&mut h, &base, &dr_specs, repeat, rounds, &mut base_samples)?;
    cases.extend(helper_rows(&base, &lru_specs, repeat, rounds)?);

    // NAT: once a NAT connection exists, every packet that is not for a VIP is also looked
    // up as a possible reply, so these come after the cases above.
    let nat_frames = nat_frames(&mut h)?;
    let nat = |name: &str, ifindex, frame: &Vec<u8>, reason: Reason| Spec {
        ifindex,
        floor: Some("bench_restore_floor"),
        ..spec(
            name,
            "bench_restore",
            frame.clone(),
            Baseline::Tx,
            Expect {
                verdict: reason.verdict(),
                reason: Some(reason),
                hashed: Some(0),
                cached: Some(0),
            },
            None,
        )
    };
    let nat_specs = vec![
        nat(
            "NAT IPv4 TCP request, XDP_TX (arriving on the backends' side)",
            bk0,
            &nat_frames.request4,
            Reason::ForwardedNat,
        ),
        nat(
            "NAT IPv4 TCP request, redirect",
            cl0,
            &nat_frames.request4,
            Reason::RedirectedNat,
        ),
        nat(
            "NAT IPv4 TCP reply, redirect",
            bk0,
            &nat_frames.reply4,
            Reason::RedirectedNatReply,
        ),
        nat(
            "NAT IPv6 TCP request, XDP_TX (arriving on the backends' side)",
            bk0,
            &nat_frames.request6,
            Reason::ForwardedNat,
        ),
        nat(
            "NAT IPv6 TCP request, redirect",
            cl0,
            &nat_frames.request6,
            Reason::RedirectedNat,
        ),
        nat(
            "NAT IPv6 TCP reply, redirect",
            bk0,
            &nat_frames.reply6,
            Reason::RedirectedNatReply,
        ),
        spec(
            "non-VIP TCP, passed, NAT in use",
            "xdp_lb",
            not_vip,
            Baseline::Pass,
            pass(Reason::PassNotVip),
            None,
        ),
    ];
    cases.extend(run_rounds(
        &mut h,
        &base,
        &nat_specs,
        repeat,
        rounds,
        &mut base_samples,
    )?);

    let baselines: Vec<BaselineFigures> = [("xdp_pass", 0), ("xdp_tx_baseline", 1)]
        .into_iter()
        .map(|(program, i)| {
            let (min_ns, median_ns, max_ns) = spread(&base_samples[i]);
            BaselineFigures {
                program,
                min_ns,
                median_ns,
                max_ns,
            }
        })
        .collect();
    for b in &baselines {
        println!(
            "baseline {:<42} {:>7.1} {:>7.1} {:>7.1}",
            b.program, b.min_ns, b.median_ns, b.max_ns
        );
    }
    print(&cases);
    let refused: Vec<String> = cases
        .iter()
        .filter(|c| c.refused.is_some())
        .map(|c| c.name.clone())
        .collect();
    let report = Report {
        benchmark: "xdp_per_packet",
        machine: crate::machine::describe(),
        repeat,
        rounds,
        baselines,
        cases,
    };
    let path = out_dir.join("xdp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    if !refused.is_empty() {
        bail!(
            "figures refused (a sanity check failed): {}",
            refused.join(", ")
        );
    }
    Ok(())
}

/// Rows of helper-object programs (no balancer counters to check; verdict only), each
/// round with its own pass baseline.
fn helper_rows(
    base: &Baselines,
    specs: &[Spec],
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<Vec<Case>> {
    let mut ebpf = aya::Ebpf::load(HELPERS_OBJECT)?;
    let mut out = Vec::new();
    for spec in specs {
        let prog: &mut Xdp = ebpf
            .program_mut(spec.program)
            .ok_or_else(|| anyhow!("no program {}", spec.program))?
            .try_into()?;
        prog.load()?;
        let mut samples = Vec::new();
        let mut refused = None;
        let mut buf = vec![0u8; spec.frame.len() + 256];
        for _ in 0..rounds {
            let b = base.time(Baseline::Pass, &spec.frame, repeat)?;
            let r = prog.test_run(TestRunOptions {
                data_in: Some(&spec.frame),
                data_out: Some(&mut buf),
                repeat,
                ..Default::default()
            })?;
            if r.return_value != spec.expect.verdict as u32 {
                refused = Some(format!("verdict {}", r.return_value));
                break;
            }
            samples.push((ns(r.duration), ns(r.duration) / b));
        }
        let figures = refused.is_none().then(|| figures(&samples));
        out.push(Case {
            name: spec.name.clone(),
            program: spec.program,
            frame_bytes: spec.frame.len(),
            runs_per_round: repeat as u64,
            baseline: Baseline::Pass,
            figures,
            target_ratio: None,
            met: None,
            refused,
        });
    }
    Ok(out)
}

/// NAT frames for `bench_restore`, which writes each frame's headers back after the
/// balancer rewrote them, so every run translates the frame as given, to a real backend
/// (address, port, checksums, TTL, MACs, the FIB's route): a client's request to the NAT VIP
/// and the reply of the backend it was balanced to.
struct NatFrames {
    request4: Vec<u8>,
    reply4: Vec<u8>,
    request6: Vec<u8>,
    reply6: Vec<u8>,
}

/// Sends one request per family, which records the connection the replies belong to and
/// pins the flow, and builds the reply from where the request went. Frames carry a payload,
/// so they are longer than the headers `bench_restore` keeps.
fn nat_frames(h: &mut Harness) -> anyhow::Result<NatFrames> {
    use lb_tests::program::{CLIENT, CLIENT6, NAT_BACKEND_PORT, NAT_PORT, NAT_VIP, NAT_VIP6};
    let cl0 = h.net().cl0;
    let mut pair = |client: IpAddr, vip: IpAddr| -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let request = Frame::new(client, 40000, vip, NAT_PORT)
            .established()
            .payload(64)
            .tcp();
        let (verdict, out) = h.dp.test_run_on(cl0, &request)?;
        anyhow::ensure!(
            verdict == Verdict::Redirect as u32,
            "NAT request to {vip} not redirected to the backend side: verdict {verdict}"
        );
        let backend: IpAddr = match client {
            IpAddr::V4(_) => <[u8; 4]>::try_from(&out[30..34])?.into(),
            IpAddr::V6(_) => <[u8; 16]>::try_from(&out[38..54])?.into(),
        };
        let reply = Frame::new(backend, NAT_BACKEND_PORT, client, 40000)
            .established()
            .payload(64)
            .tcp();
        Ok((request, reply))
    };
    let (request4, reply4) = pair(CLIENT.into(), NAT_VIP.into())?;
    let (request6, reply6) = pair(CLIENT6.into(), NAT_VIP6.into())?;
    Ok(NatFrames {
        request4,
        reply4,
        request6,
        reply6,
    })
}
