//! Test support: a simulated LAN of VRRP machines with a virtual clock.
//!
//! Every advert travels as the bytes of a real IP packet (emitted by [`super::wire`], parsed by
//! every receiver), so the codec and the machine are exercised together. Delivery takes
//! `latency`; links can be cut one way or both, and adverts lost at random (seeded, so every
//! run is the same). Adverts due at the same instant as a timer are delivered first, as the IO
//! layer is told to do.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use super::{
    machine::{Action, Config, Machine, State},
    wire::{Advert, ChecksumKind, IpHeader},
};

/// What happened on the LAN, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    State(State),
    Advert { priority: u8 },
    Gratuitous { repeat: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Since the LAN's epoch.
    pub at: Duration,
    pub node: usize,
    pub what: What,
}

pub struct Node {
    pub config: Config,
    pub machine: Machine,
    /// Running; a crashed or stopped node neither sends, receives nor runs timers.
    pub up: bool,
    pub holds_vips: bool,
    pub xdp_attached: bool,
    ident: u16,
}

struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    bytes: Vec<u8>,
}

pub struct Lan {
    pub epoch: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub latency: Duration,
    pub log: Vec<Event>,
    in_flight: Vec<InFlight>,
    seq: u64,
    blocked: HashSet<(usize, usize)>,
    /// Per-mille of adverts lost, and the generator deciding which.
    loss: Option<(u32, u64)>,
}

/// Guard against a machine that keeps itself busy forever at one instant.
const MAX_STEPS: usize = 1_000_000;

impl Lan {
    /// A LAN of machines built from `configs`, none started.
    pub fn new(configs: Vec<Config>, latency: Duration) -> Lan {
        let epoch = Instant::now();
        let nodes = configs
            .into_iter()
            .map(|config| Node {
                machine: Machine::new(config.clone()).expect("valid config"),
                config,
                up: false,
                holds_vips: false,
                xdp_attached: false,
                ident: 0,
            })
            .collect();
        Lan {
            epoch,
            now: epoch,
            nodes,
            latency,
            log: Vec::new(),
            in_flight: Vec::new(),
            seq: 0,
            blocked: HashSet::new(),
            loss: None,
        }
    }

