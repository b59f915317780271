//! Packet rate through a real interface: frames cross a veth into the load-balancer
//! namespace, the program (run by lbd, native XDP, DR) sends them back out towards the
//! backends, and on the other end of the veth `pktloop` counts each one and sends it back in
//! as the next flow's frame. In the same run, interleaved, the same loop with the
//! MAC-swapping XDP_TX baseline attached in place of the balancer.
//!
//! ```text
//!  bridge namespace                                      lb namespace
//!  pktloop (XDP on plb): count, next flow ─XDP_TX─► plb ═ veth ═ eth0: xdp_lb (lbd)
//!                                         ◄──────── plb ═ veth ═ eth0  or xdp_tx_baseline
//! ```
//!
//! The loop sits on the bridge-side end of the balancer's veth, its "switch port": the DR
//! frames arriving there carry the backends' MACs, which it counts per backend. A few
//! hundred frames sent from a socket start it; after that no frame is allocated, copied or
//! generated: the rate is what the two programs and two veth hops sustain. (This kernel has
//! no pktgen module and refuses `BPF_F_TEST_XDP_LIVE_FRAMES`; a socket generator would cost
//! an skb per frame, more than the balancer.)
//!
//! A veth has no hardware queues, interrupts or DMA: a frame sent into it is handled by the
//! receiving side's NAPI on the CPU that sent it, so a loop stays on the CPU it was seeded
//! from. 1 core is one loop on CPU 0, 2 cores one loop on each CPU, each on its own veth
//! queues: the CPU time is the whole path (the balancer, the loop, both hops). The dedicated
//! layout threads NAPI into kthreads, the balancer's alone on CPU 1 and the loop's on CPU 0,
//! and counts the balancer kthread's CPU time.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, PerCpuArray},
    programs::{Xdp, XdpMode},
};
use lb_tests::{agent::reason_packets, frames::Frame, lab::VIP, netns, Lab, LbdGuard};
use lb_userspace::dataplane::{HELPERS_OBJECT, PKTGEN_OBJECT};
use serde::Serialize;

/// The loop's source MAC: the baseline swaps MACs, so its frames come back addressed to
/// this one; no lab node has it.
const GEN_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0xfe];
const SRC_BASE: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 0);
const PORT_BASE: u16 = 1024;
/// Frames circulating per loop: four NAPI batches of 64, and no more than veth's ring of
/// 256 per queue, so no frame is ever refused for a full queue.
const IN_FLIGHT: usize = 256;
/// `PKTGEN_CONFIG` slot of the loop's stop flag.
const CFG_STOP: u32 = 8;
/// Loops running before the window opens: fill the flow table and settle the CPUs.
const WARMUP: Duration = Duration::from_millis(300);
/// Frames of the lab's own (ARP, multicast) that may reach the balancer's veth beside the
/// loop's during a round: the only slack the sanity checks allow.
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
    /// One loop on CPU 0: the balancer and the loop's program both run there.
    OneCore,
    /// A loop on CPU 0 and one on CPU 1, each CPU with its own veth queues.
    TwoCores,
    /// The balancer's veth queues served by threaded NAPI kthreads on CPU 1, alone there; the
    /// loop's (threaded too) on CPU 0.
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
    /// measured side limited the rate (the loop's kthread, in the dedicated layout).
    fn cores(self) -> f64 {
        match self {
            Layout::OneCore | Layout::Dedicated => 1.0,
            Layout::TwoCores => 2.0,
        }
    }

    fn loop_cpus(self) -> &'static [usize] {
        match self {
            Layout::OneCore | Layout::Dedicated => &[0],
            Layout::TwoCores => &[0, 1],
        }
    }
}

/// One measured window.
#[derive(Serialize, Clone)]
struct Sample {
    /// Frames that came back from the balancer per second.
    pps: f64,
    /// CPU the balancer's side used in the window, in cores: its NAPI kthreads (dedicated
    /// layout), or the loops' CPUs, which run everything (shared layouts).
    busy_cores: f64,
    /// Whole-round totals the sanity checks compared (warm-up included).
    totals: Totals,
}

