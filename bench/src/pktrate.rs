//! Packet rate through a real interface: frames from an in-kernel generator cross a veth
//! into the load-balancer namespace, the program (run by lbd, native XDP, DR) sends them back
//! out towards the backends, and a sink counts what arrives. In the same run, interleaved,
//! the same path with the MAC-swapping XDP_TX baseline attached in place of the balancer.
//!
//! ```text
//!  bridge namespace                                        lb namespace
//!  pktgen (BPF_PROG_TEST_RUN, live frames) ─XDP_TX─► plb ═ veth ═ eth0: xdp_lb (lbd)
//!  pktsink (XDP on plb): count, drop       ◄──────── plb ═ veth ═ eth0  or xdp_tx_baseline
//! ```
//!
//! The generator and the sink sit on the bridge-side end of the balancer's veth, its
//! "switch port": the DR frames arriving there carry the backends' MACs, which the sink
//! counts per backend. This kernel has no pktgen module; the generator is an XDP program
//! the kernel runs on copies of one crafted frame and transmits.
//!
//! A veth has no hardware queues, interrupts or DMA: a frame sent into it is handled by the
//! receiving side's NAPI on the CPU that sent it. Each generator thread (pinned, one per
//! CPU) therefore runs the whole path for its frames: generate, the balancer's program, the
//! sink. 1 core is one such thread, 2 cores are two, each on its own veth queue: whole-path
//! figures. The dedicated layout threads the balancer's NAPI into a kthread alone on CPU 1
//! (generator and sink on CPU 0) and counts that kthread's CPU time; one CPU of generator and
//! sink cannot saturate the baseline there, so only the per-busy-core figures compare.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use lb_tests::{agent::reason_packets, frames::Frame, lab::VIP, netns, Lab, LbdGuard};
use lb_userspace::dataplane::{HELPERS_OBJECT, PKTGEN_OBJECT};
use serde::Serialize;

/// The generator's source MAC: the baseline swaps MACs, so its frames reach the sink
/// addressed to this one; no lab node has it.
const GEN_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0xfe];
/// The idle veth the generator is attached to (see `Ends::attach`).
const HOLDER: &str = "pgen0";
const SRC_BASE: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 0);
const PORT_BASE: u16 = 1024;
/// Frames per kernel batch (NAPI's budget; the kernel allows up to 256).
const BATCH: u32 = 64;
/// Frames per `BPF_PROG_TEST_RUN` call; the stop flag is read between calls.
const CALL_FRAMES: u32 = 1 << 16;
/// Generator running before the window opens: fills the flow table and settles the CPUs.
const WARMUP: Duration = Duration::from_millis(300);
/// Frames of the lab's own (ARP, multicast) that may reach the balancer's veth beside the
/// generator's during a round: the only slack the sanity checks allow.
const STRAY: u64 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Program {
    /// `xdp_tx_baseline`: swap MACs, XDP_TX.
    Baseline,
    /// `xdp_lb`, run by lbd.
    Lb,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Baseline => "xdp_tx_baseline",
            Program::Lb => "xdp_lb (lbd)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Layout {
    /// A generator thread on CPU 0; the balancer and the sink run there too.
    OneCore,
    /// A generator thread on CPU 0 and one on CPU 1, each CPU with its own veth queue.
    TwoCores,
    /// The balancer's veth queue served by a threaded NAPI kthread on CPU 1, alone there; the
    /// generator and the sink (threaded too) on CPU 0.
    Dedicated,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::OneCore => "1 core",
            Layout::TwoCores => "2 cores",
            Layout::Dedicated => "1 LB core, dedicated",
        }
    }

    /// Cores the measured threads can keep busy: below 85 % of this, something other than the
    /// measured side limited the rate (the generator, in the dedicated layout).
    fn cores(self) -> f64 {
        match self {
            Layout::OneCore | Layout::Dedicated => 1.0,
            Layout::TwoCores => 2.0,
        }
    }

    fn generator_cpus(self) -> &'static [usize] {
        match self {
            Layout::OneCore | Layout::Dedicated => &[0],
            Layout::TwoCores => &[0, 1],
        }
    }
}

