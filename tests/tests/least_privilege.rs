//! lbd without root: as a throwaway system user holding exactly the capabilities
//! `lb_userspace::privilege::REQUIRED` documents (what dist/lbd.service grants), the agent
//! balances real traffic, runs VRRP and serves `lbctl`; without any one of them the kernel
//! refuses its start. The control socket is 0600 for lbd's user, or 0660 for
//! `agent.control_group`.
//!
//! Needs root (to create the users, namespaces and to hand out capabilities); the users
//! and groups are removed by guards, even on panic.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{bin_dir, reason_packets},
    client::shares,
    require_root,
    users::{TempGroup, TempUser},
    Lab, SourcePorts,
};
use lb_userspace::privilege::{self, Capability, REQUIRED};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Enough to see every backend used; `dr_lab` proves the spread.
const RUNS: usize = 60;

fn names(caps: &[&Capability]) -> Vec<&'static str> {
    caps.iter().map(|c| c.name).collect()
}

/// A directory for the socket that lbd's user owns (as systemd's `RuntimeDirectory=`
/// makes /run/lbd), traversable by all like the unit's `RuntimeDirectoryMode=0755`: the
/// socket's own mode must be what keeps others out.
/// Also hands the agent its pin directory on bpffs, as the unit's `ExecStartPre=+` does
/// for `/sys/fs/bpf/lbd`: a process that is not root cannot create it under bpffs' root.
fn runtime_dir(lab: &Lab, user: &TempUser) -> PathBuf {
    let dir = lab.dir().join("run-lbd");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pins = lab.pin_dir(0);
    std::fs::create_dir_all(&pins).unwrap();
    std::os::unix::fs::chown(&pins, Some(user.uid), Some(user.gid)).unwrap();
    dir
}

/// The lab's agent config with the socket moved to `socket`, `agent_extra` added to
/// `[agent]`, and a VRRP instance (so CAP_NET_RAW is exercised) on an address of its
/// own, which this only node takes over after one Master_Down_Interval.
fn config(lab: &Lab, socket: &Path, agent_extra: &str) -> PathBuf {
    let text = lab.lbd_config(0);
    let old = format!("control_socket = \"{}\"\n", lab.control_socket(0).display());
    assert!(
        text.contains(&old),
        "the lab's config changed shape:\n{text}"
    );
    let text = text.replace(
        &old,
        &format!("control_socket = \"{}\"\n{agent_extra}", socket.display()),
    );
    let text = format!(
        "{text}\n[[vrrp]]\nvrid = 77\npriority = 150\nadvert_interval = \"100ms\"\n\
         addresses = [\"198.51.100.250/32\"]\n"
    );
    lab.write_file("lbd-unprivileged.toml", &text).unwrap()
}

/// `CapXxx` of a process, and its four user ids.
fn proc_status(pid: u32) -> (String, impl Fn(&str) -> u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let caps = move |field: &str| {
        privilege::parse_status(&status, field).unwrap_or_else(|| panic!("no {field}"))
    };
    (uids, caps)
}