/// Frame counts over a round, from the loop's side of the veth, the balancer's side, the
/// program and the loop's own count.
#[derive(Serialize, Clone, Default)]
struct Totals {
    /// Frames sent from a socket to start the loops (they reach the balancer as packets
    /// from the stack, not as XDP_TX frames).
    seeded: u64,
    /// Frames the loop's XDP_TX put into the balancer's veth queue (veth `xdp_tx` on the
    /// loop's side).
    into_lb: u64,
    /// Frames the loop sent that found the balancer's queue full (`xdp_tx_errors` there).
    lb_queue_full: u64,
    /// Frames the balancer's program ran on (veth `xdp_packets`).
    lb_program_runs: u64,
    /// XDP_TX frames veth delivered to the loop's side (`xdp_tx`), and those the loop's
    /// queue refused (`xdp_tx_errors`): together, the program's XDP_TX verdicts.
    lb_xdp_tx: u64,
    lb_xdp_tx_errors: u64,
    /// The program's own count of DR forwards (lbd's `forwarded_dr`; 0 for the baseline).
    forwarded_dr: u64,
    /// Of those, the frames forwarded from the per-CPU flow cache (lbd only).
    cache_hits: u64,
    /// Frames the program dropped, any reason (lbd only).
    program_drops: u64,
    /// Frames the loop counted coming back.
    sink: u64,
}

