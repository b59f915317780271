//! lbd's VRRP instances: each [`Machine`] driven by the real clock over the sockets of
//! [`super::io`], its actions carried out in the order the machine emits them.
//!
//! [`Vrrp`] is polled from lbd's main loop: [`Vrrp::wait`] (cancel-safe, so it sits in a
//! `select!` next to signals and the control socket) resolves when a packet may be waiting or
//! a timer is due; [`Vrrp::process`] then reads every packet, runs the timers that are due,
//! and carries out the actions. What the agent core owns (whether the XDP program is
//! attached) is reached through [`Serving`], called in line, so that on becoming master the
//! program is attached *before* the addresses are added and announced: a client whose first
//! packet reaches the node after the announcement must find the program there, or the
//! kernel answers it with a reset.
//!
//! One socket per interface and family carries every instance on it; received adverts go
//! to the instance of their VRID (to all of the socket's instances, as `wrong_vrid`, when no
//! instance has it), so each instance counts what was meant for it.
//!
//! Attaching an XDP program is not cheap: the kernel waits for RCU grace periods, 8-30 ms
//! on a 2-vCPU VM with HZ=250 (native or generic, veth), and some NIC drivers reconfigure
//! their rings. Paid at the takeover, that would add to every failover. So a backup
//! attaches *early*, as soon as its master looks gone: one and a half advert intervals
//! without an advert from it, or its priority-0 advert. The program on a backup is
//! harmless (clients send nothing for the VIP to a node that does not hold it), and a
//! backup that hears its master again detaches. In steady state only masters have the
//! program attached; at the takeover it usually is already. With advert intervals of a
//! few tens of milliseconds even that is too late, and `agent.xdp_on_backup = "attached"`
//! keeps the program attached on backups too.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::poll_fn,
    net::IpAddr,
    task::Poll,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _};
use tracing::{debug, error, info, warn};

use super::{
    io::{AdvertSocket, Incoming, PacketSocket, Timer, RECV_BUFFER},
    machine::{Action, Announce, Config as MachineConfig, Machine, State},
    wire::{
        emit_gratuitous_arp, emit_unsolicited_na, Auth, ChecksumKind, Counters, Family, Invalid,
        Mac, Version,
    },
};
use crate::{
    config::VrrpConfig,
    control::{TakeoverTiming, VrrpPeer, VrrpStatus},
    net::Netlink,
};

/// What the VRRP instances need from the agent core: whether this node forwards.
pub trait Serving {
    /// Attaches (`true`) or detaches (`false`) the XDP program; idempotent.
    fn set_serving(&mut self, on: bool) -> anyhow::Result<()>;
    fn serving(&self) -> bool;
}

/// A node heard on the link.
#[derive(Clone, Debug)]
struct Peer {
    adverts: u64,
    last_priority: u8,
    checksum: ChecksumKind,
    last_seen: Instant,
}

/// A takeover being carried out: when the machine decided, and the steps done so far.
#[derive(Clone, Copy, Debug)]
struct Takeover {
    decided: Instant,
    timing: TakeoverTiming,
}

struct Instance {
    cfg: VrrpConfig,
    ifindex: u32,
    mac: Mac,
    /// Index into [`Vrrp::sockets`].
    socket: usize,
    machine: Machine,
    prefix_lens: HashMap<IpAddr, u8>,
    /// The checksum convention sent (VRRPv3 unicast follows what its peers send).
    checksum: ChecksumKind,
    /// keepalived's per-instance IPv4 ID: 1 for the first advert, +1 per advert.
    ident: u16,
    /// What the IO layer dropped before the machine saw it (codec, unicast peer filter).
    ignored: Counters,
    /// Reasons already logged at warn level (each once; then debug).
    warned: Counters,
    peers: BTreeMap<IpAddr, Peer>,
    last_change: Instant,
    /// The Router flag of unsolicited NAs: set when the node forwards IPv6, as keepalived.
    router: bool,
    last_advert_sent: Option<Instant>,
    /// When a backup starts to believe its master is gone and attaches early: 1.5
    /// Master_Adver_Intervals after its master's last advert, or at once on priority 0.
    /// `None` unless backup.
    suspect_at: Option<Instant>,
    takeover: Option<Takeover>,
    last_takeover: Option<TakeoverTiming>,
}