/// One measured window.
#[derive(Serialize, Clone)]
struct Sample {
    /// Frames the sink received per second.
    pps: f64,
    /// Frames the generator sent per second (offered load).
    offered_pps: f64,
    /// CPU the balancer's side used in the window, in cores: the NAPI kthreads (one core
    /// layout), or the generator threads that run everything inline (shared layout).
    busy_cores: f64,
    /// Whole-round totals the sanity checks compared (warm-up included).
    totals: Totals,
}

/// Frame counts over a round, from the generator's side of the veth, the balancer's
/// side, the program and the sink.
#[derive(Serialize, Clone, Default)]
struct Totals {
    /// Frames the generator's XDP_TX put into the balancer's veth queue.
    into_lb: u64,
    /// Frames the generator sent that found the balancer's queue full (veth
    /// `xdp_xmit_errors`).
    lb_queue_full: u64,
    /// Frames the balancer's program ran on (veth `xdp_packets`).
    lb_program_runs: u64,
    /// XDP_TX frames veth delivered to the sink's side (`xdp_tx`), and those the sink's
    /// queue refused (`xdp_tx_errors`): together, the program's XDP_TX verdicts.
    lb_xdp_tx: u64,
    lb_xdp_tx_errors: u64,
    /// The program's own count of DR forwards (lbd's `forwarded_dr`; 0 for the baseline).
    forwarded_dr: u64,
    /// Frames the program dropped, any reason (lbd only).
    program_drops: u64,
    /// Frames the sink counted.
    sink: u64,
}

#[derive(Serialize)]
struct Row {
    layout: Layout,
    program: Program,
    samples: Vec<Sample>,
    median_pps: f64,
    median_offered_pps: f64,
    median_busy_cores: f64,
    /// Received frames per second per fully busy core.
    median_pps_per_busy_core: f64,
    /// CPU time per frame over the whole path (generator, veth, program, veth, sink).
    ns_per_frame: f64,
    /// `ns_per_frame` minus the baseline's: what the balancer costs per frame in place.
    ns_over_baseline: f64,
    /// Balancer's median pps over the baseline's, same layout.
    ratio_to_baseline: Option<f64>,
    ratio_per_busy_core: Option<f64>,
    /// Whether the measured threads were busy (at least 85 % of the layout's cores): if the
    /// baseline's were not, the generator limited it and only `ratio_per_busy_core` compares.
    saturated: bool,
    /// Sink totals per backend MAC over every round (the balancer's spread).
    per_destination: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: crate::machine::Machine,
    /// Dependent random reads in buffers of a few sizes: what a flow whose state is not
    /// in the caches costs at least.
    memory_latency: Vec<crate::memlat::Latency>,
    runs: Vec<FlowsRun>,
}

/// One flow count.
#[derive(Serialize)]
struct FlowsRun {
    rounds: usize,
    window_s: f64,
    frame_bytes: usize,
    flows: u32,
    source_addresses: u32,
    ports_per_address: u32,
    vip: String,
    rows: Vec<Row>,
}

pub struct Options {
    pub rounds: usize,
    pub window: Duration,
    /// Distinct flows (source address, source port) the generator cycles through, one
    /// measurement per count.
    pub flows: Vec<u32>,
}

