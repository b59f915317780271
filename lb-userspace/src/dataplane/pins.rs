//! The pin directory on bpffs: what lets a restarted (or upgraded) lbd adopt the maps and
//! the attached program of the run before it instead of starting empty.
//!
//! ```text
//! <pin_dir>/maps/<MAP>-v<N>   every map of the program but per-CPU scratch space and caches
//! <pin_dir>/links/<ifindex>   the XDP link of each interface the program is attached to
//! ```
//!
//! The compatibility rule: a map is adopted by name *and layout version* `N`
//! ([`MAP_VERSIONS`]), and only if the kernel's description of the pinned map (type, key and
//! value sizes, capacity, flags) matches what this build would create. A release that changes
//! the meaning of a map's key or value bumps its version, so the new program gets a fresh
//! map under a new name and the old one is dropped with the old program: for the flow table
//! that means established flows are balanced afresh through the Maglev table at their next
//! packet (same backend unless the backend set changed). A changed `table_capacity` or
//! `flow_table_size` is a changed capacity: the same thing happens to that map.
//!
//! (bpffs refuses names with a dot, hence `-v`.)
//!
//! The directory is held with an exclusive `flock` while lbd runs, so two instances can never
//! share (and fight over) one set of pins.

use std::{
    collections::HashMap,
    fs::File,
    os::fd::{AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _};
use aya::maps::MapInfo;
use tracing::{info, warn};

/// Layout version of every pinned map. Bump a map's number when its key or value changes
/// meaning (a new field, a reordered one, a changed unit), even at the same size.
pub const MAP_VERSIONS: &[(&str, u32)] = &[
    ("VIPS", 1),
    ("VIP_FILTER", 1),
    ("BACKEND_TABLE", 1),
    ("FLOWS", 1),
    ("NAT_CONNS", 1),
    ("NAT_IN_USE", 1),
    ("TX_PORTS", 1),
    ("BACKENDS", 1),
    ("IFACES", 1),
    ("IFACE_CACHE", 1),
    ("SETTINGS", 2),
    ("VIP_STATS", 1),
    ("BACKEND_STATS", 1),
    ("REASON_STATS", 1),
    ("FLOW_STATS", 2),
    ("VIP_REPLY_STATS", 1),
    ("BACKEND_REPLY_STATS", 1),
];

/// Maps that hold no state worth keeping: each program gets its own.
const NOT_PINNED: &[&str] = &["SCRATCH", "BENCH_PORT", "BENCH_KEPT", "FLOW_CACHE"];

/// `enum bpf_map_type` values whose value size aya adjusts at load.
const DEVMAP: u32 = 14;
const CPUMAP: u32 = 16;
const DEVMAP_HASH: u32 = 25;
const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// An open, locked pin directory.
#[derive(Debug)]
pub struct PinDir {
    dir: PathBuf,
    /// Holds the `flock` for as long as the directory is in use.
    _lock: File,
}

/// What a load found in the pin directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Adoption {
    /// Maps taken over from the previous run.
    pub maps: Vec<String>,
    /// Pinned maps that were not compatible and were replaced by new, empty ones.
    pub replaced: Vec<String>,
    /// Interfaces whose XDP link was taken over (its program replaced by this run's).
    pub links: Vec<u32>,
    /// Whether the program now attached differs from the one the adopted link ran
    /// (an upgrade); `None` when no link was adopted.
    pub program_changed: Option<bool>,
}

impl Adoption {
    /// Whether anything was taken over.
    pub fn any(&self) -> bool {
        !self.maps.is_empty() || !self.links.is_empty()
    }
}

