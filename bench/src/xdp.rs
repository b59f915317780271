//! Per-packet cost of the XDP program (DR and NAT, IPv4 and IPv6), timed by the kernel
//! (`BPF_PROG_TEST_RUN` with `repeat`), beside two baselines loaded from the same object in the same run: an empty
//! XDP_PASS program (the harness's own cost) and a MAC-swapping XDP_TX program (the least
//! a forwarding program does).

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{anyhow, Context as _};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_tests::{
    frames::{self, Frame},
    program::Harness,
};
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
    /// NAT cases run `nat_repeat` times per call (see `run`), as many calls as make `repeat`.
    nat_repeat: u32,
    cases: Vec<Case>,
}

fn stats(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[0], samples[samples.len() / 2])
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

/// A measured case: name, program, frame length, samples (mean ns per run each).
type Measured = (&'static str, &'static str, usize, Vec<f64>);

fn ns(samples: Vec<Duration>) -> Vec<f64> {
    samples.into_iter().map(|d| d.as_secs_f64() * 1e9).collect()
}

fn cases(measured: Vec<Measured>, baseline: usize) -> Vec<Case> {
    let tx_median = stats(measured[baseline].3.clone()).1;
    measured
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
        .collect()
}

fn print(cases: &[Case]) {
    println!(
        "{:<34} {:<16} {:>9} {:>11} {:>13} {:>11}",
        "case", "program", "min ns", "median ns", "vs TX base", "Mpps/core"
    );
    for c in cases {
        println!(
            "{:<34} {:<16} {:>9.1} {:>11.1} {:>+13.1} {:>11.1}",
            c.name, c.program, c.min_ns, c.median_ns, c.over_tx_baseline_ns, c.mpps_per_core
        );
    }
}

