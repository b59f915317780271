//! The flow table in the real program (`BPF_PROG_TEST_RUN`): established flows keep their
//! backend when the lookup table changes; new connections, removed backends and idle
//! flows go through the table again.

use std::collections::BTreeMap;

use lb_common::{
    flow::flow_cache_slot,
    settings::Settings,
    stats::{Reason, Verdict},
    vip::{VipInfo, MODE_DR, VIP_F_ALL_DOWN_PASS, VIP_F_SOURCE_AFFINITY},
};
use lb_tests::{
    frames,
    program::{
        backend_keys, flow_key, vip_key, Harness, CLIENT, SEED, TABLE_SIZE, UNRESOLVED_BACKEND_ID,
        VIP,
    },
    require_root,
};
use lb_userspace::maglev;

macro_rules! harness {
    ($name:literal) => {{
        if !require_root($name) {
            return;
        }
        Harness::load()
    }};
}

use frames::vip_tcp_established as established;

/// Runs `frame`, which must be forwarded, and returns the backend index it went to.
fn forward(h: &mut Harness, frame: &[u8]) -> usize {
    let (verdict, out, reason) = h.run(frame);
    assert_eq!(Verdict::from_u32(verdict), Some(Verdict::Tx), "{reason:?}");
    Harness::backend_of(&out)
}

/// A table sending every flow to backend `i`.
fn all_to(i: u32) -> Vec<u32> {
    vec![i; TABLE_SIZE as usize]
}

#[test]
fn a_flow_table_hit_wins_over_the_lookup_table() {
    let mut h = harness!("a_flow_table_hit_wins_over_the_lookup_table");
    let first = forward(&mut h, &frames::vip_tcp(40000)) as u32;
    let other = (first + 1) % 3;
    h.set_table(all_to(other));
    for _ in 0..3 {
        assert_eq!(
            forward(&mut h, &established(40000)),
            first as usize,
            "established flow moved"
        );
    }
    // A flow the table has not seen follows the new table.
    assert_eq!(forward(&mut h, &established(40001)), other as usize);
}

#[test]
fn a_syn_on_an_existing_tuple_is_balanced_again() {
    let mut h = harness!("a_syn_on_an_existing_tuple_is_balanced_again");
    let first = forward(&mut h, &frames::vip_tcp(40000)) as u32;
    let other = (first + 1) % 3;
    h.set_table(all_to(other));
    // Port reuse: a new connection on the same 5-tuple is a new flow.
    assert_eq!(forward(&mut h, &frames::vip_tcp(40000)), other as usize);
    assert_eq!(
        forward(&mut h, &established(40000)),
        other as usize,
        "and it is pinned there"
    );
}

#[test]
fn a_removed_backends_flow_is_balanced_again() {
    let mut h = harness!("a_removed_backends_flow_is_balanced_again");
    let first = forward(&mut h, &frames::vip_tcp(40000)) as u32;
    // The agent's order for a removal: a table without the backend, then the entry goes.
    let remaining: Vec<_> = backend_keys()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 != first)
        .map(|(_, k)| k)
        .collect();
    let ids: Vec<u32> = (0..3).filter(|&i| i != first).collect();
    let table: Vec<u32> = maglev::build(&remaining, TABLE_SIZE, SEED)
        .into_iter()
        .map(|i| ids[i as usize])
        .collect();
    h.set_table(table);
    assert_eq!(
        forward(&mut h, &established(40000)),
        first as usize,
        "kept while the backend exists (drain)"
    );
    h.set_backend_present(first, false);
    let now = forward(&mut h, &established(40000));
    assert_ne!(now, first as usize);
    assert_eq!(
        now,
        h.expected_mac_index(40000),
        "re-hashed through the new table"
    );
}

#[test]
fn an_idle_flow_is_balanced_again() {
    let mut h = harness!("an_idle_flow_is_balanced_again");
    let first = forward(&mut h, &frames::vip_tcp(40000)) as u32;
    let other = (first + 1) % 3;
    h.set_table(all_to(other));
    h.dp.set_settings(Settings {
        hash_seed: SEED,
        tcp_idle_ns: 1,
        udp_idle_ns: 1,
        ..Settings::default()
    })
    .unwrap();
    // Entries are stamped with the coarse clock, which moves once a tick (1-10 ms): within
    // a tick an entry is 0 ns old, which no timeout exceeds.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(
        forward(&mut h, &established(40000)),
        other as usize,
        "an entry older than the idle timeout no longer pins"
    );
}