    /// The virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    pub fn start(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.up = true;
        node.machine.startup(now);
        self.flush(i);
    }

    /// kill -9: the node vanishes without a word.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.in_flight.retain(|m| m.to != i);
    }

    /// A clean stop: the machine shuts down (a master sends priority 0), then the node is gone.
    pub fn stop(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].machine.shutdown(now);
        self.flush(i);
        self.nodes[i].up = false;
        self.in_flight.retain(|m| m.to != i);
    }

    /// A new process on a crashed or stopped node: fresh machine, started now.
    pub fn restart(&mut self, i: usize) {
        let config = self.nodes[i].config.clone();
        self.nodes[i].machine = Machine::new(config).expect("valid config");
        self.nodes[i].ident = 0;
        self.start(i);
    }

    /// Adverts from `from` no longer reach `to`.
    pub fn block(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Lose `per_mille` of the adverts, chosen by a generator seeded with `seed`.
    pub fn set_loss(&mut self, per_mille: u32, seed: u64) {
        self.loss = (per_mille > 0).then_some((per_mille, seed | 1));
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    pub fn run_until(&mut self, end: Instant) {
        for step in 0.. {
            assert!(
                step < MAX_STEPS,
                "{MAX_STEPS} events before {:?}: a storm",
                end - self.epoch
            );
            let message = self.in_flight.iter().map(|m| (m.at, m.seq)).min();
            let timer = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].up)
                .filter_map(|i| self.nodes[i].machine.poll_timeout().map(|t| (t, i)))
                .min();
            let next = match (message, timer) {
                (Some((m, _)), Some((t, _))) => m.min(t),
                (Some((m, _)), None) => m,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            match (message, timer) {
                (Some((m, seq)), _) if m <= next => self.deliver(seq),
                (_, Some((_, i))) => {
                    let now = self.now;
                    self.nodes[i].machine.handle_timeout(now);
                    self.flush(i);
                }
                _ => unreachable!("next came from one of them"),
            }
        }
        assert!(self.now <= end, "the LAN ran past its end");
        self.now = end;
    }

    fn deliver(&mut self, seq: u64) {
        let pos = self
            .in_flight
            .iter()
            .position(|m| m.seq == seq)
            .expect("in flight");
        let m = self.in_flight.swap_remove(pos);
        if !self.nodes[m.to].up {
            return;
        }
        let advert = Advert::parse_ip(&m.bytes).expect("adverts on the LAN parse");
        let now = self.now;
        let _ = self.nodes[m.to]
            .machine
            .handle_advert(now, &advert.vrrp, advert.ip.src());
        self.flush(m.to);
    }

    fn lost(&mut self) -> bool {
        let Some((per_mille, state)) = &mut self.loss else {
            return false;
        };
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state % 1000) < u64::from(*per_mille)
    }

    /// Carries out node `i`'s actions.
    fn flush(&mut self, i: usize) {
        let at = self.elapsed();
        while let Some(action) = self.nodes[i].machine.poll_action() {
            match action {
                Action::SendAdvert(repr) => {
                    self.log.push(Event {
                        at,
                        node: i,
                        what: What::Advert {
                            priority: repr.priority,
                        },
                    });
                    let node = &mut self.nodes[i];
                    node.ident = node.ident.wrapping_add(1);
                    let src = node.config.primary_addr;
                    let group = crate::vrrp::wire::Family::of(src).multicast_group();
                    let ip =
                        IpHeader::for_advert(src, group, node.ident, 0x12345).expect("one family");
                    let checksum = ChecksumKind::default_for(repr.version);
                    let bytes = Advert {
                        ip,
                        vrrp: repr,
                        checksum,
                    }
                    .to_ip_bytes()
                    .expect("emits");
                    for to in 0..self.nodes.len() {
                        if to == i
                            || !self.nodes[to].up
                            || self.blocked.contains(&(i, to))
                            || self.lost()
                        {
                            continue;
                        }
                        self.seq += 1;
                        let m = InFlight {
                            at: self.now + self.latency,
                            seq: self.seq,
                            to,
                            bytes: bytes.clone(),
                        };
                        self.in_flight.push(m);
                    }
                }
                Action::BecameMaster => self.nodes[i].xdp_attached = true,
                Action::BecameBackup | Action::Stopped => self.nodes[i].xdp_attached = false,
                Action::AddVips(_) => self.nodes[i].holds_vips = true,
                Action::RemoveVips(_) => self.nodes[i].holds_vips = false,
                Action::SendGratuitous { repeat, .. } => self.log.push(Event {
                    at,
                    node: i,
                    what: What::Gratuitous { repeat },
                }),
                Action::Notify(state) => self.log.push(Event {
                    at,
                    node: i,
                    what: What::State(state),
                }),
            }
        }
    }

    /// The nodes in Master state.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && self.nodes[i].machine.state() == State::Master)
            .collect()
    }

    /// When node `i` last entered `state` (since the epoch).
    pub fn last_entered(&self, i: usize, state: State) -> Option<Duration> {
        self.log
            .iter()
            .rev()
            .find(|e| e.node == i && e.what == What::State(state))
            .map(|e| e.at)
    }

    /// Node `i`'s adverts (time, priority).
    pub fn adverts(&self, i: usize) -> Vec<(Duration, u8)> {
        self.log
            .iter()
            .filter(|e| e.node == i)
            .filter_map(|e| match e.what {
                What::Advert { priority } => Some((e.at, priority)),
                _ => None,
            })
            .collect()
    }

    /// Node `i`'s announcement bursts (time, rounds).
    pub fn announcements(&self, i: usize) -> Vec<(Duration, u32)> {
        self.log
            .iter()
            .filter(|e| e.node == i)
            .filter_map(|e| match e.what {
                What::Gratuitous { repeat } => Some((e.at, repeat)),
                _ => None,
            })
            .collect()
    }

    /// Every state change of every node, in order.
    pub fn transitions(&self) -> Vec<(Duration, usize, State)> {
        self.log
            .iter()
            .filter_map(|e| match e.what {
                What::State(s) => Some((e.at, e.node, s)),
                _ => None,
            })
            .collect()
    }
}

mod tests;