pub fn run(out_dir: &Path, repeat: u32, rounds: usize) -> anyhow::Result<()> {
    use lb_tests::program::{CLIENT6, VIP6};
    let vip_tcp = frames::vip_tcp_established(40000);
    let vip_syn = frames::vip_tcp(40000);
    let vip6_tcp = Frame::new(CLIENT6.into(), 40000, VIP6.into(), 80)
        .established()
        .tcp();
    let non_vip = frames::tcp(lb_tests::program::CLIENT, 40000, "10.99.0.10".parse()?, 80);
    let arp = frames::arp_who_has_vip();
    // Everything runs in a namespace with fixed routes and neighbours (NAT's FIB lookup is
    // part of its cost); frames arrive on the client side, NAT replies on the backend side.
    let mut harness = Harness::load_in_fibnet();
    let (cl0, bk0) = (harness.net().cl0, harness.net().bk0);

    let mut lb = |ifindex: u32, frame: &[u8]| -> anyhow::Result<Vec<f64>> {
        (0..rounds)
            .map(|_| {
                Ok(harness
                    .dp
                    .time_run_on(ifindex, frame, repeat)?
                    .as_secs_f64()
                    * 1e9)
            })
            .collect()
    };
    let repeated: Vec<Measured> = vec![
        (
            "empty program, XDP_PASS",
            "xdp_pass",
            vip_tcp.len(),
            ns(time_baseline("xdp_pass", &vip_tcp, repeat, rounds)?),
        ),
        (
            "swap MACs, XDP_TX (baseline)",
            "xdp_tx_baseline",
            vip_tcp.len(),
            ns(time_baseline("xdp_tx_baseline", &vip_tcp, repeat, rounds)?),
        ),
        (
            "VIP TCP established, DR",
            "xdp_lb",
            vip_tcp.len(),
            lb(cl0, &vip_tcp)?,
        ),
        (
            "VIP TCP SYN (new flow), DR",
            "xdp_lb",
            vip_syn.len(),
            lb(cl0, &vip_syn)?,
        ),
        (
            "VIP IPv6 TCP established, DR",
            "xdp_lb",
            vip6_tcp.len(),
            lb(cl0, &vip6_tcp)?,
        ),
        (
            "non-VIP TCP, passed",
            "xdp_lb",
            non_vip.len(),
            lb(cl0, &non_vip)?,
        ),
        ("ARP, passed", "xdp_lb", arp.len(), lb(cl0, &arp)?),
        (
            "flow table hit, shared LRU",
            "flow_lru_shared",
            vip_tcp.len(),
            ns(time_baseline("flow_lru_shared", &vip_tcp, repeat, rounds)?),
        ),
        (
            "flow table hit, per-CPU LRU",
            "flow_lru_percpu",
            vip_tcp.len(),
            ns(time_baseline("flow_lru_percpu", &vip_tcp, repeat, rounds)?),
        ),
    ];

    // NAT with `repeat`: the frame a run leaves is the next run's input, so the backend is
    // made the VIP itself (same address and port): every run takes the whole NAT path
    // (connection refresh, FIB lookup, checksum updates of zero effect, TTL, MACs, send) on
    // the same frame, until the TTL (255) runs out, which `NAT_REPEAT` stays below.
    // (Each call also costs an RCU grace period in the kernel's XDP dispatcher, so calls
    // are few and long.)
    const NAT_REPEAT: u32 = 250;
    let identity = identity_nat(&mut harness)?;
    // A tenth of `repeat` runs per round.
    let nat_calls = (repeat / NAT_REPEAT / 10).max(1);
    let mut lb_nat = |ifindex: u32, frame: &[u8]| -> anyhow::Result<Vec<f64>> {
        (0..rounds)
            .map(|_| {
                let mut total = 0.0;
                for _ in 0..nat_calls {
                    total += harness
                        .dp
                        .time_run_on(ifindex, frame, NAT_REPEAT)?
                        .as_secs_f64()
                        * 1e9;
                }
                Ok(total / nat_calls as f64)
            })
            .collect()
    };
    let mut repeated = repeated;
    for (name, ifindex, frame) in [
        ("NAT IPv4 TCP request, XDP_TX", cl0, &identity.request4),
        ("NAT IPv4 TCP request, redirect", bk0, &identity.request4),
        ("NAT IPv4 TCP reply, redirect", bk0, &identity.reply4),
        ("NAT IPv6 TCP request, XDP_TX", cl0, &identity.request6),
        ("NAT IPv6 TCP request, redirect", bk0, &identity.request6),
        ("NAT IPv6 TCP reply, redirect", bk0, &identity.reply6),
    ] {
        repeated.insert(
            repeated.len() - 4,
            (name, "xdp_lb", frame.len(), lb_nat(ifindex, frame)?),
        );
    }
    identity.undo(&mut harness)?;
    // Now that NAT connections exist, a packet that is not for a VIP is also looked up as
    // a possible NAT reply.
    let non_vip_nat: Vec<f64> = (0..rounds)
        .map(|_| Ok(harness.dp.time_run_on(cl0, &non_vip, repeat)?.as_secs_f64() * 1e9))
        .collect::<anyhow::Result<_>>()?;
    let at = repeated.len() - 3;
    repeated.insert(
        at,
        (
            "non-VIP TCP, passed, NAT in use",
            "xdp_lb",
            non_vip.len(),
            non_vip_nat,
        ),
    );
    let repeated = cases(repeated, 1);

    println!(
        "XDP per-packet cost (BPF_PROG_TEST_RUN, {repeat} runs x {rounds} rounds, kernel-timed)"
    );
    print(&repeated);
    let report = Report {
        benchmark: "xdp_per_packet",
        machine: crate::machine::describe(),
        repeat,
        rounds,
        nat_repeat: NAT_REPEAT,
        cases: repeated,
    };
    let path = out_dir.join("xdp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// Frames for NAT timed with `repeat` (see `run`).
struct IdentityNat {
    request4: Vec<u8>,
    reply4: Vec<u8>,
    request6: Vec<u8>,
    reply6: Vec<u8>,
}

/// Points every NAT backend at its VIP (address and port) and gives the VIPs a neighbour on
/// the client side, so translating is the identity and the FIB routes to a known MAC.
fn identity_nat(h: &mut Harness) -> anyhow::Result<IdentityNat> {
    use lb_tests::program::{
        backend, CLIENT, CLIENT6, NAT6_BACKEND_BASE, NAT_BACKEND_BASE, NAT_PORT, NAT_VIP, NAT_VIP6,
        ROUTER_MAC,
    };
    let mac = ROUTER_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    for vip in [IpAddr::from(NAT_VIP), NAT_VIP6.into()] {
        lb_tests::netns::ip(
            &h.net().name,
            &[
                "neigh",
                "add",
                &vip.to_string(),
                "lladdr",
                &mac,
                "dev",
                "cl0",
                "nud",
                "permanent",
            ],
        )?;
    }
    for i in 0..3 {
        h.dp.set_backend(
            NAT_BACKEND_BASE + i,
            backend(NAT_VIP.into(), None, NAT_PORT),
        )?;
        h.dp.set_backend(
            NAT6_BACKEND_BASE + i,
            backend(NAT_VIP6.into(), None, NAT_PORT),
        )?;
    }
    let frames = |client: IpAddr, vip: IpAddr| {
        (
            Frame::new(client, 40000, vip, NAT_PORT)
                .established()
                .ttl(255)
                .tcp(),
            Frame::new(vip, NAT_PORT, client, 40000)
                .established()
                .ttl(255)
                .tcp(),
        )
    };
    let (request4, reply4) = frames(CLIENT.into(), NAT_VIP.into());
    let (request6, reply6) = frames(CLIENT6.into(), NAT_VIP6.into());
    let cl0 = h.net().cl0;
    for request in [&request4, &request6] {
        // Records the connection the replies belong to.
        let (verdict, _) = h.dp.test_run_on(cl0, request)?;
        anyhow::ensure!(
            verdict == 3,
            "identity NAT request not sent with XDP_TX: {verdict}"
        );
    }
    Ok(IdentityNat {
        request4,
        reply4,
        request6,
        reply6,
    })
}

impl IdentityNat {
    /// Restores the harness's NAT backends.
    fn undo(self, h: &mut Harness) -> anyhow::Result<()> {
        use lb_tests::program::{
            backend, nat_backend, nat_backend6, NAT6_BACKEND_BASE, NAT_BACKEND_BASE,
            NAT_BACKEND_PORT,
        };
        for i in 0..3u32 {
            h.dp.set_backend(
                NAT_BACKEND_BASE + i,
                backend(nat_backend(i as usize).into(), None, NAT_BACKEND_PORT),
            )?;
            h.dp.set_backend(
                NAT6_BACKEND_BASE + i,
                backend(nat_backend6(i as usize).into(), None, NAT_BACKEND_PORT),
            )?;
        }
        Ok(())
    }
}
