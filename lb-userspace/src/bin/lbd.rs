//! lbd: the load-balancer agent. Loads the XDP program, programs its maps from the
//! config, resolves backend MACs, attaches (or, with VRRP instances, attaches while one of
//! them is master), serves the control socket, and on SIGTERM or SIGINT hands the virtual
//! addresses over, detaches and exits. Maps and links are pinned under `agent.pin_dir`:
//! after a crash (or SIGUSR2, which exits leaving everything in place) the next lbd adopts
//! them and traffic never stops; `lbd --cleanup` removes them.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use futures::StreamExt as _;
use lb_userspace::{
    agent::Agent,
    cli::lbd::{Args, LogFormat},
    config,
    control::{self, Command, HealthReport, Response},
    dataplane::{Dataplane, LoadOptions},
    health::{BackendId, Forced, HealthHandle, HealthRunner, SchedulerConfig},
    metrics,
    net::{self, NeighbourEvent, Netlink},
    vrrp::instance::Vrrp,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, UnixListener, UnixStream},
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot},
};
use tracing::{error, info, warn};

/// An alternative XDP object to load instead of the embedded one (testing upgrades,
/// running a custom build of the program).
const OBJECT_ENV: &str = "LBD_XDP_OBJECT";

/// How long startup waits for backend MACs before attaching anyway.
const RESOLVE_WAIT: Duration = Duration::from_secs(3);
/// How often unconfirmed backend neighbours are poked and the table re-read.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);

    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            eprintln!("lbd: nothing was started; fix the configuration and run again");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!(
            "{}: configuration is valid ({} VIPs, {} VRRP instances)",
            args.config.display(),
            config.vips.len(),
            config.vrrp.len()
        );
        return ExitCode::SUCCESS;
    }

    lb_userspace::privilege::warn_missing(!config.vrrp.is_empty());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lbd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.cleanup {
        return match runtime.block_on(cleanup(&config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lbd --cleanup: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(config, args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (journald keeps it under systemd). RUST_LOG overrides the level. The
/// netlink crates warn about kernel attributes newer than themselves, which is noise here.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,netlink_packet_route=error,netlink_proto=error".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level next to "message", so a collector indexes `vip`, `backend`,
        // `instance` without unwrapping; no span list, lbd has no spans worth it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// A control request waiting for the agent's answer.
type Pending = (Command, oneshot::Sender<Response>);

async fn run(config: config::Config, config_path: PathBuf) -> anyhow::Result<()> {
    // Before anything is loaded: an address that cannot be bound stops lbd with nothing done.
    let metrics_listener = match config.agent.metrics_listen {
        Some(addr) => Some((
            addr,
            TcpListener::bind(addr).await.with_context(|| {
                format!("agent.metrics_listen: cannot listen on {addr}; nothing was started")
            })?,
        )),
        None => None,
    };
    let netlink = Netlink::connect()?;
    let link = netlink.link(&config.agent.interface).await?;
    let mut nat_links = Vec::with_capacity(config.agent.nat_interfaces.len());
    for name in &config.agent.nat_interfaces {
        nat_links.push(
            netlink
                .link(name)
                .await
                .with_context(|| format!("agent.nat_interfaces: {name}"))?,
        );
    }
    let mut neighbour_events = Box::pin(net::watch_neighbours()?);
    let socket_path = config.agent.control_socket.clone();
    // Before touching the pins: a running lbd's would be taken from under it.
    refuse_if_serving(&socket_path)?;
    let object = std::env::var_os(OBJECT_ENV).map(PathBuf::from);
    let also: Vec<u32> = nat_links.iter().map(|l| l.index).collect();
    let dp = Dataplane::load_with(
        &LoadOptions {
            pin_dir: Some(&config.agent.pin_dir),
            object: object.as_deref(),
            ifindex: link.index,
            also: &also,
            flow_cache_slots: config.agent.flow_cache_size,
        },
        config.agent.table_capacity,
        config.agent.flow_table_size,
    )?;
    let adoption = dp.adoption().clone();
    if adoption.any() {
        info!(pin_dir = %config.agent.pin_dir.display(), maps = ?adoption.maps, replaced = ?adoption.replaced,
              links = ?adoption.links, program_changed = ?adoption.program_changed,
              "adopted the previous run's pinned maps and links");
    }
    let socket_group = config.agent.control_group.clone();
    let (health_runner, health, mut transitions) = HealthRunner::new(SchedulerConfig::default());
    tokio::spawn(health_runner.run());
    let keep_attached = config.agent.xdp_on_backup == config::XdpOnBackup::Attached;
    let mut vrrp = Vrrp::new(&config.vrrp, &netlink, keep_attached).await?;
    let mut agent = Agent::new(config, config_path.clone(), link, dp, health.clone())?;
    agent.set_nat_links(nat_links)?;
    if adoption.any() {
        info!(
            writes = agent.dataplane().writes(),
            "the configuration reconciled with the adopted maps (only differences written)"
        );
    }

    resolve_backends(&netlink, &mut agent).await?;
    let unresolved = agent.unresolved();
    if !unresolved.is_empty() {
        warn!(
            ?unresolved,
            "unresolved backends; their flows are dropped until the kernel resolves them"
        );
    }
    if vrrp.is_empty() {
        agent.attach()?;
    } else {
        // Backup first: the program stays loaded with its maps written, so becoming
        // master only has to attach it. A run that adopted an attached program resumes
        // as master where the addresses are still on the interface.
        let resume = agent.attached();
        vrrp.start(&mut agent, resume).await?;
        vrrp.track(&agent.vips_without_backend(), &mut agent)
            .await?;
    }

    let listener = bind_control(&socket_path, socket_group.as_deref())?;
    let (requests_tx, mut requests) = mpsc::channel::<Pending>(64);
    let (scrapes_tx, mut scrapes) = mpsc::channel::<metrics::http::Scrape>(16);
    if let Some((addr, l)) = metrics_listener {
        tokio::spawn(metrics::http::serve(l, scrapes_tx.clone()));
        info!(%addr, "serving metrics at http://{addr}/metrics");
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
    let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
    info!(socket = %socket_path.display(), "lbd ready");

    let mut leave = false;
    let outcome = loop {
        // Whether this event may have changed which VIPs have a usable backend.
        let mut backends_changed = false;
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM received, shutting down"); break Ok(()); }
            _ = sigint.recv() => { info!("SIGINT received, shutting down"); break Ok(()); }
            _ = sigusr2.recv() => {
                info!("SIGUSR2 received: exiting with the program attached and everything pinned, for the next lbd to adopt");
                leave = true;
                break Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(serve_client(stream, requests_tx.clone())); }
                Err(e) => warn!("control socket accept: {e}"),
            },
            _ = sighup.recv() => {
                // Logged by reload, success or refusal, with its trigger.
                let _ = agent.reload("SIGHUP");
                backends_changed = true;
                poke_unresolved(&netlink, &agent).await;
            }
            () = vrrp.wait(), if !vrrp.is_empty() => {
                if let Err(e) = vrrp.process(&mut agent).await {
                    break Err(e);
                }
            }
            Some((command, reply)) = requests.recv() => {
                let response = match command {
                    Command::Status => {
                        let mut status = agent.status();
                        status.vrrp = vrrp.status();
                        control::Response::ok(status)
                    }
                    Command::Health | Command::BackendUp { .. } | Command::BackendDown { .. } | Command::BackendAuto { .. } => {
                        health_command(&mut agent, &health, &command).await
                    }
                    other => agent.handle(&other),
                };
                let _ = reply.send(response);
                backends_changed = true;
                poke_unresolved(&netlink, &agent).await;
            }
            Some(scrape) = scrapes.recv() => {
                let _ = scrape.send(metrics::gather(&agent, &vrrp, &health).await);
            }
            Some(transition) = transitions.recv() => {
                if let Err(e) = agent.on_health(&transition) { break Err(e); }
                backends_changed = true;
            }
            Some(event) = neighbour_events.next() => {
                if let Err(e) = on_neighbour_event(&netlink, &mut agent, event).await {
                    break Err(e);
                }
            }
            _ = refresh.tick() => {
                if let Err(e) = refresh_neighbours(&netlink, &mut agent).await {
                    warn!("neighbour refresh: {e:#}");
                }
            }
        }
        // Health changes, edits and reloads may leave a VIP without backends (or give it
        // some back): one place follows them all. VRRP and neighbour events cannot, and VRRP
        // wakes every advert interval, so they do not pay for the walk over every VIP.
        if backends_changed && vrrp.tracks_vips() {
            if let Err(e) = vrrp.track(&agent.vips_without_backend(), &mut agent).await {
                break Err(e);
            }
        }
    };
    let _ = std::fs::remove_file(&socket_path);
    if leave {
        // Nothing handed over, nothing removed: the next run resumes within
        // Master_Down_Interval as if this one had never stopped.
        agent.into_dataplane().leave();
        return outcome;
    }
    // Hand over first (priority-0 adverts, addresses removed), so a backup takes over
    // after Skew_Time; the program keeps forwarding until it has.
    if let Err(e) = vrrp.shutdown(&mut agent).await {
        error!("VRRP shutdown: {e:#}");
    }
    agent.detach()?;
    // A graceful stop leaves nothing for a next run to adopt.
    agent.into_dataplane().unpin_all()?;
    outcome
}

/// Fails if an lbd answers on `socket`.
fn refuse_if_serving(socket: &std::path::Path) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        anyhow::bail!(
            "another lbd is already serving {}; stop it or set agent.control_socket",
            socket.display()
        );
    }
    Ok(())
}

/// `lbd --cleanup`: detaches the pinned program, removes every pin and the VRRP
/// instances' addresses (which a crashed master leaves on its interface).
async fn cleanup(config: &config::Config) -> anyhow::Result<()> {
    refuse_if_serving(&config.agent.control_socket)
        .context("refusing to clean up under a running lbd")?;
    let pins = lb_userspace::dataplane::cleanup(&config.agent.pin_dir)?;
    let netlink = Netlink::connect()?;
    let mut removed = 0;
    for instance in &config.vrrp {
        let link = match netlink.link(&instance.interface).await {
            Ok(l) => l,
            Err(e) => {
                warn!("VRRP instance {}: {e:#}", instance.name);
                continue;
            }
        };
        for a in &instance.addresses {
            if netlink
                .remove_address(link.index, a.addr, a.prefix_len)
                .await?
            {
                removed += 1;
            }
        }
    }
    println!(
        "lbd --cleanup: {} XDP link(s) detached, {} pin(s) removed from {}, {removed} VRRP address(es) removed",
        pins.links_detached,
        pins.pins_removed,
        config.agent.pin_dir.display()
    );
    Ok(())
}

/// Health reports and forced states: these talk to the health runner, so they are async
/// and live here rather than in the agent core.
async fn health_command(agent: &mut Agent, health: &HealthHandle, command: &Command) -> Response {
    let (vip, address, forced) = match command {
        Command::Health => {
            let names = agent.backend_names();
            return match health.snapshot().await {
                Ok(all) => Response::ok(
                    all.into_iter()
                        .filter_map(|s| {
                            let (vip, address) = names.get(&u32::try_from(s.id.0).ok()?)?.clone();
                            Some(HealthReport {
                                vip,
                                address,
                                target: s.target.to_string(),
                                state: s.state.to_string(),
                                health: s.health.to_string(),
                                forced: s.forced.map(|f| f.to_string()),
                                successes: s.successes,
                                failures: s.failures,
                                checks: s.checks,
                                last_error: s.last_error.map(|e| e.to_string()),
                                last_failure_secs_ago: s
                                    .last_failure
                                    .map(|t| t.elapsed().as_secs_f64()),
                                last_change_secs_ago: s.last_change.elapsed().as_secs_f64(),
                            })
                        })
                        .collect::<Vec<_>>(),
                ),
                Err(e) => Response::err(format!("health checker: {e}")),
            };
        }
        Command::BackendUp { vip, address } => (vip, *address, Some(Forced::Up)),
        Command::BackendDown { vip, address } => (vip, *address, Some(Forced::Down)),
        Command::BackendAuto { vip, address } => (vip, *address, None),
        _ => return Response::err("not a health command"),
    };
    let (id, checked) = match agent.backend_id(vip, address) {
        Ok(x) => x,
        Err(e) => return Response::err(format!("{e}; nothing was changed")),
    };
    let done = if checked {
        let backend = BackendId(id as u64);
        match forced {
            Some(f) => health.force(backend, f).await,
            None => health.clear_force(backend).await,
        }
        .map_err(|e| format!("health checker: {e}"))
    } else {
        agent
            .force_unchecked(id, forced)
            .map_err(|e| format!("{e:#}"))
    };
    match done {
        Ok(()) => {
            info!(%vip, backend = %address, forced = ?forced, "operator forced a backend state");
            Response::ok(
                serde_json::json!({ "vip": vip, "address": address, "forced": forced.map(|f| f.to_string()) }),
            )
        }
        Err(e) => Response::err(e),
    }
}

/// Asks the kernel to resolve backends whose MAC is unknown (new ones after a change);
/// the answers arrive as neighbour events.
async fn poke_unresolved(netlink: &Netlink, agent: &Agent) {
    for ip in agent.unresolved() {
        if let Err(e) = netlink.resolve(agent.ifindex(), ip).await {
            warn!("{e:#}");
        }
    }
}

/// Applies a neighbour table change. A backend the kernel forgot (garbage collection, a
/// flush) is asked for again at once; the map keeps its last MAC meanwhile.
async fn on_neighbour_event(
    netlink: &Netlink,
    agent: &mut Agent,
    event: NeighbourEvent,
) -> anyhow::Result<()> {
    match event {
        NeighbourEvent::Updated(n) if n.ifindex == agent.ifindex() => {
            agent.on_neighbour(n.ip, n.mac)
        }
        NeighbourEvent::Deleted { ifindex, ip }
            if ifindex == agent.ifindex() && agent.backend_addresses().contains(&ip) =>
        {
            if let Err(e) = netlink.resolve(ifindex, ip).await {
                warn!("{e:#}");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Pokes every backend and waits until all are resolved or `RESOLVE_WAIT` passes.
async fn resolve_backends(netlink: &Netlink, agent: &mut Agent) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + RESOLVE_WAIT;
    for ip in agent.backend_addresses() {
        if let Err(e) = netlink.resolve(agent.ifindex(), ip).await {
            warn!("{e:#}");
        }
    }
    loop {
        for n in netlink.neighbours(agent.ifindex()).await? {
            agent.on_neighbour(n.ip, n.mac)?;
        }
        if agent.unresolved().is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Re-reads the neighbour table and asks the kernel to re-confirm backends whose entry
/// is not confirmed: XDP-forwarded traffic never confirms a neighbour, so without this a
/// backend whose MAC changed would only be noticed when the entry expired.
async fn refresh_neighbours(netlink: &Netlink, agent: &mut Agent) -> anyhow::Result<()> {
    let table = netlink.neighbours(agent.ifindex()).await?;
    for ip in agent.backend_addresses() {
        match table.iter().find(|n| n.ip == ip) {
            Some(n) => {
                agent.on_neighbour(n.ip, n.mac)?;
                if !n.confirmed {
                    netlink.resolve(agent.ifindex(), ip).await?;
                }
            }
            None => netlink.resolve(agent.ifindex(), ip).await?,
        }
    }
    Ok(())
}

fn bind_control(path: &std::path::Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating {} (without root it must exist and be lbd's: RuntimeDirectory= in lbd.service)",
                dir.display()
            )
        })?;
    }
    refuse_if_serving(path)?;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    control::restrict_socket(path, group)?;
    Ok(listener)
}

/// Reads one bounded request line, hands it to the agent loop, writes the answer.
async fn serve_client(stream: UnixStream, agent: mpsc::Sender<Pending>) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let limit = control::MAX_REQUEST_BYTES as u64 + 1;
    let mut reader = BufReader::new(read.take(limit));
    let read =
        tokio::time::timeout(Duration::from_secs(5), reader.read_until(b'\n', &mut line)).await;
    let response = match read {
        Err(_) => Response::err("timed out waiting for a request line"),
        Ok(Err(e)) => Response::err(format!("reading the request: {e}")),
        Ok(Ok(_)) => match control::parse_request(line.strip_suffix(b"\n").unwrap_or(&line)) {
            Err(msg) => Response::err(msg),
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                if agent.send((req.command, tx)).await.is_err() {
                    return;
                }
                rx.await
                    .unwrap_or_else(|_| Response::err("lbd is shutting down"))
            }
        },
    };
    if let Ok(mut bytes) = serde_json::to_vec(&response) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
    // Closing with unread input (an oversized request) would reset the connection and
    // could destroy the reply before the client reads it: finish sending, then drain a
    // bounded amount of what the client still sends.
    let _ = write.shutdown().await;
    let mut rest = reader.into_inner().into_inner().take(16 * 1024 * 1024);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
}
