//! The VRRP state machine of RFC 5798 §6 (and RFC 3768 for VRRPv2), without IO.
//!
//! quinn-proto style: the caller feeds events with the time they happened
//! ([`startup`](Machine::startup), [`handle_advert`](Machine::handle_advert),
//! [`handle_timeout`](Machine::handle_timeout), [`shutdown`](Machine::shutdown)), then drains
//! [`poll_action`](Machine::poll_action) and sleeps until [`poll_timeout`](Machine::poll_timeout).
//! The machine never reads a clock, so every timer is exact and testable with a virtual one.
//!
//! Time is `std::time::Instant`. The machine copes with any sequence of instants: one earlier
//! than a previous one (every armed timer is pulled back to at most its own span from the new
//! `now`, so nothing stalls) or far later (each timer fires once and is re-armed from `now`, so
//! nothing is replayed in a burst).
//!
//! Where RFC 5798 leaves room, the machine does what keepalived 2.2.7 does, so a cluster can
//! mix both (see `shared/vrrp-captures/README.md`):
//! - timers are computed in microseconds, as keepalived does, so takeovers happen at the same
//!   instants (3.609375 s after the last advert for priority 100 at 1 s);
//! - a master that hears a lower priority (or an equal priority from a lower address) answers at
//!   once with an advert and a burst of gratuitous ARPs / NAs, and again after a delay
//!   (keepalived's "forcing a new MASTER election", `garp_lower_prio_*`); that is what ends a
//!   split brain quickly and repairs the neighbour caches the other master poisoned;
//! - a new master repeats its announcement after a delay (`garp_master_delay`), and optionally
//!   periodically (`garp_master_refresh`);
//! - preempt delay holds a higher-priority backup back for a while after startup or after it
//!   first hears a lower-priority master (`preempt_delay`).

use std::{
    collections::VecDeque,
    fmt,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::wire::{Auth, Counters, Family, Invalid, Repr, Version, MAX_ADVER_INT_CS};

/// Priority of the router that owns the virtual addresses: it is master from startup on.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a stopping master advertises so that a backup takes over after Skew_Time.
pub const PRIORITY_STOP: u8 = 0;
/// Longest delay a configuration may ask for; longer ones are typos, and bounding them keeps
/// every `Instant` addition far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// A master answers lower-priority adverts with gratuitous ARPs / NAs at most this often.
/// keepalived answers every one; with 10 ms adverts that would be 500 frames a second, and
/// one burst per half second repairs the caches as well.
pub const LOWER_PRIO_ANNOUNCE_GAP: Duration = Duration::from_millis(500);
/// Delayed announcements pending at once; lower-priority adverts beyond that are answered
/// only at once, not again later.
const MAX_PENDING_ANNOUNCEMENTS: usize = 16;

/// RFC 5798 §6.4 states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running: before [`Machine::startup`] and after [`Machine::shutdown`].
    Initialize,
    /// Listening to the master; takes over when Master_Down_Timer fires.
    Backup,
    /// Owns the virtual addresses and advertises every Advertisement_Interval.
    Master,
}