impl Instance {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The prefix length `addr` is configured with (a host route's when not written).
    fn prefix_len(&self, addr: IpAddr) -> u8 {
        self.prefix_lens
            .get(&addr)
            .copied()
            .unwrap_or(if addr.is_ipv4() { 32 } else { 128 })
    }
}

/// Every configured VRRP instance of this node.
pub struct Vrrp {
    instances: Vec<Instance>,
    sockets: Vec<(u32, AdvertSocket)>,
    packets: HashMap<u32, PacketSocket>,
    timer: Timer,
    netlink: Netlink,
    buf: Vec<u8>,
    /// Set by [`Vrrp::shutdown`]: instances that stop no longer detach the program (the
    /// node keeps forwarding until the new master has announced itself).
    stopping: bool,
    /// `agent.xdp_on_backup = "attached"`: the program stays attached on backups.
    keep_attached: bool,
}

fn centiseconds(d: Duration) -> u16 {
    u16::try_from(d.as_millis() / 10).unwrap_or(u16::MAX)
}

/// How long a stopping master keeps forwarding after the new master's first advert.
const HANDOVER_GRACE: Duration = Duration::from_millis(20);

/// When a backup that heard its master at `heard` starts to doubt it: one advert missed,
/// half an interval of jitter allowed.
fn suspect_after(machine: &Machine, heard: Instant) -> Instant {
    heard + machine.master_adver_interval() * 3 / 2
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn micros_since(from: Instant) -> u64 {
    u64::try_from(from.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The state names keepalived hands its notify scripts.
fn notify_state(state: State) -> &'static str {
    match state {
        State::Master => "MASTER",
        State::Backup => "BACKUP",
        State::Initialize => "STOP",
    }
}

impl Vrrp {
    /// Resolves each instance's interface and source address and opens the sockets.
    /// Nothing is sent until [`start`](Vrrp::start). Must be called inside a tokio runtime.
    /// With `keep_attached`, backups keep the program attached too.
    pub async fn new(
        configs: &[VrrpConfig],
        netlink: &Netlink,
        keep_attached: bool,
    ) -> anyhow::Result<Vrrp> {
        let mut vrrp = Vrrp {
            instances: Vec::with_capacity(configs.len()),
            sockets: Vec::new(),
            packets: HashMap::new(),
            timer: Timer::new().context("creating the VRRP timer")?,
            netlink: netlink.clone(),
            buf: vec![0; RECV_BUFFER],
            stopping: false,
            keep_attached,
        };
        for cfg in configs {
            let instance = vrrp
                .instance(cfg, configs)
                .await
                .with_context(|| format!("VRRP instance {:?}", cfg.name))?;
            vrrp.instances.push(instance);
        }
        if let Some(short) = configs
            .iter()
            .filter(|c| c.advert_interval < Duration::from_millis(100))
            .find(|_| !keep_attached)
        {
            warn!(instance = %short.name, interval = ?short.advert_interval,
                  "with adverts this frequent, attaching XDP early still delays takeovers by the kernel's attach time (8-40 ms); set agent.xdp_on_backup = \"attached\"");
        }
        Ok(vrrp)
    }

    async fn instance(&mut self, cfg: &VrrpConfig, all: &[VrrpConfig]) -> anyhow::Result<Instance> {
        let link = self.netlink.link(&cfg.interface).await?;
        let family = if cfg.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        };
        let vips: Vec<IpAddr> = cfg.addresses.iter().map(|a| a.addr).collect();
        let configured = self.netlink.addresses(link.index).await?;
        let primary = match cfg.unicast_src {
            Some(src) => {
                if !configured.iter().any(|a| a.addr == src) {
                    warn!(instance = %cfg.name, %src, interface = %cfg.interface, "unicast_src is not an address of the interface; adverts are sent from it anyway");
                }
                src
            }
            None => configured
                .iter()
                .map(|a| a.addr)
                .find(|a| {
                    !vips.contains(a)
                        && match (family, a) {
                            (Family::V4, IpAddr::V4(_)) => true,
                            // RFC 5798 §5.1.2.1: IPv6 adverts come from the link-local address.
                            (Family::V6, IpAddr::V6(v6)) => v6.segments()[0] & 0xffc0 == 0xfe80,
                            _ => false,
                        }
                })
                .ok_or_else(|| {
                    anyhow!(
                        "interface {} has no {} address to send adverts from; add one, or set unicast_src",
                        cfg.interface,
                        if family == Family::V4 { "IPv4" } else { "IPv6 link-local" }
                    )
                })?,
        };
        let auth = match &cfg.auth_pass {
            None => Auth::None,
            Some(p) => Auth::pass(p).ok_or_else(|| anyhow!("auth_pass is longer than 8 bytes"))?,
        };
        let version = if cfg.version == 2 {
            Version::V2
        } else {
            Version::V3
        };
        let machine = Machine::new(MachineConfig {
            vrid: cfg.vrid,
            priority: cfg.priority,
            version,
            advert_interval_cs: centiseconds(cfg.advert_interval),
            preempt: cfg.preempt,
            preempt_delay: cfg.preempt_delay,
            primary_addr: primary,
            vips,
            auth,
            announce: Announce {
                repeat: cfg.garp_master_repeat,
                delay: nonzero(cfg.garp_master_delay),
                refresh: nonzero(cfg.garp_master_refresh),
                refresh_repeat: cfg.garp_master_refresh_repeat,
                lower_prio_repeat: cfg.garp_lower_prio_repeat,
                lower_prio_delay: nonzero(cfg.garp_lower_prio_delay),
            },
        })
        .map_err(|e| anyhow!("{e}"))?;
        let checksum = match (version, cfg.old_unicast_checksum) {
            (Version::V2, _) => ChecksumKind::Message,
            (Version::V3, true) => ChecksumKind::OldUnicast,
            (Version::V3, false) => ChecksumKind::PseudoHeader,
        };

        let socket = match self
            .sockets
            .iter()
            .position(|(i, s)| *i == link.index && s.family() == family)
        {
            Some(s) => s,
            None => {
                let multicast = all.iter().any(|c| {
                    c.interface == cfg.interface && c.is_ipv6() == cfg.is_ipv6() && !c.is_unicast()
                });
                let sock = AdvertSocket::open(family, &cfg.interface, link.index, multicast)?;
                self.sockets.push((link.index, sock));
                self.sockets.len() - 1
            }
        };
        if let std::collections::hash_map::Entry::Vacant(e) = self.packets.entry(link.index) {
            e.insert(PacketSocket::open(link.index).with_context(|| {
                format!(
                    "opening a packet socket on {} (needs CAP_NET_RAW)",
                    cfg.interface
                )
            })?);
        }
        let router = family == Family::V6
            && std::fs::read_to_string(format!(
                "/proc/sys/net/ipv6/conf/{}/forwarding",
                cfg.interface
            ))
            .is_ok_and(|s| s.trim() == "1");
        info!(instance = %cfg.name, interface = %cfg.interface, vrid = cfg.vrid, priority = cfg.priority,
              version = cfg.version, interval = ?cfg.advert_interval, source = %primary,
              mode = if cfg.is_unicast() { "unicast" } else { "multicast" },
              addresses = ?cfg.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(), "VRRP instance configured");
        Ok(Instance {
            ifindex: link.index,
            mac: link.mac,
            socket,
            machine,
            prefix_lens: cfg
                .addresses
                .iter()
                .map(|a| (a.addr, a.prefix_len))
                .collect(),
            checksum,
            ident: 0,
            ignored: Counters::default(),
            warned: Counters::default(),
            peers: BTreeMap::new(),
            last_change: Instant::now(),
            router,
            last_advert_sent: None,
            suspect_at: None,
            takeover: None,
            last_takeover: None,
            cfg: cfg.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Whether any instance is master.
    pub fn any_master(&self) -> bool {
        self.instances
            .iter()
            .any(|i| i.machine.state() == State::Master)
    }

    /// Whether any instance follows VIPs' health (`track_vips`).
    pub fn tracks_vips(&self) -> bool {
        self.instances.iter().any(|i| !i.cfg.track_vips.is_empty())
    }

    /// Follows the health of tracked VIPs (`track_vips`): an instance with a tracked VIP in
    /// `vips_down` advertises `priority + track_weight`, else its configured priority. A
    /// master advertises a change at once, so a backup with healthy backends can take
    /// over (it preempts after Master_Down_Interval, as RFC 5798 has it) and the node
    /// takes the VIP back the same way once its backends recover.
    pub async fn track(
        &mut self,
        vips_down: &HashSet<String>,
        serving: &mut dyn Serving,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut changed = false;
        for i in &mut self.instances {
            if i.cfg.track_vips.is_empty() || i.machine.state() == State::Initialize {
                continue;
            }
            let down: Vec<&String> = i
                .cfg
                .track_vips
                .iter()
                .filter(|v| vips_down.contains(*v))
                .collect();
            let priority = i.cfg.effective_priority(!down.is_empty());
            if priority == i.machine.priority() {
                continue;
            }
            if down.is_empty() {
                info!(instance = %i.cfg.name, priority, "tracked VIPs have usable backends again: priority restored");
            } else {
                warn!(instance = %i.cfg.name, priority, vips = ?down,
                      "a tracked VIP has no usable backend: priority lowered so that a healthy peer takes over");
            }
            i.machine
                .set_priority(now, priority)
                .map_err(|e| anyhow!("instance {}: {e}", i.cfg.name))?;
            changed = true;
        }
        if changed {
            self.settle(now, serving).await?;
        }
        Ok(())
    }

    /// Starts every instance (RFC 5798 Startup event): each enters Backup, removes its
    /// addresses in case a previous run crashed while master, and waits for a master; an
    /// owner (priority 255) becomes master at once.
    ///
    /// With `resume` (this run adopted a program still attached by the previous one), an
    /// instance whose addresses are all still on its interface was master when that run
    /// ended: it resumes as master at once ([`Machine::resume_master`]) instead of giving
    /// the addresses up, so a restart within Master_Down_Interval moves nothing.
    pub async fn start(&mut self, serving: &mut dyn Serving, resume: bool) -> anyhow::Result<()> {
        let mut resumed = vec![false; self.instances.len()];
        if resume {
            for (i, inst) in self.instances.iter().enumerate() {
                let present = self.netlink.addresses(inst.ifindex).await?;
                resumed[i] = inst
                    .cfg
                    .addresses
                    .iter()
                    .all(|a| present.iter().any(|p| p.addr == a.addr));
            }
        }
        let now = Instant::now();
        for (inst, &resume) in self.instances.iter_mut().zip(&resumed) {
            if resume {
                info!(instance = %inst.name(), "program still attached and addresses still configured: resuming as MASTER");
                inst.machine.resume_master(now);
            } else {
                inst.machine.startup(now);
            }
            inst.last_change = now;
            inst.suspect_at =
                (inst.machine.state() == State::Backup).then(|| suspect_after(&inst.machine, now));
        }
        self.settle(now, serving).await
    }

    /// Resolves when a packet may be waiting or a timer is due. Cancel-safe: it only
    /// waits for readiness; [`process`](Vrrp::process) does the work.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            let mut ready = false;
            for (_, s) in &self.sockets {
                ready |= s.poll_ready(cx).is_ready();
            }
            ready |= self.timer.poll_ready(cx).is_ready();
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Reads what arrived, runs the timers that are due, carries out the actions. An error
    /// means this node cannot serve (the program would not attach): lbd stops, and its
    /// shutdown hands the addresses over.
    pub async fn process(&mut self, serving: &mut dyn Serving) -> anyhow::Result<()> {
        self.receive();
        // Received adverts first, then timers: a backup must not take over from a master
        // whose advert is already in the socket.
        let now = Instant::now();
        for i in &mut self.instances {
            if i.machine.poll_timeout().is_some_and(|t| t <= now) {
                i.machine.handle_timeout(now);
            }
        }
        self.timer.clear();
        self.settle(now, serving).await
    }

    /// After the machines were driven at `now`: carries out their actions, attaches or
    /// detaches early as the instances now want, and arms the timer for the next deadline.
    async fn settle(&mut self, now: Instant, serving: &mut dyn Serving) -> anyhow::Result<()> {
        self.act(now, serving).await?;
        self.prepare(Instant::now(), serving)?;
        self.rearm()
    }

    /// Whether this node should have the program attached: it is master somewhere, or
    /// some backup believes its master is gone and will take over.
    fn wants_serving(&self, now: Instant) -> bool {
        self.keep_attached
            || self.instances.iter().any(|i| {
                i.machine.state() == State::Master || i.suspect_at.is_some_and(|t| t <= now)
            })
    }

    /// Attaches early, or detaches after a false alarm (see the module documentation).
    fn prepare(&mut self, now: Instant, serving: &mut dyn Serving) -> anyhow::Result<()> {
        if self.stopping {
            return Ok(());
        }
        let wanted = self.wants_serving(now);
        if wanted == serving.serving() {
            return Ok(());
        }
        let started = Instant::now();
        serving.set_serving(wanted)?;
        let took = started.elapsed();
        if wanted {
            info!(
                ?took,
                "a master looks gone: XDP attached ahead of a possible takeover"
            );
        } else {
            info!(?took, "every master heard again: XDP detached");
        }
        Ok(())
    }

    /// Stops every instance: a master sends its priority-0 advert (a backup takes over
    /// after Skew_Time instead of Master_Down_Interval) and removes its addresses. The
    /// program stays attached until the new master's first advert arrives, at most one
    /// advert interval (the longest Skew_Time a backup waits): until then clients still
    /// send to this node's MAC, and forwarding them costs nothing. Then it is detached.
    pub async fn shutdown(&mut self, serving: &mut dyn Serving) -> anyhow::Result<()> {
        let now = Instant::now();
        self.stopping = true;
        let masters: Vec<usize> = (0..self.instances.len())
            .filter(|&i| self.instances[i].machine.state() == State::Master)
            .collect();
        for i in &mut self.instances {
            i.machine.shutdown(now);
        }
        let result = self.act(now, serving).await;
        if !masters.is_empty() && serving.serving() {
            self.await_new_masters(now, &masters).await;
        }
        let detached = serving.set_serving(false);
        result.and(detached)
    }

    async fn await_new_masters(&mut self, since: Instant, masters: &[usize]) {
        let longest = masters
            .iter()
            .map(|&i| self.instances[i].cfg.advert_interval)
            .max()
            .unwrap_or_default();
        let deadline = since + longest + longest / 8;
        let mut waiting: Vec<usize> = masters.to_vec();
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let sockets = &self.sockets;
            let readable = poll_fn(|cx| {
                let mut ready = false;
                for (_, s) in sockets {
                    ready |= s.poll_ready(cx).is_ready();
                }
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            if tokio::time::timeout(left, readable).await.is_err() {
                break;
            }
            let mut buf = std::mem::take(&mut self.buf);
            for (s, (_, sock)) in self.sockets.iter().enumerate() {
                let instances = &self.instances;
                let _ = sock.recv_all(&mut buf, |inc| {
                    let Ok(rx) = inc.advert else { return };
                    waiting.retain(|&i| {
                        let me = &instances[i];
                        let new_master = me.socket == s
                            && rx.repr.vrid == me.cfg.vrid
                            && rx.repr.priority > 0
                            && rx.ip.src != me.machine.config().primary_addr;
                        if new_master {
                            info!(instance = %me.name(), master = %rx.ip.src,
                                  after_ms = since.elapsed().as_secs_f64() * 1e3, "new master heard; handing over");
                        }
                        !new_master
                    });
                });
            }
            self.buf = buf;
        }
        if waiting.is_empty() {
            // The new master announces right after its advert; packets already on their way
            // here, and clients that miss the first announcement, still find the program.
            tokio::time::sleep(HANDOVER_GRACE).await;
        }
        for &i in &waiting {
            info!(instance = %self.instances[i].name(), "no new master heard within one advert interval; detaching anyway");
        }
    }

    fn rearm(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let next = self
            .instances
            .iter()
            .flat_map(|i| {
                let suspect = i.suspect_at.filter(|t| *t > now);
                [i.machine.poll_timeout(), suspect]
            })
            .flatten()
            .min();
        self.timer.arm(next).context("arming the VRRP timer")
    }

    fn receive(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        for s in 0..self.sockets.len() {
            let mut got = Vec::new();
            if let Err(e) = self.sockets[s]
                .1
                .recv_all(&mut buf, |inc| got.push((Instant::now(), inc)))
            {
                warn!("receiving VRRP adverts: {e}");
            }
            for (at, inc) in got {
                self.deliver(s, at, inc);
            }
        }
        self.buf = buf;
    }

    /// Hands a received packet to the instance it is meant for.
    fn deliver(&mut self, socket: usize, at: Instant, inc: Incoming) {
        let on_socket: Vec<usize> = (0..self.instances.len())
            .filter(|&i| self.instances[i].socket == socket)
            .collect();
        let vrid = match &inc.advert {
            Ok(rx) => Some(rx.repr.vrid),
            Err(_) => inc.vrid,
        };
        let mut targets: Vec<usize> = on_socket
            .iter()
            .copied()
            .filter(|&i| Some(self.instances[i].cfg.vrid) == vrid)
            .collect();
        if targets.is_empty() {
            targets = on_socket;
        }
        for i in targets {
            let inst = &mut self.instances[i];
            let result = match &inc.advert {
                Err(reason) => {
                    inst.ignored.record(*reason);
                    Err(*reason)
                }
                Ok(rx) if inst.cfg.is_unicast() && !inst.cfg.unicast_peers.contains(&rx.ip.src) => {
                    inst.ignored.record(Invalid::UnknownPeer);
                    Err(Invalid::UnknownPeer)
                }
                Ok(rx) => {
                    let before = inst.machine.state();
                    let r = inst.machine.handle_advert(at, &rx.repr, rx.ip.src);
                    if r.is_ok() {
                        let peer = inst.peers.entry(rx.ip.src).or_insert(Peer {
                            adverts: 0,
                            last_priority: 0,
                            checksum: rx.checksum,
                            last_seen: at,
                        });
                        peer.adverts += 1;
                        peer.last_priority = rx.repr.priority;
                        peer.checksum = rx.checksum;
                        peer.last_seen = at;
                        // keepalived switches its unicast checksum to the form its peer
                        // uses; so do we, or a peer on the old form would drop ours.
                        if inst.cfg.is_unicast()
                            && inst.cfg.version == 3
                            && rx.checksum != ChecksumKind::Message
                            && rx.checksum != inst.checksum
                        {
                            info!(instance = %inst.name(), peer = %rx.ip.src, from = inst.checksum.name(), to = rx.checksum.name(),
                                  "following the peer's VRRPv3 unicast checksum convention");
                            inst.checksum = rx.checksum;
                        }
                    }
                    if inst.machine.state() != before {
                        debug!(instance = %inst.name(), from = %before, to = %inst.machine.state(), "advert changed state");
                    }
                    if r.is_ok() && inst.machine.state() == State::Backup {
                        if rx.repr.priority == 0 {
                            inst.suspect_at = Some(at);
                        } else if inst.machine.current_master() == Some(rx.ip.src) {
                            inst.suspect_at = Some(suspect_after(&inst.machine, at));
                        }
                    }
                    r
                }
            };
            if let Err(reason) = result {
                let src = inc.src.map_or_else(|| "?".to_owned(), |s| s.to_string());
                // A reason seen for the first time is worth a line; its repeats are counted.
                if inst.warned.get(reason) == 0 && reason != Invalid::WrongVrid {
                    inst.warned.record(reason);
                    warn!(instance = %inst.name(), %src, %reason, "VRRP packet ignored (further ones are only counted: lbctl status)");
                } else {
                    debug!(instance = %inst.name(), %src, %reason, "VRRP packet ignored");
                }
            }
        }
    }

    /// Carries out every instance's pending actions in order.
    async fn act(&mut self, now: Instant, serving: &mut dyn Serving) -> anyhow::Result<()> {
        for i in 0..self.instances.len() {
            while let Some(action) = self.instances[i].machine.poll_action() {
                self.execute(i, action, now, serving).await?;
            }
        }
        Ok(())
    }

    async fn execute(
        &mut self,
        i: usize,
        action: Action,
        now: Instant,
        serving: &mut dyn Serving,
    ) -> anyhow::Result<()> {
        match action {
            Action::SendAdvert(repr) => {
                let inst = &mut self.instances[i];
                let src = inst.machine.config().primary_addr;
                let family = Family::of(src);
                let destinations: Vec<IpAddr> = if inst.cfg.is_unicast() {
                    inst.cfg.unicast_peers.clone()
                } else {
                    vec![family.multicast_group()]
                };
                // ID 0 would make the kernel pick one (IP_HDRINCL); keepalived starts at 1.
                inst.ident = inst.ident.wrapping_add(1).max(1);
                let sock = &self.sockets[inst.socket].1;
                for dst in destinations {
                    if let Err(e) = sock.send(&repr, src, dst, inst.checksum, inst.ident) {
                        warn!(instance = %inst.name(), %dst, "sending a VRRP advert: {e}");
                    }
                }
                inst.last_advert_sent = Some(Instant::now());
            }
            Action::BecameMaster => {
                let was_serving = serving.serving();
                let attached = serving.set_serving(true);
                let inst = &mut self.instances[i];
                inst.last_change = now;
                inst.suspect_at = None;
                let advert_us = inst.last_advert_sent.map_or(0, |t| {
                    u64::try_from(t.saturating_duration_since(now).as_micros()).unwrap_or(u64::MAX)
                });
                info!(instance = %inst.name(), vrid = inst.cfg.vrid, priority = inst.machine.priority(), reason = %inst.machine.cause(), "became MASTER");
                if let Err(e) = attached {
                    error!(instance = %inst.name(), "cannot attach the XDP program as master: {e:#}");
                    return Err(e.context("attaching XDP on becoming VRRP master"));
                }
                inst.takeover = Some(Takeover {
                    decided: now,
                    timing: TakeoverTiming {
                        advert_us,
                        xdp_attached_us: if was_serving { 0 } else { micros_since(now) },
                        addresses_us: 0,
                        announced_us: 0,
                    },
                });
            }
            Action::BecameBackup | Action::Stopped => {
                let inst = &mut self.instances[i];
                inst.last_change = now;
                inst.takeover = None;
                let state = inst.machine.state();
                // A master that yields has just heard a better one.
                inst.suspect_at =
                    (state == State::Backup).then(|| suspect_after(&inst.machine, now));
                if let Some(master) = inst
                    .machine
                    .current_master()
                    .filter(|_| state == State::Backup)
                {
                    info!(instance = %inst.name(), %master, reason = %inst.machine.cause(), "became BACKUP");
                } else {
                    info!(instance = %inst.name(), reason = %inst.machine.cause(), "{}", if state == State::Backup { "became BACKUP" } else { "stopped" });
                }
                if !self.stopping && !self.wants_serving(now) && serving.serving() {
                    serving.set_serving(false)?;
                }
            }
            Action::AddVips(addrs) => {
                let inst = &self.instances[i];
                for addr in addrs {
                    let len = inst.prefix_len(addr);
                    if let Err(e) = self.netlink.add_address(inst.ifindex, addr, len).await {
                        error!(instance = %inst.name(), "{e:#}");
                    }
                }
                let inst = &mut self.instances[i];
                if let Some(t) = &mut inst.takeover {
                    t.timing.addresses_us = micros_since(t.decided);
                }
            }
            Action::RemoveVips(addrs) => {
                let inst = &self.instances[i];
                for addr in addrs {
                    let len = inst.prefix_len(addr);
                    match self.netlink.remove_address(inst.ifindex, addr, len).await {
                        Ok(true) => {
                            info!(instance = %inst.name(), address = %addr, "virtual address removed")
                        }
                        Ok(false) => {}
                        Err(e) => error!(instance = %inst.name(), "{e:#}"),
                    }
                }
            }
            Action::SendGratuitous { addrs, repeat } => {
                let inst = &mut self.instances[i];
                let frames: Vec<Vec<u8>> = addrs
                    .iter()
                    .map(|a| match a {
                        IpAddr::V4(v4) => emit_gratuitous_arp(inst.mac, *v4),
                        IpAddr::V6(v6) => emit_unsolicited_na(inst.mac, *v6, *v6, inst.router),
                    })
                    .collect();
                if let Some(packet) = self.packets.get(&inst.ifindex) {
                    'rounds: for _ in 0..repeat {
                        for f in &frames {
                            if let Err(e) = packet.send(f) {
                                warn!(instance = %inst.name(), "sending a gratuitous ARP / NA: {e}");
                                break 'rounds;
                            }
                            if let Some(mut t) = inst.takeover.take() {
                                t.timing.announced_us = micros_since(t.decided);
                                let timing = t.timing;
                                inst.last_takeover = Some(timing);
                                info!(instance = %inst.name(), advert_us = timing.advert_us, xdp_attached_us = timing.xdp_attached_us,
                                      addresses_us = timing.addresses_us, announced_us = timing.announced_us,
                                      "takeover done (microseconds after the decision)");
                            }
                        }
                    }
                }
            }
            Action::Notify(state) => {
                let inst = &self.instances[i];
                if let Some(cmd) = &inst.cfg.notify {
                    let spawned = tokio::process::Command::new(&cmd[0])
                        .args(&cmd[1..])
                        .args([
                            "INSTANCE",
                            inst.name(),
                            notify_state(state),
                            &inst.machine.priority().to_string(),
                        ])
                        .stdin(std::process::Stdio::null())
                        .spawn();
                    // Not awaited: a slow hook must not hold up adverts. tokio reaps it.
                    if let Err(e) = spawned {
                        warn!(instance = %inst.name(), "running the notify command {:?}: {e}", cmd[0]);
                    }
                }
            }
        }
        Ok(())
    }

    /// Each instance as `lbctl status` shows it.
    pub fn status(&self) -> Vec<VrrpStatus> {
        self.instances
            .iter()
            .map(|i| {
                let m = &i.machine;
                let stats = m.stats();
                let mut ignored = BTreeMap::new();
                for (reason, n) in stats.ignored.iter() {
                    let total = n + i.ignored.get(reason);
                    if total > 0 {
                        ignored.insert(reason.name().to_owned(), total);
                    }
                }
                VrrpStatus {
                    name: i.cfg.name.clone(),
                    interface: i.cfg.interface.clone(),
                    vrid: i.cfg.vrid,
                    version: i.cfg.version,
                    state: m.state().name().to_owned(),
                    priority: m.priority(),
                    address: m.config().primary_addr,
                    master: m.current_master(),
                    unicast: i.cfg.is_unicast(),
                    advert_interval_ms: m.advertisement_interval().as_secs_f64() * 1e3,
                    master_advert_interval_ms: m.master_adver_interval().as_secs_f64() * 1e3,
                    addresses: i.cfg.addresses.iter().map(ToString::to_string).collect(),
                    last_change_secs_ago: i.last_change.elapsed().as_secs_f64(),
                    adverts_received: stats.adverts_received,
                    adverts_sent: stats.adverts_sent,
                    priority_zero_received: stats.priority_zero_received,
                    priority_zero_sent: stats.priority_zero_sent,
                    became_master: stats.became_master,
                    became_backup: stats.became_backup,
                    address_list_mismatch: stats.address_list_mismatch,
                    ignored,
                    peers: i
                        .peers
                        .iter()
                        .map(|(addr, p)| VrrpPeer {
                            address: *addr,
                            adverts: p.adverts,
                            last_priority: p.last_priority,
                            checksum: p.checksum.name().to_owned(),
                            last_seen_secs_ago: p.last_seen.elapsed().as_secs_f64(),
                        })
                        .collect(),
                    last_takeover: i.last_takeover,
                }
            })
            .collect()
    }
}