#[test]
fn source_affinity_sends_every_connection_of_a_client_to_one_backend() {
    let mut h = harness!("source_affinity_sends_every_connection_of_a_client_to_one_backend");
    h.dp.set_vip(
        vip_key(80, 6),
        VipInfo {
            id: 0,
            mode: MODE_DR,
            table_offset: 0,
            table_size: TABLE_SIZE,
            flags: VIP_F_SOURCE_AFFINITY,
        },
    )
    .unwrap();
    let first = forward(&mut h, &frames::vip_tcp(40000));
    for sport in 40001..40040 {
        assert_eq!(
            forward(&mut h, &frames::vip_tcp(sport)),
            first,
            "port {sport}"
        );
    }
    // Another client may land elsewhere: over 40 clients, more than one backend is used.
    let spread: std::collections::HashSet<usize> = (1..=40u8)
        .map(|i| {
            forward(
                &mut h,
                &frames::tcp(
                    std::net::Ipv4Addr::new(10, 98, 0, i),
                    40000,
                    lb_tests::program::VIP,
                    80,
                ),
            )
        })
        .collect();
    assert!(spread.len() > 1);
    // A new SYN keeps the client's backend even when the table changed: that is the point.
    h.set_table(all_to(((first + 1) % 3) as u32));
    assert_eq!(forward(&mut h, &frames::vip_tcp(40100)), first);
}

#[test]
fn table_updates_write_only_the_slots_that_change() {
    let mut h = harness!("table_updates_write_only_the_slots_that_change");
    let table = h.table.clone();
    assert_eq!(
        h.dp.write_table(0, &table).unwrap(),
        0,
        "same table: nothing written"
    );
    let mut changed = table.clone();
    for slot in changed.iter_mut().step_by(400) {
        *slot = (*slot + 1) % 3;
    }
    let expected = table.iter().zip(&changed).filter(|(a, b)| a != b).count();
    assert_eq!(h.dp.write_table(0, &changed).unwrap(), expected);
    assert_eq!(
        h.dp.read_table(0, TABLE_SIZE),
        changed,
        "the kernel's map holds what was written"
    );
    assert!(
        h.dp.write_table(4 * TABLE_SIZE - 1, &[0, 0]).is_err(),
        "writes past the capacity are refused"
    );
}

#[test]
fn a_vip_without_backends_drops_or_passes_as_its_all_down_policy_says() {
    let mut h = harness!("a_vip_without_backends_drops_or_passes_as_its_all_down_policy_says");
    h.set_table(all_to(lb_common::backend::NO_BACKEND));
    let frame = frames::vip_tcp(40000);
    let (verdict, _, reason) = h.run(&frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Drop), Reason::DropNoBackend)
    );
    for flags in [
        VIP_F_ALL_DOWN_PASS,
        VIP_F_ALL_DOWN_PASS | VIP_F_SOURCE_AFFINITY,
    ] {
        h.dp.set_vip(
            vip_key(80, 6),
            VipInfo {
                id: 0,
                mode: MODE_DR,
                table_offset: 0,
                table_size: TABLE_SIZE,
                flags,
            },
        )
        .unwrap();
        let (verdict, out, reason) = h.run(&frame);
        assert_eq!(
            (Verdict::from_u32(verdict), reason),
            (Some(Verdict::Pass), Reason::PassNoBackend)
        );
        assert_eq!(out, frame, "a passed frame is untouched");
    }
    // Backends again: balanced as before, whatever the policy.
    h.set_table(all_to(1));
    assert_eq!(forward(&mut h, &frames::vip_tcp(40001)), 1);
}

