//! Test support: the keepalived 2.2.7 captures in `shared/vrrp-captures/` and the lab they
//! were recorded in (see that folder's README).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use super::wire::Mac;

/// Where the captures live: checked in beside the tests (a copy of the team's
/// `shared/vrrp-captures`, so a clone anywhere can run them).
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vrrp-captures");

/// One captured frame.
pub struct Frame {
    /// Time since the file's first frame.
    pub t: Duration,
    pub data: Vec<u8>,
}

/// A lab node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: &'static str,
    pub mac: Mac,
    pub ipv4: Ipv4Addr,
    pub link_local: Ipv6Addr,
    /// The kernel's flow label on this node's keepalived socket.
    pub flow_label: u32,
    pub priority: u8,
}

pub const LB1: Node = Node {
    name: "lb1",
    mac: [0x02, 0x77, 0, 0, 0, 0x11],
    ipv4: Ipv4Addr::new(10, 77, 0, 11),
    link_local: Ipv6Addr::new(0xfe80, 0, 0, 0, 0x77, 0xff, 0xfe00, 0x11),
    flow_label: 0x96c79,
    priority: 150,
};

pub const LB2: Node = Node {
    name: "lb2",
    mac: [0x02, 0x77, 0, 0, 0, 0x12],
    ipv4: Ipv4Addr::new(10, 77, 0, 12),
    link_local: Ipv6Addr::new(0xfe80, 0, 0, 0, 0x77, 0xff, 0xfe00, 0x12),
    flow_label: 0x072e8,
    priority: 100,
};

impl Node {
    /// The node's primary address in `family` (the source of its adverts).
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.link_local)
        } else {
            IpAddr::V4(self.ipv4)
        }
    }

    /// The node that sent from `mac`.
    pub fn by_mac(mac: Mac) -> Option<Node> {
        [LB1, LB2].into_iter().find(|n| n.mac == mac)
    }
}

/// The capture folder; fails loudly when it is missing, so a test can never pass by skipping.
pub fn dir() -> PathBuf {
    let dir = PathBuf::from(DIR);
    assert!(
        dir.join("README.md").is_file(),
        "the keepalived captures are missing: expected {} (copied from the team's \
         shared/vrrp-captures, checked in with the tests)",
        dir.display()
    );
    dir
}

/// Every frame of a capture file, with times relative to its first frame.
pub fn load(file: &str) -> Vec<Frame> {
    let path = dir().join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(bytes.as_slice())
        .unwrap_or_else(|e| panic!("{}: not a pcap file: {e}", path.display()));
    assert_eq!(
        reader.header().datalink,
        pcap_file::DataLink::ETHERNET,
        "{}: link type",
        path.display()
    );
    let mut frames = Vec::new();
    let mut first = None;
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            packet.orig_len as usize,
            packet.data.len(),
            "{}: truncated capture",
            path.display()
        );
        let first = *first.get_or_insert(packet.timestamp);
        frames.push(Frame {
            t: packet.timestamp - first,
            data: packet.data.into_owned(),
        });
    }
    frames
}

/// The names of every `.pcap` file in the capture folder, sorted.
pub fn files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("listing the capture folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap"))
        .collect();
    names.sort();
    names
}