impl State {
    /// Stable lowercase name, for logs, notify hooks and metrics.
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a master announces its virtual addresses (gratuitous ARP for IPv4, unsolicited NA for
/// IPv6). The defaults are keepalived's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    /// Rounds over all VIPs sent on becoming master (`vrrp_garp_master_repeat`, 5).
    pub repeat: u32,
    /// The same burst again this long after becoming master (`vrrp_garp_master_delay`, 5 s);
    /// `None` for no second burst.
    pub delay: Option<Duration>,
    /// While master, a burst every this long (`vrrp_garp_master_refresh`, off). Switches and
    /// hosts that missed the takeover burst learn the VIP's MAC again without waiting for
    /// their cache to expire.
    pub refresh: Option<Duration>,
    /// Rounds per periodic burst (`vrrp_garp_master_refresh_repeat`, 1).
    pub refresh_repeat: u32,
    /// Rounds sent at once when a master hears a lower priority (`vrrp_garp_lower_prio_repeat`,
    /// 5).
    pub lower_prio_repeat: u32,
    /// The same again this long after (`vrrp_garp_lower_prio_delay`, 5 s); `None` for none.
    pub lower_prio_delay: Option<Duration>,
}

impl Default for Announce {
    fn default() -> Announce {
        Announce {
            repeat: 5,
            delay: Some(Duration::from_secs(5)),
            refresh: None,
            refresh_repeat: 1,
            lower_prio_repeat: 5,
            lower_prio_delay: Some(Duration::from_secs(5)),
        }
    }
}

/// A VRRP instance's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Virtual router ID, 1–255.
    pub vrid: u8,
    /// 1–254, or 255 for the owner of the virtual addresses.
    pub priority: u8,
    pub version: Version,
    /// Advertisement_Interval in centiseconds: 1–4095 for v3, whole seconds (100–25500) for v2.
    pub advert_interval_cs: u16,
    /// Preempt_Mode: a backup with a higher priority than the master takes over. `false` is
    /// keepalived's `nopreempt`.
    pub preempt: bool,
    /// keepalived's `preempt_delay`: after startup, or after first hearing a lower-priority
    /// master, keep accepting it this long before preempting. Zero for none.
    pub preempt_delay: Duration,
    /// This node's primary address on the interface: the source of its adverts and the
    /// tie-breaker between equal priorities (the higher address wins).
    pub primary_addr: IpAddr,
    /// The virtual addresses, all of the family of `primary_addr`, in the order advertised.
    pub vips: Vec<IpAddr>,
    /// VRRPv2 authentication; must be [`Auth::None`] for v3.
    pub auth: Auth,
    pub announce: Announce,
}

impl Config {
    /// A VRRPv3 instance with a 1 s interval, preemption on, no authentication and keepalived's
    /// announcement defaults.
    pub fn new(vrid: u8, priority: u8, primary_addr: IpAddr, vips: Vec<IpAddr>) -> Config {
        Config {
            vrid,
            priority,
            version: Version::V3,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_addr,
            vips,
            auth: Auth::None,
            announce: Announce::default(),
        }
    }

    fn validate(&self) -> Result<Family, ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == PRIORITY_STOP {
            return Err(ConfigError::Priority);
        }
        let cs = self.advert_interval_cs;
        let interval_ok = match self.version {
            Version::V2 => cs.is_multiple_of(100) && (100..=25_500).contains(&cs),
            Version::V3 => (1..=MAX_ADVER_INT_CS).contains(&cs),
        };
        if !interval_ok {
            return Err(ConfigError::Interval);
        }
        if self.vips.is_empty() {
            return Err(ConfigError::NoVips);
        }
        if self.vips.len() > usize::from(u8::MAX) {
            return Err(ConfigError::TooManyVips);
        }
        let family = Family::of(self.primary_addr);
        if self.vips.iter().any(|&v| Family::of(v) != family) {
            return Err(ConfigError::AddressFamily);
        }
        if self.version == Version::V2 && family == Family::V6 {
            return Err(ConfigError::V2OverIpv6);
        }
        if self.version == Version::V3 && self.auth != Auth::None {
            return Err(ConfigError::AuthOnV3);
        }
        let a = &self.announce;
        let delays = [
            Some(self.preempt_delay),
            a.delay,
            a.refresh,
            a.lower_prio_delay,
        ];
        if delays.iter().flatten().any(|&d| d > MAX_DELAY) || a.refresh == Some(Duration::ZERO) {
            return Err(ConfigError::Delay);
        }
        Ok(family)
    }
}

/// Why a [`Config`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    Vrid,
    Priority,
    Interval,
    NoVips,
    TooManyVips,
    AddressFamily,
    V2OverIpv6,
    AuthOnV3,
    Delay,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::Vrid => "the VRID must be 1-255",
            ConfigError::Priority => "the priority must be 1-255 (0 is reserved for a stopping master)",
            ConfigError::Interval => {
                "the advert interval must be 0.01-40.95 s for VRRPv3, whole seconds 1-255 for VRRPv2"
            }
            ConfigError::NoVips => "an instance needs at least one virtual address",
            ConfigError::TooManyVips => "an advert carries at most 255 virtual addresses",
            ConfigError::AddressFamily => {
                "the virtual addresses must be of the family of the primary address"
            }
            ConfigError::V2OverIpv6 => "VRRPv2 is IPv4 only; use version 3 for IPv6",
            ConfigError::AuthOnV3 => "VRRPv3 has no authentication; remove it or use version 2",
            ConfigError::Delay => "delays must be at most one hour, and a refresh interval above zero",
        })
    }
}