#[derive(Serialize)]
struct Row {
    layout: Layout,
    program: Program,
    samples: Vec<Sample>,
    median_pps: f64,
    median_busy_cores: f64,
    /// Received frames per second per fully busy core.
    median_pps_per_busy_core: f64,
    /// CPU time per frame over the whole path (the balancer, veth, the loop, veth).
    ns_per_frame: f64,
    /// `ns_per_frame` minus the baseline's: what the balancer costs per frame in place.
    ns_over_baseline: f64,
    /// Balancer's median pps over the baseline's, same layout.
    ratio_to_baseline: Option<f64>,
    ratio_per_busy_core: Option<f64>,
    /// Whether the measured threads were busy (at least 85 % of the layout's cores): if the
    /// baseline's were not, the loop's side limited it and only `ratio_per_busy_core` compares.
    saturated: bool,
    /// Share of the balancer's forwards that came from its flow cache, over every round.
    flow_cache_share: Option<f64>,
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
    /// Distinct flows (source address, source port) the loop cycles through, one
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
        "the packet-rate benchmark needs 2 CPUs (the loop and the balancer), this machine has {cpus}"
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
                        pin(pid, 1, 0)?;
                    }
                    for pid in napi_threads(&port)? {
                        pin(pid, 0, 0)?;
                    }
                }
                let before = Counters::read(&lab, &ends, &subject)?;
                let sample = ends.measure(layout, &frame, opts.window).with_context(|| {
                    format!("{} / {}, round {round}", layout.name(), program.name())
                })?;
                // Frames still in the rings come back before the totals are read.
                std::thread::sleep(Duration::from_millis(100));
                let after = Counters::read(&lab, &ends, &subject)?;
                drop(subject);
                let got = after.sink_minus(&before);
                let mut sample = sample;
                let seeded = (IN_FLIGHT * layout.loop_cpus().len()) as u64;
                sample.totals = after.totals(&before, &got, seeded);
                check(program, &sample.totals, &got, &backend_macs, flows).with_context(|| {
                    format!(
                        "{} / {}, round {round}: a sanity check failed, no figure is reported",
                        layout.name(),
                        program.name()
                    )
                })?;
                println!(
                    "  {:<21} {:<16} round {round}: {:>6.3} Mpps received, {:.2} cores busy{}",
                    layout.name(),
                    program.name(),
                    sample.pps / 1e6,
                    sample.busy_cores,
                    cache_share(sample.totals.forwarded_dr, sample.totals.cache_hits).map_or(
                        String::new(),
                        |c| format!(", {:.1} % from the flow cache", c * 100.0)
                    )
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
                median_busy_cores: median(s.iter().map(|s| s.busy_cores).collect()),
                median_pps_per_busy_core: per_core,
                ratio_to_baseline: (program == Program::Lb).then_some(pps / base),
                ratio_per_busy_core: (program == Program::Lb).then_some(per_core / base_per_core),
                saturated: median(s.iter().map(|s| s.busy_cores).collect())
                    >= 0.85 * layout.cores(),
                flow_cache_share: cache_share(
                    s.iter().map(|s| s.totals.forwarded_dr).sum(),
                    s.iter().map(|s| s.totals.cache_hits).sum(),
                ),
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
        "{:<21} {:<16} {:>9} {:>6} {:>10} {:>9} {:>9} {:>11} {:>7}",
        "layout", "program", "Mpps", "busy", "Mpps/core", "ns/frame", "vs base", "ratio", "cached"
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
            "{:<21} {:<16} {:>9.3} {:>6.2} {:>10.3} {:>9.0} {:>+9.0} {:>11} {:>7}",
            r.layout.name(),
            r.program.name(),
            r.median_pps / 1e6,
            r.median_busy_cores,
            r.median_pps_per_busy_core / 1e6,
            r.ns_per_frame,
            r.ns_over_baseline,
            ratio,
            r.flow_cache_share
                .map_or(String::new(), |c| format!("{:.1} %", c * 100.0))
        );
    }
    println!(
        "(ratio: received pps over the baseline's in the same layout; in brackets, per busy core; \
         '-' where the baseline's threads were not busy, so the loop's side limited it. ns/frame: CPU \
         time per frame of the measured threads: the whole path, or the LB core's kthread. cached: \
         share of the balancer's forwards from its per-CPU flow cache)"
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

/// Cache hits over DR forwards, for the balancer's rounds.
fn cache_share(forwarded_dr: u64, cache_hits: u64) -> Option<f64> {
    (forwarded_dr > 0).then(|| cache_hits as f64 / forwarded_dr as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The traffic loop, loaded in the bridge namespace and attached to the balancer's port.
struct Ends {
    ebpf: aya::Ebpf,
    ns: String,
    ifindex: u32,
}

impl Ends {
    fn attach(ns: &str, port: &str) -> Result<Ends> {
        let ifindex = netns::ifindex(ns, port)?;
        let (port, ns_name) = (port.to_owned(), ns.to_owned());
        netns::run_in(ns, move || {
            let mut ebpf = aya::Ebpf::load(PKTGEN_OBJECT)
                .context("loading the packet loop object (run as root)")?;
            let prog: &mut Xdp = ebpf
                .program_mut("pktloop")
                .context("no program pktloop")?
                .try_into()?;
            prog.load()?;
            prog.attach(&port, XdpMode::Driver)
                .with_context(|| format!("attaching pktloop to {port}"))?;
            Ok(Ends {
                ebpf,
                ns: ns_name,
                ifindex,
            })
        })
    }

    fn config(&mut self) -> Result<Array<&mut aya::maps::MapData, u32>> {
        Ok(Array::try_from(
            self.ebpf
                .map_mut("PKTGEN_CONFIG")
                .context("no map PKTGEN_CONFIG")?,
        )?)
    }

    fn configure(&mut self, flows: u32, ports: u32, macs: [u8; 12]) -> Result<()> {
        let mut config = self.config()?;
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

    /// Lets frames circulate, or (`true`) drops them as they come back.
    fn stop(&mut self, stop: bool) -> Result<()> {
        self.config()?.set(CFG_STOP, u32::from(stop), 0)?;
        Ok(())
    }

    /// Frames that came back from the balancer so far, per last byte of the destination MAC.
    fn sink(&self) -> Result<[u64; 256]> {
        let mut out = [0u64; 256];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.sink_counts(i as u32)?.iter().sum();
        }
        Ok(out)
    }

    /// Frames that came back so far, per CPU that counted them.
    fn sink_per_cpu(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for i in 0..256 {
            let counts = self.sink_counts(i)?;
            out.resize(counts.len(), 0);
            for (o, c) in out.iter_mut().zip(counts.iter()) {
                *o += c;
            }
        }
        Ok(out)
    }

    fn sink_counts(&self, mac_last: u32) -> Result<aya::maps::PerCpuValues<u64>> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("SINK_COUNT").context("no map SINK_COUNT")?)?;
        Ok(map.get(&mac_last, 0)?)
    }

    /// Seeds a loop on each of `layout`'s CPUs, lets it run for the warm-up and then
    /// `window`, measures what came back in the window, and stops the loops.
    fn measure(&mut self, layout: Layout, frame: &[u8], window: Duration) -> Result<Sample> {
        self.stop(false)?;
        let result = (|| {
            // The highest CPU first: its seed frames leave queue 0 before CPU 0's arrive, so
            // each loop keeps to its own CPU's queues.
            for &cpu in layout.loop_cpus().iter().rev() {
                seed(&self.ns, self.ifindex, cpu, frame, IN_FLIGHT)?;
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(WARMUP);
            let busy = || -> Result<u64> {
                if layout == Layout::Dedicated {
                    return Ok(napi_threads("eth0")?
                        .iter()
                        .filter_map(|pid| cpu_ns(&format!("/proc/{pid}/schedstat")).ok())
                        .sum());
                }
                busy_ns(layout.loop_cpus())
            };
            let (c0, b0, t0) = (self.sink_per_cpu()?, busy()?, Instant::now());
            std::thread::sleep(window);
            let (c1, b1, t1) = (self.sink_per_cpu()?, busy()?, Instant::now());
            let secs = (t1 - t0).as_secs_f64();
            let per_cpu: Vec<u64> = c1.iter().zip(&c0).map(|(a, b)| a - b).collect();
            let came_back: u64 = per_cpu.iter().sum();
            // The loops ran where the layout puts them: each of its CPUs counted its share,
            // no other CPU more than a stray frame (merged or wandering loops would measure
            // another layout).
            let loops = layout.loop_cpus();
            for (cpu, &n) in per_cpu.iter().enumerate() {
                let share = n as f64 / came_back.max(1) as f64;
                if loops.contains(&cpu) {
                    ensure!(
                        share >= 0.5 / loops.len() as f64,
                        "CPU {cpu} looped {:.1} % of the frames, expected about {:.0} %",
                        share * 100.0,
                        100.0 / loops.len() as f64
                    );
                } else {
                    ensure!(
                        n <= STRAY,
                        "CPU {cpu}, not in the layout, looped {n} frames"
                    );
                }
            }
            Ok(Sample {
                pps: came_back as f64 / secs,
                busy_cores: b1.saturating_sub(b0) as f64 / 1e9 / secs,
                totals: Totals::default(),
            })
        })();
        self.stop(true)?;
        result
    }
}

/// Sends `count` copies of `frame` out of `ifindex` (in `ns`) from `cpu`. Past the qdisc,
/// the kernel gives a frame the sending CPU's transmit queue, and veth hands it to the
/// peer's receive queue of that number: so a loop seeded from CPU c runs on CPU c's queues.
fn seed(ns: &str, ifindex: u32, cpu: usize, frame: &[u8], count: usize) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            let _in = netns::enter(ns)?;
            pin(0, cpu, 0)?;
            // SAFETY: plain socket calls on a descriptor this closure owns and closes; every
            // pointer passed lives across its call.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                ensure!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
                let one: libc::c_int = 1;
                let rc = libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
                ensure!(
                    rc == 0,
                    "PACKET_QDISC_BYPASS: {}",
                    std::io::Error::last_os_error()
                );
                let mut to: libc::sockaddr_ll = std::mem::zeroed();
                to.sll_family = libc::AF_PACKET as u16;
                to.sll_protocol = 0x0800u16.to_be();
                to.sll_ifindex = i32::try_from(ifindex)?;
                to.sll_halen = 6;
                to.sll_addr[..6].copy_from_slice(&frame[..6]);
                for _ in 0..count {
                    let sent = libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&to as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    );
                    ensure!(
                        sent == frame.len() as isize,
                        "seeding the loop: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// CPU time the given CPUs spent on anything but idling, from `/proc/stat`, in ns.
fn busy_ns(cpus: &[usize]) -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    // SAFETY: sysconf has no preconditions.
    let tick_ns = 1_000_000_000 / u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })?;
    let mut total = 0;
    for &cpu in cpus {
        let name = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .with_context(|| format!("no {name} in /proc/stat"))?;
        // user nice system idle iowait irq softirq steal ...
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        ensure!(v.len() >= 7, "short {name} line in /proc/stat: {line}");
        total += (v[0] + v[1] + v[2] + v[5] + v[6]) * tick_ns;
    }
    Ok(total)
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
    /// `ethtool -S <port>` on the loop's side.
    port_eth: BTreeMap<String, u64>,
    /// The program's own counters (lbd only; fresh maps per start).
    forwarded_dr: u64,
    cache_hits: u64,
    dropped: u64,
}