pub fn run(out_dir: &Path, opts: &Options) -> Result<()> {
    let memory_latency = crate::memlat::measure(&[256 << 10, 4 << 20, 64 << 20]);
    println!("memory latency, dependent random reads:");
    for l in &memory_latency {
        println!("  {:>6} KiB: {:>6.1} ns", l.bytes >> 10, l.ns_per_read);
    }
    let mut runs = Vec::new();
    for &flows in &opts.flows {
        runs.push(run_flows(opts, flows)?);
    }
    let report = Report {
        benchmark: "packet_rate",
        machine: crate::machine::describe(),
        memory_latency,
        runs,
    };
    let path = out_dir.join("pktrate.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}

fn run_flows(opts: &Options, flows: u32) -> Result<FlowsRun> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        cpus >= 2,
        "the packet-rate benchmark needs 2 CPUs (generator and balancer), this machine has {cpus}"
    );
    let ports = flows.clamp(1, 256);
    let addresses = flows.div_ceil(ports);
    let lab = Lab::builder()
        .backends(3)
        .lb_queues(2)
        .lb_port_xdp_pass(false)
        .build()?;
    let br_ns = lab.bridge_ns().to_owned();
    let port = lab.lb().bridge_port.clone();
    let mut ends = Ends::attach(&br_ns, &port)?;
    let frame = Frame::new(SRC_BASE.into(), PORT_BASE, VIP.into(), 80)
        .established()
        .payload(6)
        .macs(GEN_MAC, lab.lb().mac)
        .tcp();
    ends.configure(flows, ports, frame[..12].try_into()?)?;
    let config = lab.write_lbd_config("");
    let backend_macs: Vec<u8> = lab.backends().iter().map(|b| b.node.mac[5]).collect();

    let layouts = [Layout::OneCore, Layout::TwoCores, Layout::Dedicated];
    let mut samples: BTreeMap<(usize, usize), Vec<Sample>> = BTreeMap::new();
    let mut spread: BTreeMap<(usize, usize), [u64; 256]> = BTreeMap::new();
    for (li, &layout) in layouts.iter().enumerate() {
        for round in 0..opts.rounds {
            // Alternating the order spreads slow drifts (other load) over both programs.
            let order = if round % 2 == 0 {
                [Program::Baseline, Program::Lb]
            } else {
                [Program::Lb, Program::Baseline]
            };
            for program in order {
                let pi = program as usize;
                let subject = Subject::attach(&lab, program, &config)?;
                // NAPI instances come and go with the program, so this follows each attach.
                let dedicated = layout == Layout::Dedicated;
                set_threaded(&lab.lb().ns, "eth0", dedicated)?;
                set_threaded(&br_ns, &port, dedicated)?;
                if dedicated {
                    for pid in napi_threads("eth0")? {
                        pin(pid, 1, 1)?;
                    }
                    // Above the generator on its CPU: the sink must keep up, or the
                    // balancer's transmits fail and the figure measures the sink.
                    for pid in napi_threads(&port)? {
                        pin(pid, 0, 2)?;
                    }
                }
                let before = Counters::read(&lab, &ends, &subject)?;
                let sample = ends.measure(&br_ns, layout, &frame, opts.window)?;
                // Frames still in the rings reach the sink before the totals are read.
                std::thread::sleep(Duration::from_millis(100));
                let after = Counters::read(&lab, &ends, &subject)?;
                drop(subject);
                let got = after.sink_minus(&before);
                let mut sample = sample;
                sample.totals = after.totals(&before, &got);
                check(program, &sample.totals, &got, &backend_macs, flows).with_context(|| {
                    format!(
                        "{} / {}, round {round}: a sanity check failed, no figure is reported",
                        layout.name(),
                        program.name()
                    )
                })?;
                println!(
                    "  {:<21} {:<16} round {round}: {:>6.3} Mpps received, {:>6.3} offered, {:.2} cores busy",
                    layout.name(),
                    program.name(),
                    sample.pps / 1e6,
                    sample.offered_pps / 1e6,
                    sample.busy_cores
                );
                samples.entry((li, pi)).or_default().push(sample);
                let total = spread.entry((li, pi)).or_insert([0; 256]);
                for (t, g) in total.iter_mut().zip(got) {
                    *t += g;
                }
            }
        }
    }

    let mut rows = Vec::new();
    for (li, &layout) in layouts.iter().enumerate() {
        let base = median(samples[&(li, 0)].iter().map(|s| s.pps).collect());
        let base_per_core = median(
            samples[&(li, 0)]
                .iter()
                .map(|s| s.pps / s.busy_cores)
                .collect(),
        );
        let base_ns = 1e9 / base_per_core;
        for program in [Program::Baseline, Program::Lb] {
            let s = &samples[&(li, program as usize)];
            let pps = median(s.iter().map(|s| s.pps).collect());
            let per_core = median(s.iter().map(|s| s.pps / s.busy_cores).collect());
            let per_destination = spread[&(li, program as usize)]
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (format!("02:99:00:00:00:{i:02x}"), *n))
                .collect();
            rows.push(Row {
                layout,
                program,
                ns_per_frame: 1e9 / per_core,
                ns_over_baseline: 1e9 / per_core - base_ns,
                median_pps: pps,
                median_offered_pps: median(s.iter().map(|s| s.offered_pps).collect()),
                median_busy_cores: median(s.iter().map(|s| s.busy_cores).collect()),
                median_pps_per_busy_core: per_core,
                ratio_to_baseline: (program == Program::Lb).then_some(pps / base),
                ratio_per_busy_core: (program == Program::Lb).then_some(per_core / base_per_core),
                saturated: median(s.iter().map(|s| s.busy_cores).collect())
                    >= 0.85 * layout.cores(),
                samples: s.clone(),
                per_destination,
            });
        }
    }
    print(&rows, opts, flows, addresses, ports);
    Ok(FlowsRun {
        rounds: opts.rounds,
        window_s: opts.window.as_secs_f64(),
        frame_bytes: frame.len(),
        flows,
        source_addresses: addresses,
        ports_per_address: ports,
        vip: format!("{VIP}:80/tcp"),
        rows,
    })
}