impl std::error::Error for ConfigError {}

/// Why the machine entered its current state, for the log line of each transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Not started yet.
    NotStarted,
    /// Startup as a backup, waiting one Master_Down_Interval for a master.
    Startup,
    /// Startup with priority 255: this node owns the addresses.
    Owner,
    /// No master was heard for Master_Down_Interval since this node became backup.
    NoMasterHeard,
    /// The master this node followed stopped advertising for Master_Down_Interval.
    MasterSilent(IpAddr),
    /// The master sent priority 0 (it is stopping); this node took over after Skew_Time.
    MasterStopped(IpAddr),
    /// A master with a lower priority was advertising; this node preempted it.
    Preempted { master: IpAddr, priority: u8 },
    /// An advert with a higher priority (or an equal one from a higher address) arrived.
    BetterMaster { master: IpAddr, priority: u8 },
    /// Shutdown.
    Shutdown,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NotStarted => f.write_str("not started"),
            Cause::Startup => f.write_str("startup: waiting for a master"),
            Cause::Owner => f.write_str("startup with priority 255: this node owns the addresses"),
            Cause::NoMasterHeard => f.write_str("no master heard for Master_Down_Interval"),
            Cause::MasterSilent(m) => write!(f, "master {m} silent for Master_Down_Interval"),
            Cause::MasterStopped(m) => write!(f, "master {m} sent priority 0 (stopping)"),
            Cause::Preempted { master, priority } => {
                write!(
                    f,
                    "preempted master {master}, which has the lower priority {priority}"
                )
            }
            Cause::BetterMaster { master, priority } => {
                write!(
                    f,
                    "heard master {master} with priority {priority}, which wins the election"
                )
            }
            Cause::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// What the machine asks its IO layer to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this advert, to the VRRP group (or the unicast peers) from the primary address,
    /// with TTL/hop limit 255 and the instance's checksum convention.
    SendAdvert(Repr),
    /// Became master: attach XDP.
    BecameMaster,
    /// Became backup (also at startup): detach XDP if attached.
    BecameBackup,
    /// Stopped (back to Initialize): detach XDP if attached.
    Stopped,
    /// Configure the virtual addresses on the interface.
    AddVips(Vec<IpAddr>),
    /// Remove the virtual addresses from the interface. Also emitted at startup, so that
    /// addresses left behind by a previous run that crashed do not stay on a backup.
    RemoveVips(Vec<IpAddr>),
    /// Send `repeat` rounds of gratuitous ARP (IPv4) / unsolicited NA (IPv6) over `addrs`,
    /// round by round in order (keepalived: .50 .51 .52 .50 .51 .52 ...).
    SendGratuitous { addrs: Vec<IpAddr>, repeat: u32 },
    /// The instance entered this state: run the notify hook.
    Notify(State),
}

/// Counters of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Adverts that passed every check.
    pub adverts_received: u64,
    pub adverts_sent: u64,
    pub priority_zero_received: u64,
    pub priority_zero_sent: u64,
    pub became_master: u64,
    /// Transitions from master to backup (startup does not count).
    pub became_backup: u64,
    /// Accepted adverts whose address list differs from ours (RFC 5798 §7.1: log, not drop).
    pub address_list_mismatch: u64,
    /// Adverts ignored, per reason.
    pub ignored: Counters,
}

/// One VRRP instance. See the module documentation.
#[derive(Debug)]
pub struct Machine {
    config: Config,
    family: Family,
    /// Effective priority ([`Machine::set_priority`] may move it away from the configured one).
    priority: u8,
    state: State,
    /// Master_Adver_Interval: learned from the master's adverts in v3, the configured one in v2.
    master_adver_interval: Duration,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    preempt_deadline: Option<Instant>,
    /// Delayed announcement bursts: when, and how many rounds.
    pending_announcements: Vec<(Instant, u32)>,
    refresh_at: Option<Instant>,
    last_lower_prio_announce: Option<Instant>,
    /// Source and priority of the master a backup last accepted.
    master: Option<(IpAddr, u8)>,
    actions: VecDeque<Action>,
    stats: Stats,
    /// Why the current state was entered.
    cause: Cause,
    /// Why Master_Down_Timer will have fired, if it does: what a takeover is logged with.
    down_cause: Cause,
}