impl Counters {
    fn read(lab: &Lab, ends: &Ends, subject: &Subject<'_>) -> Result<Counters> {
        let (forwarded_dr, cache_hits, dropped) = match subject {
            Subject::Lb(lbd) => {
                let s = lbd.stats()?;
                let dropped = s
                    .verdicts
                    .iter()
                    .filter(|v| v.verdict == "drop")
                    .map(|v| v.packets)
                    .sum();
                (
                    reason_packets(&s, "forwarded_dr"),
                    s.flow_cache.hits,
                    dropped,
                )
            }
            Subject::Baseline { .. } => (0, 0, 0),
        };
        Ok(Counters {
            sink: ends.sink()?,
            lb_eth: ethtool(&lab.lb().ns, "eth0")?,
            port_eth: ethtool(lab.bridge_ns(), &lab.lb().bridge_port)?,
            forwarded_dr,
            cache_hits,
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

    fn totals(&self, before: &Counters, sink: &[u64; 256], seeded: u64) -> Totals {
        let delta = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>, key: &str| {
            now.get(key).copied().unwrap_or(0) - then.get(key).copied().unwrap_or(0)
        };
        Totals {
            seeded,
            into_lb: delta(&self.port_eth, &before.port_eth, "xdp_tx"),
            lb_queue_full: delta(&self.port_eth, &before.port_eth, "xdp_tx_errors"),
            lb_program_runs: delta(&self.lb_eth, &before.lb_eth, "xdp_packets"),
            lb_xdp_tx: delta(&self.lb_eth, &before.lb_eth, "xdp_tx"),
            lb_xdp_tx_errors: delta(&self.lb_eth, &before.lb_eth, "xdp_tx_errors"),
            forwarded_dr: self.forwarded_dr - before.forwarded_dr,
            cache_hits: self.cache_hits - before.cache_hits,
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
    ensure!(t.sink > 0, "nothing came back from the balancer");
    // Every frame seeded or sent by the loop into the balancer's queue ran through its
    // program (the bridge adds the odd ARP or multicast frame of its own).
    let sent = t.seeded + t.into_lb;
    ensure!(
        t.lb_program_runs >= sent && t.lb_program_runs - sent <= STRAY,
        "{} frames entered the balancer's queue ({} seeded), its program ran {} times",
        sent,
        t.seeded,
        t.lb_program_runs
    );
    // Every frame the program sent came back or was counted by veth as refused.
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
                "{} frames at the sink were not the loop's, swapped",
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