fn print(rows: &[Row], opts: &Options, flows: u32, addresses: u32, ports: u32) {
    println!(
        "\nPacket rate through a veth, native XDP, DR: {} flows ({addresses} source addresses from \
         {SRC_BASE} x {ports} ports from {PORT_BASE}) to {VIP}:80/tcp, 60-byte frames; median of \
         {} x {:.1} s",
        flows,
        opts.rounds,
        opts.window.as_secs_f64()
    );
    println!(
        "{:<21} {:<16} {:>9} {:>9} {:>6} {:>10} {:>9} {:>9} {:>11}",
        "layout", "program", "Mpps", "offered", "busy", "Mpps/core", "ns/frame", "vs base", "ratio"
    );
    let base_saturated = |layout: Layout| {
        rows.iter()
            .any(|b| b.layout == layout && b.program == Program::Baseline && b.saturated)
    };
    for r in rows {
        let ratio = r.ratio_to_baseline.map_or(String::new(), |v| {
            let per_core = r.ratio_per_busy_core.unwrap_or(f64::NAN) * 100.0;
            if base_saturated(r.layout) {
                format!("{:.0} % ({per_core:.0})", v * 100.0)
            } else {
                format!("- ({per_core:.0})")
            }
        });
        println!(
            "{:<21} {:<16} {:>9.3} {:>9.3} {:>6.2} {:>10.3} {:>9.0} {:>+9.0} {:>11}",
            r.layout.name(),
            r.program.name(),
            r.median_pps / 1e6,
            r.median_offered_pps / 1e6,
            r.median_busy_cores,
            r.median_pps_per_busy_core / 1e6,
            r.ns_per_frame,
            r.ns_over_baseline,
            ratio
        );
    }
    println!(
        "(ratio: received pps over the baseline's in the same layout; in brackets, per busy core; \
         '-' where the baseline's threads were not busy, so the generator limited it. ns/frame: CPU \
         time per frame of the measured threads: the whole path, or the LB core's kthread)"
    );
    for r in rows.iter().filter(|r| r.program == Program::Lb) {
        let ratio = if base_saturated(r.layout) {
            r.ratio_to_baseline.unwrap_or(0.0)
        } else {
            r.ratio_per_busy_core.unwrap_or(0.0)
        };
        println!(
            "target, balancer >= 80 % of the baseline, {}: {}",
            r.layout.name(),
            if ratio >= 0.8 { "met" } else { "NOT met" }
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The generator and the sink, loaded in the bridge namespace, the sink attached to the
/// balancer's port.
struct Ends {
    ebpf: aya::Ebpf,
    ifindex: u32,
}

impl Ends {
    fn attach(ns: &str, port: &str) -> Result<Ends> {
        let ifindex = netns::ifindex(ns, port)?;
        // A test run puts its program into the kernel's XDP dispatcher and takes it out
        // again, and each change waits for an RCU grace period (tens of ms here, per call).
        // A program attached somewhere stays in the dispatcher, and then a test run changes
        // nothing: so the generator is also attached, to a veth that carries no traffic.
        netns::ip(
            ns,
            &[
                "link", "add", HOLDER, "type", "veth", "peer", "name", "pgen1",
            ],
        )?;
        let port = port.to_owned();
        netns::run_in(ns, move || {
            let mut ebpf = aya::Ebpf::load(PKTGEN_OBJECT)
                .context("loading the packet generator object (run as root)")?;
            let sink: &mut Xdp = ebpf
                .program_mut("pktsink")
                .context("no program pktsink")?
                .try_into()?;
            sink.load()?;
            sink.attach(&port, XdpMode::Driver)
                .with_context(|| format!("attaching pktsink to {port}"))?;
            let gen: &mut Xdp = ebpf
                .program_mut("pktgen")
                .context("no program pktgen")?
                .try_into()?;
            gen.load()?;
            gen.attach(HOLDER, XdpMode::Driver)
                .with_context(|| format!("attaching pktgen to {HOLDER}"))?;
            Ok(Ends { ebpf, ifindex })
        })
    }

    fn configure(&mut self, flows: u32, ports: u32, macs: [u8; 12]) -> Result<()> {
        let mut config: Array<_, u32> = Array::try_from(
            self.ebpf
                .map_mut("PKTGEN_CONFIG")
                .context("no map PKTGEN_CONFIG")?,
        )?;
        for (slot, value) in [
            (0, flows),
            (1, ports),
            (2, u32::from(SRC_BASE)),
            (3, u32::from(PORT_BASE)),
            (4, u32::from(VIP)),
            (5, u32::from_ne_bytes(macs[0..4].try_into()?)),
            (6, u32::from_ne_bytes(macs[4..8].try_into()?)),
            (7, u32::from_ne_bytes(macs[8..12].try_into()?)),
        ] {
            config.set(slot, value, 0)?;
        }
        Ok(())
    }

    /// Frames the sink counted so far, per last byte of the destination MAC.
    fn sink(&self) -> Result<[u64; 256]> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("SINK_COUNT").context("no map SINK_COUNT")?)?;
        let mut out = [0u64; 256];
        for (i, o) in out.iter_mut().enumerate() {
            *o = map.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    fn generator(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program("pktgen")
            .context("no program pktgen")?
            .try_into()?)
    }

    /// Runs the generator on `layout`'s CPUs for the warm-up and then `window`, and
    /// measures what the sink received in the window.
    fn measure(&self, ns: &str, layout: Layout, frame: &[u8], window: Duration) -> Result<Sample> {
        let gen = self.generator()?;
        let stop = AtomicBool::new(false);
        let offered = AtomicU64::new(0);
        let tids = Mutex::new(Vec::new());
        let ifindex = self.ifindex;
        std::thread::scope(|s| -> Result<Sample> {
            let threads: Vec<_> = layout
                .generator_cpus()
                .iter()
                .map(|&cpu| {
                    let (stop, offered, tids) = (&stop, &offered, &tids);
                    s.spawn(move || -> Result<()> {
                        let _in = netns::enter(ns)?;
                        pin(0, cpu, 1)?;
                        // SAFETY: gettid has no preconditions.
                        let tid = unsafe { libc::gettid() };
                        tids.lock().unwrap_or_else(|p| p.into_inner()).push(tid);
                        generate(gen, ifindex, frame, stop, offered)
                    })
                })
                .collect();
            // Above the generators, so the window closes on time and the counters are
            // read without a generator in between.
            realtime(0, 3)?;
            let result = (|| {
                std::thread::sleep(WARMUP);
                // The whole path runs on the generator threads: the softirq that runs
                // the balancer and the sink runs in their context when the kernel call
                // ends a batch (when the kernel defers it, in the CPUs' ksoftirqd).
                let busy = |layout: Layout| -> Result<u64> {
                    if layout == Layout::Dedicated {
                        return Ok(napi_threads("eth0")?
                            .iter()
                            .filter_map(|pid| cpu_ns(&format!("/proc/{pid}/schedstat")).ok())
                            .sum());
                    }
                    let files: Vec<String> = tids
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|tid| format!("/proc/self/task/{tid}/schedstat"))
                        .chain(
                            kthreads("ksoftirqd/", layout.generator_cpus())?
                                .iter()
                                .map(|pid| format!("/proc/{pid}/schedstat")),
                        )
                        .collect();
                    Ok(files.iter().filter_map(|f| cpu_ns(f).ok()).sum())
                };
                let (c0, o0, b0, t0) = (
                    self.sink()?.iter().sum::<u64>(),
                    offered.load(Ordering::Relaxed),
                    busy(layout)?,
                    Instant::now(),
                );
                std::thread::sleep(window);
                let (c1, o1, b1, t1) = (
                    self.sink()?.iter().sum::<u64>(),
                    offered.load(Ordering::Relaxed),
                    busy(layout)?,
                    Instant::now(),
                );
                let secs = (t1 - t0).as_secs_f64();
                Ok(Sample {
                    pps: (c1 - c0) as f64 / secs,
                    offered_pps: (o1 - o0) as f64 / secs,
                    busy_cores: b1.saturating_sub(b0) as f64 / 1e9 / secs,
                    totals: Totals::default(),
                })
            })();
            stop.store(true, Ordering::Relaxed);
            realtime(0, 0)?;
            for t in threads {
                t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            }
            result
        })
    }
}

/// Sends copies of `frame` through the generator until `stop`; counts them in `offered`.
fn generate(
    gen: &Xdp,
    ifindex: u32,
    frame: &[u8],
    stop: &AtomicBool,
    offered: &AtomicU64,
) -> Result<()> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex; the kernel sends XDP_TX frames out of the ingress interface.
    let len = u32::try_from(frame.len())?;
    let ctx: Vec<u8> = [0, len, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect();
    while !stop.load(Ordering::Relaxed) {
        gen.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: CALL_FRAMES,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN (live frames)")?;
        offered.fetch_add(u64::from(CALL_FRAMES), Ordering::Relaxed);
    }
    Ok(())
}

/// What runs on the balancer's `eth0` for one round.
enum Subject<'lab> {
    /// Held for as long as the baseline stays attached.
    Baseline {
        _ebpf: aya::Ebpf,
    },
    Lb(LbdGuard<'lab>),
}

impl<'lab> Subject<'lab> {
    fn attach(lab: &'lab Lab, program: Program, config: &Path) -> Result<Subject<'lab>> {
        match program {
            Program::Baseline => netns::run_in(&lab.lb().ns, || {
                let mut ebpf = aya::Ebpf::load(HELPERS_OBJECT)?;
                let prog: &mut Xdp = ebpf
                    .program_mut("xdp_tx_baseline")
                    .context("no program xdp_tx_baseline")?
                    .try_into()?;
                prog.load()?;
                prog.attach("eth0", XdpMode::Driver)?;
                Ok(Subject::Baseline { _ebpf: ebpf })
            }),
            Program::Lb => {
                let lbd = lab.start_lbd(config)?;
                // DR needs the backends' MACs; until the agent has them, packets are dropped.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let stats = lbd.stats()?;
                    let resolved = stats
                        .vips
                        .iter()
                        .flat_map(|v| &v.backends)
                        .all(|b| b.mac.is_some());
                    if resolved {
                        break;
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "backend MACs not resolved after 5 s"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Subject::Lb(lbd))
            }
        }
    }
}

/// Everything the sanity checks compare, read before and after a round.
struct Counters {
    sink: [u64; 256],
    /// `ethtool -S eth0` in the balancer's namespace, summed over queues.
    lb_eth: BTreeMap<String, u64>,
    /// `ethtool -S <port>` on the generator's side.
    port_eth: BTreeMap<String, u64>,
    /// The program's own counters (lbd only; fresh maps per start).
    forwarded_dr: u64,
    dropped: u64,
}

impl Counters {
    fn read(lab: &Lab, ends: &Ends, subject: &Subject<'_>) -> Result<Counters> {
        let (forwarded_dr, dropped) = match subject {
            Subject::Lb(lbd) => {
                let s = lbd.stats()?;
                let dropped = s
                    .verdicts
                    .iter()
                    .filter(|v| v.verdict == "drop")
                    .map(|v| v.packets)
                    .sum();
                (reason_packets(&s, "forwarded_dr"), dropped)
            }
            Subject::Baseline { .. } => (0, 0),
        };
        Ok(Counters {
            sink: ends.sink()?,
            lb_eth: ethtool(&lab.lb().ns, "eth0")?,
            port_eth: ethtool(lab.bridge_ns(), &lab.lb().bridge_port)?,
            forwarded_dr,
            dropped,
        })
    }

    fn sink_minus(&self, before: &Counters) -> [u64; 256] {
        let mut d = [0u64; 256];
        for (i, d) in d.iter_mut().enumerate() {
            *d = self.sink[i] - before.sink[i];
        }
        d
    }

    fn totals(&self, before: &Counters, sink: &[u64; 256]) -> Totals {
        let delta = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>, key: &str| {
            now.get(key).copied().unwrap_or(0) - then.get(key).copied().unwrap_or(0)
        };
        Totals {
            into_lb: delta(&self.port_eth, &before.port_eth, "xdp_xmit"),
            lb_queue_full: delta(&self.port_eth, &before.port_eth, "xdp_xmit_errors"),
            lb_program_runs: delta(&self.lb_eth, &before.lb_eth, "xdp_packets"),
            lb_xdp_tx: delta(&self.lb_eth, &before.lb_eth, "xdp_tx"),
            lb_xdp_tx_errors: delta(&self.lb_eth, &before.lb_eth, "xdp_tx_errors"),
            forwarded_dr: self.forwarded_dr - before.forwarded_dr,
            program_drops: self.dropped - before.dropped,
            sink: sink.iter().sum(),
        }
    }
}

/// The sanity checks; an error names the figures that did not add up, and the benchmark
/// then reports nothing.
fn check(
    program: Program,
    t: &Totals,
    sink: &[u64; 256],
    backend_macs: &[u8],
    flows: u32,
) -> Result<()> {
    ensure!(t.sink > 0, "the sink received nothing");
    // Every generated frame that entered the balancer's queue ran through its program (the
    // bridge adds the odd ARP or multicast frame of its own).
    ensure!(
        t.lb_program_runs >= t.into_lb && t.lb_program_runs - t.into_lb <= STRAY,
        "{} frames entered the balancer's queue, its program ran {} times",
        t.into_lb,
        t.lb_program_runs
    );
    // Every frame the program sent is at the sink or counted by veth as refused.
    let (delivered, verdicts) = (t.lb_xdp_tx, t.lb_xdp_tx + t.lb_xdp_tx_errors);
    match program {
        Program::Lb => {
            ensure!(
                t.forwarded_dr == verdicts,
                "the program counted {} frames forwarded_dr, veth counted {verdicts} XDP_TX \
                 ({delivered} delivered, {} refused)",
                t.forwarded_dr,
                t.lb_xdp_tx_errors
            );
            ensure!(
                delivered == t.sink,
                "veth delivered {delivered} XDP_TX frames, the sink counted {}",
                t.sink
            );
            ensure!(
                t.program_drops == 0,
                "the program dropped {} frames",
                t.program_drops
            );
            let to_backends: u64 = backend_macs.iter().map(|&m| sink[usize::from(m)]).sum();
            ensure!(
                to_backends == t.sink,
                "{} of {} frames at the sink were not addressed to a backend",
                t.sink - to_backends,
                t.sink
            );
            // Maglev over 65,537 slots and many flows: each backend near a third.
            for &m in backend_macs.iter().filter(|_| flows >= 256) {
                let share = sink[usize::from(m)] as f64 / t.sink as f64;
                ensure!(
                    share > 0.5 / backend_macs.len() as f64,
                    "backend ..:{m:02x} got {:.1} % of the frames",
                    share * 100.0
                );
            }
        }
        Program::Baseline => {
            let to_gen = sink[usize::from(GEN_MAC[5])];
            ensure!(
                to_gen == t.sink,
                "{} frames at the sink were not the generator's, swapped",
                t.sink - to_gen
            );
            // The baseline also bounces the bridge's stray frames, which the sink passes.
            ensure!(
                delivered >= t.sink && delivered - t.sink <= STRAY,
                "veth delivered {delivered} XDP_TX frames, the sink counted {}",
                t.sink
            );
        }
    }
    Ok(())
}

/// `ethtool -S dev` in `ns`, per-queue counters summed: `rx_queue_0_xdp_tx` and
/// `rx_queue_1_xdp_tx` both count under `xdp_tx`.
fn ethtool(ns: &str, dev: &str) -> Result<BTreeMap<String, u64>> {
    let out = netns::exec(ns, "ethtool", &["-S", dev])?;
    let mut m = BTreeMap::new();
    for line in out.lines().skip(1) {
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let Ok(v) = v.trim().parse::<u64>() else {
            continue;
        };
        let k = k
            .strip_prefix("rx_queue_")
            .or_else(|| k.strip_prefix("tx_queue_"))
            .and_then(|rest| rest.split_once('_'))
            .map_or(k, |(_, name)| name);
        *m.entry(k.to_owned()).or_insert(0) += v;
    }
    Ok(m)
}

/// NAPI in a kthread per queue (`threaded` on), or in softirq on the CPU that scheduled it.
fn set_threaded(ns: &str, dev: &str, on: bool) -> Result<()> {
    let path = format!("/sys/class/net/{dev}/threaded");
    netns::exec(
        ns,
        "sh",
        &["-c", &format!("echo {} > {path}", u8::from(on))],
    )
    .map(drop)
}

/// PIDs of the NAPI kthreads of interfaces named `dev` (`napi/<dev>-<id>`). Names are not
/// unique across namespaces, but no other lab runs threaded NAPI.
fn napi_threads(dev: &str) -> Result<Vec<u32>> {
    Ok(threads_named(&format!("napi/{dev}-"))?
        .into_iter()
        .map(|(_, pid)| pid)
        .collect())
}

/// PIDs of the per-CPU kthreads `<prefix><cpu>` of `cpus`.
fn kthreads(prefix: &str, cpus: &[usize]) -> Result<Vec<u32>> {
    Ok(threads_named(prefix)?
        .into_iter()
        .filter(|(n, _)| cpus.iter().any(|&c| c as u64 == *n))
        .map(|(_, pid)| pid)
        .collect())
}

/// (number after `prefix`, PID) of processes whose name is `<prefix><number>`, sorted.
fn threads_named(prefix: &str) -> Result<Vec<(u64, u32)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if let Some(id) = comm.trim().strip_prefix(prefix) {
            if let Ok(id) = id.parse::<u64>() {
                found.push((id, pid));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Restricts thread `pid` (0: the calling thread) to `cpu`, and makes it real-time
/// (SCHED_FIFO `priority`): with autogroups, a niced thread still shares its CPU evenly with
/// every other session's work (other builds on the machine), a real-time one gets 95 % of it
/// (the kernel keeps 5 % for the rest).
fn pin(pid: u32, cpu: usize, priority: i32) -> Result<()> {
    realtime(pid, priority)?;
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for cpu < 1024.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    // SAFETY: the set outlives the call; the size is the set's.
    let rc = unsafe {
        libc::sched_setaffinity(
            libc::pid_t::try_from(pid)?,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    let err = std::io::Error::last_os_error();
    // A NAPI thread of a detached program may be on its way out.
    if rc != 0 && err.raw_os_error() != Some(libc::ESRCH) {
        bail!("sched_setaffinity({pid}, cpu {cpu}): {err}");
    }
    Ok(())
}

/// SCHED_FIFO at `priority` for thread `pid` (0: the caller), or back to SCHED_OTHER with 0.
fn realtime(pid: u32, priority: i32) -> Result<()> {
    let policy = if priority > 0 {
        libc::SCHED_FIFO
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` outlives the call.
    let rc = unsafe { libc::sched_setscheduler(libc::pid_t::try_from(pid)?, policy, &param) };
    let err = std::io::Error::last_os_error();
    if rc != 0 && err.raw_os_error() != Some(libc::ESRCH) {
        bail!("sched_setscheduler({pid}, priority {priority}): {err}");
    }
    Ok(())
}

/// Time on CPU from a `schedstat` file, in nanoseconds.
fn cpu_ns(path: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("parsing {path}: {text}"))
}