#[test]
fn flow_stats_count_the_packets_balanced_through_the_lookup_table() {
    let mut h = harness!("flow_stats_count_the_packets_balanced_through_the_lookup_table");
    let hashed = |h: &Harness| h.dp.flows_hashed().unwrap();
    let start = hashed(&h);
    forward(&mut h, &frames::vip_tcp(40000));
    assert_eq!(hashed(&h), start + 1, "a new flow");
    for _ in 0..3 {
        forward(&mut h, &established(40000));
    }
    assert_eq!(hashed(&h), start + 1, "its packets find their entry");
    forward(&mut h, &frames::vip_tcp(40000));
    assert_eq!(
        hashed(&h),
        start + 2,
        "a SYN on a known tuple is balanced again"
    );
    forward(&mut h, &established(40001));
    assert_eq!(hashed(&h), start + 3, "an unknown flow");
    h.run(&frames::tcp(
        lb_tests::program::CLIENT,
        40000,
        std::net::Ipv4Addr::new(10, 99, 0, 10),
        80,
    ));
    assert_eq!(hashed(&h), start + 3, "traffic for no VIP is not balanced");
}

/// Entries of the shared flow table.
fn shared_flows(h: &Harness) -> u64 {
    h.dp.flows_per_backend().unwrap().values().sum()
}

#[test]
fn a_syn_is_pinned_on_its_cpu_and_enters_the_flow_table_with_the_next_packet() {
    let mut h =
        harness!("a_syn_is_pinned_on_its_cpu_and_enters_the_flow_table_with_the_next_packet");
    let first = forward(&mut h, &frames::vip_tcp(40000));
    assert_eq!(
        shared_flows(&h),
        0,
        "a SYN alone stays out of the flow table"
    );
    let other = (first as u32 + 1) % 3;
    h.set_table(all_to(other));
    assert_eq!(
        forward(&mut h, &established(40000)),
        first,
        "the handshake's ACK follows its SYN on the SYN's CPU"
    );
    assert_eq!(shared_flows(&h), 1, "the ACK pinned the flow for every CPU");
    let cpus = Harness::cpus();
    for cpu in 0..cpus {
        h.move_to_cpu(cpu);
        assert_eq!(
            forward(&mut h, &established(40000)),
            first,
            "CPU {cpu} finds the pin"
        );
    }
}

/// The one case the per-CPU pin of a SYN does not cover, shown so it is known: the ACK on
/// another CPU than its SYN, with the lookup table changed in between (a NIC's RSS keeps a
/// flow on one CPU; without a change, the ACK hashes to the SYN's backend anyway).
#[test]
fn a_handshake_split_over_two_cpus_follows_the_table_at_its_ack() {
    let mut h = harness!("a_handshake_split_over_two_cpus_follows_the_table_at_its_ack");
    let cpus = Harness::cpus();
    assert!(
        cpus >= 2,
        "this test needs two CPUs, the machine has {cpus}"
    );
    h.move_to_cpu(0);
    let first = forward(&mut h, &frames::vip_tcp(40000));
    h.move_to_cpu(1);
    assert_eq!(
        forward(&mut h, &established(40000)),
        first,
        "same table: same backend"
    );

    h.move_to_cpu(0);
    let first = forward(&mut h, &frames::vip_tcp(40001));
    let other = (first as u32 + 1) % 3;
    h.set_table(all_to(other));
    h.move_to_cpu(1);
    assert_eq!(forward(&mut h, &established(40001)), other as usize);
}

#[test]
fn cached_flows_of_a_removed_vip_are_not_forwarded() {
    let mut h = harness!("cached_flows_of_a_removed_vip_are_not_forwarded");
    forward(&mut h, &frames::vip_tcp(40000));
    forward(&mut h, &established(40000));
    forward(&mut h, &established(40000));
    h.dp.remove_vip(&vip_key(80, 6)).unwrap();
    let (verdict, out, reason) = h.run(&established(40000));
    assert_eq!(reason, Reason::PassNotVip);
    assert_eq!(Verdict::from_u32(verdict), Some(Verdict::Pass));
    assert_eq!(out, established(40000), "passed untouched");
}