/// `lbctl --socket SOCKET ARGS` as `nobody`, with `groups` as its only supplementary
/// groups; returns the exit code and the output.
fn lbctl_as_nobody(socket: &Path, groups: &[u32], args: &[&str]) -> (i32, String) {
    let groups_arg = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let nobody = lb_tests::users::id_of("passwd", "nobody").unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={nobody}"))
        .arg(format!("--regid={nobody}"))
        .arg(groups_arg)
        .arg(bin_dir().join("lbctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn lbd_as_a_plain_user_with_the_documented_capabilities_balances_and_serves_its_group() {
    if !require_root(
        "lbd_as_a_plain_user_with_the_documented_capabilities_balances_and_serves_its_group",
    ) {
        return;
    }
    let operators = TempGroup::create("ops").expect("create the operators' group");
    // The agent's user is a member, as SupplementaryGroups= makes it under systemd: a
    // non-root process can only hand its socket to a group it belongs to.
    let user = TempUser::create("lbd", &[&operators]).expect("create the agent's user");
    let lab = Lab::new().expect("lab setup");
    let socket = runtime_dir(&lab, &user).join("lbd.sock");
    let config = config(
        &lab,
        &socket,
        &format!("control_group = \"{}\"\n", operators.name),
    );
    let caps: Vec<&str> = names(&REQUIRED.iter().collect::<Vec<_>>());
    let mut lbd = lab
        .start_lbd_wrapped(0, &config, &user.setpriv(&caps))
        .expect("lbd starts without root and attaches");

    let (uids, cap) = proc_status(lbd.pid());
    let id = user.uid.to_string();
    assert_eq!(
        uids,
        [id.as_str(); 4].join(" "),
        "real, effective, saved and fs uid"
    );
    let want = privilege::mask(&REQUIRED);
    for field in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(
            cap(field),
            want,
            "{field} of lbd: {:#x}, documented {want:#x} ({caps:?})",
            cap(field)
        );
    }
    assert!(
        !lbd.log().contains("lbd lacks"),
        "lbd warned about a capability it has:\n{}",
        lbd.log()
    );

    let meta = std::fs::metadata(&socket).expect("the control socket exists");
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o660, user.uid, operators.gid),
        "control socket mode, owner, group"
    );

    let tcp = lab.tcp_requests_from(lab.vip(), SourcePorts::From(41_000), RUNS, 2, TIMEOUT);
    let udp = lab.udp_requests_from(lab.vip(), SourcePorts::From(51_000), RUNS, 2, TIMEOUT);
    let stats = lbd.stats().expect("stats over the socket");
    for (what, share) in [
        ("TCP connections", shares("TCP connections", &tcp)),
        ("UDP flows", shares("UDP flows", &udp)),
    ] {
        for b in lab.backends() {
            assert!(
                share.get(b.name()).copied().unwrap_or(0) > 0,
                "{} got none of {RUNS} {what}: {share:?}",
                b.name()
            );
        }
    }
    // The program forwarded them, not a backend answering ARP for the VIP.
    let forwarded = reason_packets(&stats, "forwarded_dr");
    assert!(
        forwarded >= (RUNS * 4) as u64,
        "forwarded_dr {forwarded} for {RUNS} connections and {RUNS} flows"
    );

    // Attached ahead of the takeover counts as ready; mastership follows at the end of
    // Master_Down_Interval (about 0.4 s at 100 ms adverts).
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = lbd.status().expect("status");
        if status.vrrp.first().is_some_and(|v| v.state == "master") || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.vrrp.len(), 1);
    assert_eq!(
        status.vrrp[0].state, "master",
        "the VRRP instance (raw sockets: CAP_NET_RAW): {status:?}"
    );

    // A member of control_group may use lbctl; anyone else is told why not.
    let (code, out) = lbctl_as_nobody(&socket, &[operators.gid], &["stats"]);
    assert_eq!(code, 0, "lbctl as a member of control_group: {out}");
    assert!(out.contains("forwarded_dr"), "{out}");
    let (code, out) = lbctl_as_nobody(&socket, &[], &["status"]);
    assert_eq!(code, 1, "lbctl as a non-member: {out}");
    assert!(out.contains("not allowed to talk to lbd"), "{out}");

    let lb = lab.lb().ns.clone();
    let exit = lbd.stop().expect("lbd stops");
    assert!(exit.success(), "lbd exit on SIGTERM: {exit}\n{}", lbd.log());
    assert!(
        !Lab::xdp_attached(&lb, "eth0").unwrap(),
        "a non-root lbd detached its program on the way out"
    );
    assert!(!socket.exists(), "lbd removed its socket");
}

#[test]
fn without_any_one_documented_capability_lbd_does_not_start() {
    if !require_root("without_any_one_documented_capability_lbd_does_not_start") {
        return;
    }
    let user = TempUser::create("min", &[]).expect("create the agent's user");
    let lab = Lab::new().expect("lab setup");
    let socket = runtime_dir(&lab, &user).join("lbd.sock");
    let config = config(&lab, &socket, "");

    // First with all of them: the experiment's control, and the default socket mode.
    let all: Vec<&str> = REQUIRED.iter().map(|c| c.name).collect();
    let mut lbd = lab
        .start_lbd_wrapped(0, &config, &user.setpriv(&all))
        .expect("lbd starts with the documented capabilities");
    let meta = std::fs::metadata(&socket).expect("the control socket exists");
    assert_eq!(
        (meta.mode() & 0o777, meta.uid()),
        (0o600, user.uid),
        "without control_group the socket is its user's alone"
    );
    assert!(lbd.stop().unwrap().success(), "{}", lbd.log());
    drop(lbd);

    for dropped in &REQUIRED {
        let fewer: Vec<&str> = all.iter().copied().filter(|n| *n != dropped.name).collect();
        let err = match lab.start_lbd_wrapped(0, &config, &user.setpriv(&fewer)) {
            Ok(mut lbd) => {
                let log = lbd.log();
                let _ = lbd.stop();
                panic!(
                    "lbd started without {}: the documented set is not minimal\n{log}",
                    dropped.name
                );
            }
            Err(e) => format!("{e:#}"),
        };
        // lbd only warns about a missing capability; that it then exited is the kernel's
        // refusal, which the log shows too.
        assert!(
            err.contains("exited") && err.contains(&format!("lbd lacks {}", dropped.name)),
            "without {}: {err}",
            dropped.name
        );
        assert!(
            err.contains("Operation not permitted") || err.contains("Permission denied"),
            "without {} the kernel should refuse something: {err}",
            dropped.name
        );
    }
}