fn centis(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// `now + d`, saturating instead of panicking on the (unreachable with bounded delays)
/// overflow.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

impl Machine {
    /// A machine in Initialize; nothing happens until [`startup`](Machine::startup).
    pub fn new(config: Config) -> Result<Machine, ConfigError> {
        let family = config.validate()?;
        Ok(Machine {
            family,
            priority: config.priority,
            state: State::Initialize,
            master_adver_interval: centis(config.advert_interval_cs),
            adver_timer: None,
            master_down_timer: None,
            preempt_deadline: None,
            pending_announcements: Vec::new(),
            refresh_at: None,
            last_lower_prio_announce: None,
            master: None,
            actions: VecDeque::new(),
            stats: Stats::default(),
            cause: Cause::NotStarted,
            down_cause: Cause::NoMasterHeard,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The effective priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Why the machine entered its current state.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The master this node defers to: itself when master, the source of the last accepted
    /// advert when backup.
    pub fn current_master(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.config.primary_addr),
            State::Backup => self.master.map(|(addr, _)| addr),
            State::Initialize => None,
        }
    }

    /// Advertisement_Interval: how often this node advertises as master.
    pub fn advertisement_interval(&self) -> Duration {
        centis(self.config.advert_interval_cs)
    }

    /// Master_Adver_Interval: the master's interval as a backup knows it.
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time: v3 ((256 − Priority) × Master_Adver_Interval) / 256; v2 (256 − Priority) / 256
    /// seconds. In whole microseconds, as keepalived computes it.
    pub fn skew_time(&self) -> Duration {
        let base = match self.config.version {
            Version::V3 => self.master_adver_interval,
            Version::V2 => Duration::from_secs(1),
        };
        // Bounded by 4095 cs, so the microseconds fit easily.
        let us = base.as_micros() as u64;
        Duration::from_micros((256 - u64::from(self.priority)) * us / 256)
    }

    /// Master_Down_Interval: 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval + self.skew_time()
    }

    /// Startup event (RFC 5798 §6.4.1). The owner (priority 255) becomes master at once; any
    /// other node becomes backup and waits one Master_Down_Interval for a master. Ignored
    /// unless in Initialize.
    pub fn startup(&mut self, now: Instant) {
        if self.state != State::Initialize {
            self.pull_back_timers(now);
            return;
        }
        if self.priority == PRIORITY_OWNER {
            self.down_cause = Cause::Owner;
            self.become_master(now);
            return;
        }
        self.state = State::Backup;
        self.cause = Cause::Startup;
        self.down_cause = Cause::NoMasterHeard;
        self.master = None;
        self.master_adver_interval = self.advertisement_interval();
        self.master_down_timer = Some(after(now, self.master_down_interval()));
        self.preempt_deadline =
            (!self.config.preempt_delay.is_zero()).then(|| after(now, self.config.preempt_delay));
        self.push(Action::RemoveVips(self.config.vips.clone()));
        self.push(Action::BecameBackup);
        self.push(Action::Notify(State::Backup));
    }

    /// Startup of a node that was master a moment ago and never gave the role up: a
    /// restarted agent that found its program still attached and the virtual addresses
    /// still on the interface. RFC 5798 has no such event; its closest reading is that
    /// the router never left Master, so it becomes master at once and advertises
    /// immediately. Backups whose Master_Down_Timer is still running restart it on that
    /// advert and never notice. If one already took over (the restart came later than
    /// Master_Down_Interval), the two masters meet and the ordinary rules pick one: a
    /// higher priority, or an equal one from a higher address, makes this node yield at
    /// the other's advert (which a master sends at once on hearing a lower priority).
    ///
    /// Unlike a takeover, the announcement waits one Advertisement_Interval: the
    /// neighbours still point at this node unless another master took over, and then a
    /// gratuitous ARP from a node about to yield would be the one that sticks (Linux
    /// ignores a second update of the same entry within `locktime`, 1 s), sending clients
    /// to a node that no longer serves. Still master after an interval, it announces.
    /// Ignored unless in Initialize.
    pub fn resume_master(&mut self, now: Instant) {
        if self.state != State::Initialize {
            self.pull_back_timers(now);
            return;
        }
        self.become_master_with(now, false);
    }

    /// Shutdown event: a master sends a priority-0 advert (so a backup takes over after
    /// Skew_Time instead of Master_Down_Interval) and removes the addresses; every timer stops.
    pub fn shutdown(&mut self, _now: Instant) {
        match self.state {
            State::Initialize => return,
            State::Master => {
                self.send_advert(PRIORITY_STOP);
                self.push(Action::RemoveVips(self.config.vips.clone()));
            }
            State::Backup => {}
        }
        self.state = State::Initialize;
        self.cause = Cause::Shutdown;
        self.clear_timers();
        self.master = None;
        self.push(Action::Stopped);
        self.push(Action::Notify(State::Initialize));
    }

    /// An advert arrived from `src` (the IP source: the sender's primary address), already
    /// checked by [`super::wire`]. Checks it against the configuration (VRID, version, family,
    /// VRRPv2 authentication and interval), then runs RFC 5798 §6.4.2/§6.4.3.
    ///
    /// Returns why it was ignored, if it was; the reason is also counted in
    /// [`Stats::ignored`]. Deliver the adverts received before calling
    /// [`handle_timeout`](Machine::handle_timeout) for the same instant, or a backup may take
    /// over from a master whose advert is waiting in the socket.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        advert: &Repr,
        src: IpAddr,
    ) -> Result<(), Invalid> {
        self.pull_back_timers(now);
        if let Err(reason) = self.check(advert, src) {
            self.stats.ignored.record(reason);
            return Err(reason);
        }
        self.stats.adverts_received += 1;
        if !self.same_addresses(&advert.addrs) {
            self.stats.address_list_mismatch += 1;
        }
        let prio = advert.priority;
        if prio == PRIORITY_STOP {
            self.stats.priority_zero_received += 1;
        }
        match self.state {
            State::Initialize => {}
            State::Backup => {
                if prio == PRIORITY_STOP {
                    self.master_down_timer = Some(after(now, self.skew_time()));
                    self.master = None;
                    self.down_cause = Cause::MasterStopped(src);
                } else if self.accepts_master(now, prio) {
                    self.learn_interval(advert);
                    self.master_down_timer = Some(after(now, self.master_down_interval()));
                    self.master = Some((src, prio));
                    self.down_cause = Cause::MasterSilent(src);
                } else {
                    // Preempting: let Master_Down_Timer run out.
                    self.down_cause = Cause::Preempted {
                        master: src,
                        priority: prio,
                    };
                }
            }
            State::Master => {
                if prio == PRIORITY_STOP {
                    self.send_advert(self.priority);
                    self.adver_timer = Some(after(now, self.advertisement_interval()));
                } else if prio > self.priority
                    || (prio == self.priority && src > self.config.primary_addr)
                {
                    self.learn_interval(advert);
                    self.master = Some((src, prio));
                    self.cause = Cause::BetterMaster {
                        master: src,
                        priority: prio,
                    };
                    self.down_cause = Cause::MasterSilent(src);
                    self.become_backup(now);
                } else {
                    // Another master with a lower priority: answer at once so it yields on
                    // this advert rather than at our next one, and take the VIP's neighbour
                    // entries back from it.
                    self.send_advert(self.priority);
                    self.adver_timer = Some(after(now, self.advertisement_interval()));
                    self.announce_after_lower_priority(now);
                }
            }
        }
        Ok(())
    }

    /// Runs the timers due at `now`: Master_Down_Timer (backup → master), Adver_Timer (send an
    /// advert), delayed and periodic announcements. Harmless to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pull_back_timers(now);
        match self.state {
            State::Initialize => {}
            State::Backup => {
                if self.master_down_timer.is_some_and(|t| t <= now) {
                    self.become_master(now);
                }
            }
            State::Master => {
                if self.adver_timer.is_some_and(|t| t <= now) {
                    self.send_advert(self.priority);
                    // From now, not from the deadline: after a jump forward the machine sends
                    // one advert, not one per missed interval.
                    self.adver_timer = Some(after(now, self.advertisement_interval()));
                }
                let mut due = 0;
                self.pending_announcements.retain(|&(at, repeat)| {
                    if at <= now {
                        due = due.max(repeat);
                        false
                    } else {
                        true
                    }
                });
                if self.refresh_at.is_some_and(|t| t <= now) {
                    due = due.max(self.config.announce.refresh_repeat);
                    self.refresh_at = self.config.announce.refresh.map(|r| after(now, r));
                }
                self.announce(due);
            }
        }
    }

    /// When [`handle_timeout`](Machine::handle_timeout) should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Initialize => None,
            State::Backup => self.master_down_timer,
            State::Master => {
                let pending = self.pending_announcements.iter().map(|&(at, _)| at);
                [self.adver_timer, self.refresh_at]
                    .into_iter()
                    .flatten()
                    .chain(pending)
                    .min()
            }
        }
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Changes the effective priority (tracking: an interface went down, a check failed). A
    /// master advertises the new priority at once, so a backup that now outranks it can start
    /// preempting without waiting an interval. 0 is refused: that is what shutdown sends.
    pub fn set_priority(&mut self, now: Instant, priority: u8) -> Result<(), ConfigError> {
        self.pull_back_timers(now);
        if priority == PRIORITY_STOP {
            return Err(ConfigError::Priority);
        }
        if priority == self.priority {
            return Ok(());
        }
        self.priority = priority;
        // A higher priority shortens Skew_Time, so Master_Down_Interval.
        self.pull_back_timers(now);
        if self.state == State::Master {
            self.send_advert(priority);
            self.adver_timer = Some(after(now, self.advertisement_interval()));
        }
        Ok(())
    }

    fn check(&self, advert: &Repr, src: IpAddr) -> Result<(), Invalid> {
        if self.state == State::Initialize {
            return Err(Invalid::NotRunning);
        }
        if advert.vrid != self.config.vrid {
            return Err(Invalid::WrongVrid);
        }
        if advert.version != self.config.version {
            return Err(Invalid::VersionMismatch);
        }
        if advert.family() != Some(self.family) || Family::of(src) != self.family {
            return Err(Invalid::AddressFamily);
        }
        if src == self.config.primary_addr {
            return Err(Invalid::FromSelf);
        }
        if self.priority == PRIORITY_OWNER {
            return Err(Invalid::LocalOwner);
        }
        if self.config.version == Version::V2 {
            if advert.auth != self.config.auth {
                return Err(Invalid::AuthMismatch);
            }
            // RFC 3768 §7.1: v2 routers must agree on the interval; v3 backups learn it.
            if advert.interval_cs != self.config.advert_interval_cs {
                return Err(Invalid::IntervalMismatch);
            }
        }
        Ok(())
    }

    fn same_addresses(&self, addrs: &[IpAddr]) -> bool {
        let mut ours = self.config.vips.clone();
        let mut theirs = addrs.to_vec();
        ours.sort_unstable();
        theirs.sort_unstable();
        ours == theirs
    }

    /// RFC 5798 §6.4.2: "If Preempt_Mode is False, or if the Priority in the ADVERTISEMENT is
    /// greater than or equal to the local Priority", plus keepalived's preempt delay, which
    /// keeps accepting a lower-priority master until the delay has run out.
    fn accepts_master(&mut self, now: Instant, priority: u8) -> bool {
        if priority >= self.priority {
            self.preempt_deadline = None;
            return true;
        }
        if !self.config.preempt {
            return true;
        }
        if self.config.preempt_delay.is_zero() {
            return false;
        }
        match self.preempt_deadline {
            None => {
                self.preempt_deadline = Some(after(now, self.config.preempt_delay));
                true
            }
            Some(deadline) => now < deadline,
        }
    }

    fn learn_interval(&mut self, advert: &Repr) {
        if self.config.version == Version::V3 {
            self.master_adver_interval = centis(advert.interval_cs);
        }
    }

    fn become_master(&mut self, now: Instant) {
        self.become_master_with(now, true);
    }

    /// Becomes master; `announce_now` false defers the first announcement by one
    /// Advertisement_Interval (see [`Machine::resume_master`]).
    fn become_master_with(&mut self, now: Instant, announce_now: bool) {
        self.state = State::Master;
        self.cause = self.down_cause;
        self.stats.became_master += 1;
        self.master_down_timer = None;
        self.preempt_deadline = None;
        self.master = None;
        self.last_lower_prio_announce = None;
        // The advert first: it is what stops the other backups' timers, and it costs one send;
        // attaching XDP and adding addresses take milliseconds.
        self.send_advert(self.priority);
        self.push(Action::BecameMaster);
        self.push(Action::AddVips(self.config.vips.clone()));
        if announce_now {
            self.announce(self.config.announce.repeat);
        }
        self.push(Action::Notify(State::Master));
        self.adver_timer = Some(after(now, self.advertisement_interval()));
        self.pending_announcements.clear();
        if !announce_now {
            self.pending_announcements.push((
                after(now, self.advertisement_interval()),
                self.config.announce.repeat,
            ));
        }
        if let Some(delay) = self.config.announce.delay {
            self.pending_announcements
                .push((after(now, delay), self.config.announce.repeat));
        }
        self.refresh_at = self.config.announce.refresh.map(|r| after(now, r));
    }

    fn become_backup(&mut self, now: Instant) {
        self.state = State::Backup;
        self.stats.became_backup += 1;
        self.adver_timer = None;
        self.pending_announcements.clear();
        self.refresh_at = None;
        self.master_down_timer = Some(after(now, self.master_down_interval()));
        self.push(Action::RemoveVips(self.config.vips.clone()));
        self.push(Action::BecameBackup);
        self.push(Action::Notify(State::Backup));
    }

    fn announce_after_lower_priority(&mut self, now: Instant) {
        if let Some(last) = self.last_lower_prio_announce {
            // A clock that went back (now < last) does not mute announcements.
            if now >= last && now - last < LOWER_PRIO_ANNOUNCE_GAP {
                return;
            }
        }
        self.last_lower_prio_announce = Some(now);
        let repeat = self.config.announce.lower_prio_repeat;
        self.announce(repeat);
        if let Some(delay) = self.config.announce.lower_prio_delay {
            if repeat > 0 && self.pending_announcements.len() < MAX_PENDING_ANNOUNCEMENTS {
                self.pending_announcements.push((after(now, delay), repeat));
            }
        }
    }

    fn announce(&mut self, repeat: u32) {
        if repeat > 0 {
            self.push(Action::SendGratuitous {
                addrs: self.config.vips.clone(),
                repeat,
            });
        }
    }

    fn send_advert(&mut self, priority: u8) {
        self.stats.adverts_sent += 1;
        if priority == PRIORITY_STOP {
            self.stats.priority_zero_sent += 1;
        }
        self.push(Action::SendAdvert(Repr {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval_cs: self.config.advert_interval_cs,
            auth: self.config.auth,
            addrs: self.config.vips.clone(),
        }));
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn clear_timers(&mut self) {
        self.adver_timer = None;
        self.master_down_timer = None;
        self.preempt_deadline = None;
        self.pending_announcements.clear();
        self.refresh_at = None;
    }

    /// No timer may lie further from `now` than its own span: after the clock went back, the
    /// machine carries on from the new `now` instead of waiting out the difference.
    fn pull_back_timers(&mut self, now: Instant) {
        let cap = |timer: &mut Option<Instant>, span: Duration| {
            if let Some(t) = timer {
                let latest = after(now, span);
                if *t > latest {
                    *t = latest;
                }
            }
        };
        let advert = self.advertisement_interval();
        let master_down = self.master_down_interval();
        let a = self.config.announce;
        cap(&mut self.adver_timer, advert);
        cap(&mut self.master_down_timer, master_down);
        cap(&mut self.preempt_deadline, self.config.preempt_delay);
        cap(&mut self.refresh_at, a.refresh.unwrap_or_default());
        let longest = a
            .delay
            .unwrap_or_default()
            .max(a.lower_prio_delay.unwrap_or_default())
            .max(advert);
        for (at, _) in &mut self.pending_announcements {
            let latest = after(now, longest);
            if *at > latest {
                *at = latest;
            }
        }
    }
}

#[cfg(test)]
mod tests;