#[test]
fn cached_flows_follow_a_vip_redefined_with_source_affinity() {
    let mut h = harness!("cached_flows_follow_a_vip_redefined_with_source_affinity");
    // Connections from one client, pinned per connection.
    let mut backends = std::collections::BTreeSet::new();
    for port in 40000..40030 {
        backends.insert(forward(&mut h, &frames::vip_tcp(port)));
        forward(&mut h, &established(port));
    }
    assert!(
        backends.len() > 1,
        "30 connections spread over the backends"
    );
    let info = h.dp.vip(&vip_key(80, 6)).unwrap();
    h.dp.set_vip(
        vip_key(80, 6),
        VipInfo {
            flags: info.flags | VIP_F_SOURCE_AFFINITY,
            ..info
        },
    )
    .unwrap();
    let after: std::collections::BTreeSet<usize> = (40000..40030)
        .map(|port| forward(&mut h, &established(port)))
        .collect();
    assert_eq!(
        after.len(),
        1,
        "with affinity, one client, one backend: {after:?}"
    );
}

#[test]
fn the_flow_cache_counts_the_packets_it_forwards() {
    let mut h = harness!("the_flow_cache_counts_the_packets_it_forwards");
    let hits = |h: &Harness| h.dp.flow_cache_hits().unwrap();
    let first = forward(&mut h, &frames::vip_tcp(40000));
    assert_eq!(hits(&h), 0, "a SYN takes the full path");
    for _ in 0..3 {
        assert_eq!(forward(&mut h, &established(40000)), first);
    }
    assert_eq!(hits(&h), 3, "the ACK that shares the flow, then two more");
    // A backend of another VIP removed: the epoch moves on, the next packet takes the
    // full path (and finds the flow in the flow table), the one after it the cache.
    h.dp.set_backend(UNRESOLVED_BACKEND_ID, Default::default())
        .unwrap();
    assert_eq!(forward(&mut h, &established(40000)), first);
    assert_eq!(hits(&h), 3);
    assert_eq!(forward(&mut h, &established(40000)), first);
    assert_eq!(hits(&h), 4);
    assert_eq!(
        h.dp.flows_hashed().unwrap(),
        1,
        "only the SYN used the lookup table"
    );
}

/// Three source ports whose `frames::vip_tcp` tuples take the same flow-cache slot (so a
/// direct-mapped cache could hold only one of them at a time).
fn ports_of_one_slot(h: &Harness) -> [u16; 3] {
    let mask = h.dp.flow_cache_slots() - 1;
    let slot = |sport: u16| {
        flow_cache_slot(
            &flow_key(CLIENT.into(), sport, VIP.into(), 80, 6), // TCP
            mask,
        )
    };
    let mut by_slot: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    for port in 1024..=u16::MAX {
        let ports = by_slot.entry(slot(port)).or_default();
        ports.push(port);
        if let [a, b, c] = ports[..] {
            return [a, b, c];
        }
    }
    panic!("no three ports share a slot of {} (mask {mask})", mask + 1);
}

#[test]
fn two_busy_flows_of_one_cache_slot_both_stay_cached() {
    let mut h = harness!("two_busy_flows_of_one_cache_slot_both_stay_cached");
    let hits = |h: &Harness| h.dp.flow_cache_hits().unwrap();
    let [a, b, c] = ports_of_one_slot(&h);
    for port in [a, b] {
        let first = forward(&mut h, &frames::vip_tcp(port));
        assert_eq!(forward(&mut h, &established(port)), first);
    }
    let before = hits(&h);
    for _ in 0..3 {
        forward(&mut h, &established(a));
        forward(&mut h, &established(b));
    }
    assert_eq!(
        hits(&h) - before,
        6,
        "ports {a} and {b}, alternating, both forwarded from the cache"
    );
    // A third flow of the set takes the place of the entry filled longer ago: `a`'s.
    let first = forward(&mut h, &frames::vip_tcp(c));
    assert_eq!(forward(&mut h, &established(c)), first);
    let before = hits(&h);
    forward(&mut h, &established(b));
    assert_eq!(hits(&h) - before, 1, "port {b} still cached");
    forward(&mut h, &established(a));
    assert_eq!(hits(&h) - before, 1, "port {a} replaced by port {c}");
}