impl PinDir {
    /// Opens (creating it if needed) and locks `dir`, which must be on bpffs.
    pub fn open(dir: &Path) -> anyhow::Result<PinDir> {
        for sub in ["maps", "links"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {} (agent.pin_dir)", dir.join(sub).display()))?;
        }
        let lock = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        if !on_bpffs(&lock)? {
            bail!(
                "agent.pin_dir {} is not on a BPF filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) or choose a directory under it",
                dir.display()
            );
        }
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "another lbd uses agent.pin_dir {}; give each instance its own pin_dir",
                dir.display()
            );
        }
        Ok(PinDir {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn map_path(&self, name: &str, version: u32) -> PathBuf {
        self.dir.join("maps").join(format!("{name}-v{version}"))
    }

    pub fn link_path(&self, ifindex: u32) -> PathBuf {
        self.dir.join("links").join(ifindex.to_string())
    }

    /// Where each map of the object is pinned. A pinned map that does not match what the
    /// object (with `max_entries` overrides) would create is unpinned first, so the load
    /// creates a new one. Returns the pin paths and what was adopted or replaced.
    pub fn prepare_maps(
        &self,
        object: &[u8],
        max_entries: &HashMap<&str, u32>,
        adoption: &mut Adoption,
    ) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
        let parsed = aya_obj::Object::parse(object).context("parsing the XDP object")?;
        let mut paths = Vec::new();
        for (name, map) in &parsed.maps {
            if name.starts_with('.') || NOT_PINNED.contains(&name.as_str()) {
                continue;
            }
            let Some(&(name, version)) = MAP_VERSIONS.iter().find(|(n, _)| n == name) else {
                bail!("map {name} has no layout version: add it to dataplane::pins::MAP_VERSIONS");
            };
            let path = self.map_path(name, version);
            if path.exists() {
                // aya widens a devmap's or cpumap's value to the kernel's struct when the
                // kernel has one, and makes it read-only to programs: the object's size
                // and flags say nothing there.
                let sized = ![DEVMAP, CPUMAP, DEVMAP_HASH].contains(&map.map_type());
                let flags = |f: u32| if sized { f } else { f & !BPF_F_RDONLY_PROG };
                let want = (
                    map.map_type(),
                    map.key_size(),
                    sized.then_some(map.value_size()),
                    max_entries.get(name).copied().unwrap_or(map.max_entries()),
                    flags(map.map_flags()),
                );
                let info = MapInfo::from_pin(&path)
                    .with_context(|| format!("reading the pinned map {}", path.display()))?;
                let have = (
                    info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
                    info.key_size(),
                    sized.then_some(info.value_size()),
                    info.max_entries(),
                    flags(info.map_flags()),
                );
                if have == want {
                    adoption.maps.push(name.to_owned());
                } else {
                    warn!(map = name, ?have, ?want, "pinned map does not match this build (type, key, value, capacity, flags): a new one replaces it");
                    std::fs::remove_file(&path)
                        .with_context(|| format!("unpinning {}", path.display()))?;
                    adoption.replaced.push(name.to_owned());
                }
            }
            paths.push((name, path));
        }
        adoption.maps.sort();
        adoption.replaced.sort();
        Ok(paths)
    }

    /// Unpins maps this build does not use (other layout versions, maps that were
    /// removed). The previous program keeps them alive until its link moves to ours.
    pub fn remove_stale_maps(&self, used: &[(&str, PathBuf)]) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(self.dir.join("maps"))? {
            let path = entry?.path();
            if !used.iter().any(|(_, p)| *p == path) {
                info!(pin = %path.display(), "unpinning a map this version does not use");
                std::fs::remove_file(&path)
                    .with_context(|| format!("unpinning {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The pinned XDP links: (ifindex, pin path).
    pub fn links(&self) -> anyhow::Result<Vec<(u32, PathBuf)>> {
        let mut links = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("links"))? {
            let entry = entry?;
            let name = entry.file_name();
            match name.to_str().and_then(|n| n.parse::<u32>().ok()) {
                Some(ifindex) => links.push((ifindex, entry.path())),
                None => warn!(pin = %entry.path().display(), "ignoring an unexpected pin"),
            }
        }
        links.sort();
        Ok(links)
    }
}

/// Whether `file` lives on bpffs.
fn on_bpffs(file: &File) -> anyhow::Result<bool> {
    // SAFETY: statfs into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).context("fstatfs");
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Detaches a BPF link now (`BPF_LINK_DETACH`), whoever else holds it open: closing our
/// descriptor would only detach it once every holder has closed theirs.
pub fn link_detach(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    /// `union bpf_attr`'s `link_detach` member.
    #[repr(C)]
    struct LinkDetach {
        link_fd: u32,
    }
    const BPF_LINK_DETACH: libc::c_long = 34;
    let attr = LinkDetach {
        link_fd: fd.as_raw_fd() as u32,
    };
    // SAFETY: bpf(2) reads size_of::<LinkDetach>() bytes of a live struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &attr as *const LinkDetach,
            std::mem::size_of::<LinkDetach>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What [`cleanup`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub links_detached: usize,
    pub pins_removed: usize,
}

/// Detaches every pinned link and removes every pin and the directory itself. Nothing there
/// is not an error: cleaning up twice is the same as once.
pub fn cleanup(dir: &Path) -> anyhow::Result<Cleanup> {
    let mut done = Cleanup::default();
    if !dir.exists() {
        return Ok(done);
    }
    let pins = PinDir::open(dir)?;
    for (ifindex, path) in pins.links()? {
        match link_detach_pinned(&path) {
            Ok(()) => done.links_detached += 1,
            // A link whose interface is gone (its namespace deleted) is already detached.
            Err(e) => warn!(ifindex, "detaching the pinned link: {e:#}"),
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        done.pins_removed += 1;
    }
    for entry in std::fs::read_dir(dir.join("maps"))? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        done.pins_removed += 1;
    }
    for sub in ["maps", "links"] {
        std::fs::remove_dir(dir.join(sub))
            .with_context(|| format!("removing {}", dir.join(sub).display()))?;
    }
    drop(pins);
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(done)
}

/// [`link_detach`] on the link pinned at `path`.
pub fn link_detach_pinned(path: &Path) -> anyhow::Result<()> {
    let fd = obj_get(path)?;
    use std::os::fd::AsFd as _;
    link_detach(fd.as_fd()).with_context(|| format!("BPF_LINK_DETACH of {}", path.display()))
}

/// `BPF_OBJ_GET`: a descriptor of the object pinned at `path`.
pub fn obj_get(path: &Path) -> anyhow::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    /// `union bpf_attr`'s `obj_get` member (pathname, bpf_fd, file_flags, path_fd).
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        /// Explicit, so it is zero: the kernel refuses a non-zero tail.
        _pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| anyhow!("{} contains a NUL byte", path.display()))?;
    let attr = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: bpf(2) reads a live struct whose pathname points at a live C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("BPF_OBJ_GET {}", path.display()));
    }
    // SAFETY: a new descriptor the kernel just gave us.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as i32) })
}
