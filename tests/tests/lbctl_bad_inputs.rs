//! Bad input never changes anything: a table of bad command lines, bad control-socket
//! requests and bad config files, each with the message it must produce. The agent's full
//! state (effective config and map contents) is compared before and after every case.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
};

use lb_tests::{agent::lbctl, require_root, Lab};

/// Sends raw bytes to the control socket; returns the reply line.
fn raw(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).expect("connect to lbd");
    // The agent may answer (and close) before reading an oversized request to its end.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read reply");
    reply
}

fn state(socket: &Path) -> String {
    let reply = raw(socket, b"{\"v\":1,\"cmd\":\"state\"}\n");
    let v: serde_json::Value = serde_json::from_str(&reply).expect("state reply");
    assert_eq!(v["ok"], true, "{reply}");
    reply
}

/// What a case does and what it must say.
enum Input {
    /// `lbctl ARGS`, expected exit code.
    Cli(&'static [&'static str], i32),
    /// Raw bytes on the control socket; the reply must be `ok: false`.
    Socket(Vec<u8>),
    /// Write this config file, then `lbctl reload` (exit 1).
    Reload(String),
}

#[test]
fn bad_inputs_get_precise_messages_and_change_nothing() {
    if !require_root("bad_inputs_get_precise_messages_and_change_nothing") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    let config = lab.write_lbd_config("");
    let good_config = std::fs::read_to_string(&config).unwrap();
    let lbd = lab.start_lbd(&config).expect("lbd starts");
    let socket = lbd.socket().to_owned();
    let with = |from: &str, to: &str| {
        assert!(good_config.contains(from), "fixture lacks {from:?}");
        good_config.replacen(from, to, 1)
    };
    let big = {
        let mut v = br#"{"v":1,"cmd":"vip_del","vip":""#.to_vec();
        v.extend(std::iter::repeat_n(b'a', 70 * 1024));
        v.extend_from_slice(b"\"}\n");
        v
    };

    use Input::*;
    let cases: Vec<(Input, &str)> = vec![
        // Command lines clap rejects before talking to lbd.
        (Cli(&[], 2), "Usage: lbctl"),
        (Cli(&["frobnicate"], 2), "unrecognized subcommand 'frobnicate'"),
        (Cli(&["backend"], 2), "Usage: lbctl backend"),
        (Cli(&["vip", "add", "10.99.0.60:80"], 2), "no /PROTOCOL in \"10.99.0.60:80\""),
        (Cli(&["vip", "add", "10.99.0.60/tcp"], 2), "\"10.99.0.60\" is not ADDRESS:PORT"),
        (Cli(&["vip", "add", "10.99.0.60:80/sctp"], 2), "unknown protocol \"sctp\": use tcp or udp"),
        (Cli(&["vip", "add", "10.99.0.60:99999/tcp"], 2), "is not ADDRESS:PORT"),
        (Cli(&["vip", "add", "10.99.0.60:80/tcp", "--mode", "tunnel"], 2), "invalid value 'tunnel' for '--mode <MODE>'"),
        (Cli(&["vip", "add", "10.99.0.60:80/tcp", "--table-size", "big"], 2), "invalid value 'big' for '--table-size"),
        (Cli(&["backend", "add", "web", "not-an-ip"], 2), "invalid value 'not-an-ip' for '<ADDRESS>'"),
        (Cli(&["backend", "add", "web", "10.99.0.30", "--weight", "-1"], 2), "unexpected argument '-1'"),
        (Cli(&["backend", "weight", "web", "10.99.0.21"], 2), "required arguments were not provided"),
        (Cli(&["backend", "weight", "web", "10.99.0.21", "x"], 2), "invalid value 'x' for '<WEIGHT>'"),
        (Cli(&["stats", "--watch", "abc"], 2), "invalid value 'abc' for '--watch"),
        (Cli(&["completions", "tcsh"], 2), "invalid value 'tcsh'"),
        // Requests lbd refuses: exit 1, and the reason.
        (Cli(&["vip", "add", "10.99.0.50:80/tcp"], 1), "VIP web (10.99.0.50:80/tcp) already exists; nothing was changed"),
        (Cli(&["vip", "add", "10.99.0.60:80/tcp", "--name", "web"], 1), "VIP web (10.99.0.50:80/tcp) already exists"),
        (Cli(&["vip", "add", "10.99.0.60:0/tcp"], 1), "vip[2].port: port 0 is not allowed"),
        (Cli(&["vip", "add", "10.99.0.60:80/tcp", "--table-size", "100"], 1), "vip[2].table_size: 100 is not prime"),
        (Cli(&["vip", "add", "10.99.0.60:80/tcp", "--table-size", "4194319"], 1), "need 4325393 slots but table_capacity is 4194304"),
        (Cli(&["vip", "add", "10.99.0.60:80/tcp", "--mode", "nat"], 1), "NAT VIPs need IP forwarding, and net.ipv4.ip_forward is 0"),
        (Cli(&["vip", "add", "0.0.0.0:80/tcp"], 1), "0.0.0.0 cannot be a VIP"),
        (Cli(&["vip", "add", "224.0.0.1:80/tcp"], 1), "224.0.0.1 cannot be a VIP"),
        (Cli(&["vip", "del", "nope"], 1), "no VIP \"nope\"; give a name or ADDRESS:PORT/PROTOCOL of one of: web (10.99.0.50:80/tcp), web-udp (10.99.0.50:80/udp)"),
        (Cli(&["vip", "show", "nope"], 1), "no VIP \"nope\""),
        (Cli(&["backend", "list", "10.99.0.50:81/tcp"], 1), "no VIP \"10.99.0.50:81/tcp\""),
        (Cli(&["backend", "add", "web", "10.99.0.21"], 1), "backend 10.99.0.21 is already in VIP web"),
        (Cli(&["backend", "add", "web", "2001:db8::5"], 1), "backend 2001:db8::5 and VIP 10.99.0.50 are different address families"),
        (Cli(&["backend", "add", "web", "127.0.0.1"], 1), "127.0.0.1 cannot be a backend"),
        (Cli(&["backend", "add", "web", "10.99.0.30", "--weight", "10001"], 1), "10001 is above the maximum weight 10000"),
        (Cli(&["backend", "add", "nope", "10.99.0.30"], 1), "no VIP \"nope\""),
        (Cli(&["backend", "del", "web", "10.99.0.99"], 1), "VIP web has no backend 10.99.0.99 (its backends: 10.99.0.21, 10.99.0.22, 10.99.0.23)"),
        (Cli(&["backend", "weight", "web", "10.99.0.99", "2"], 1), "VIP web has no backend 10.99.0.99"),
        (Cli(&["backend", "weight", "web", "10.99.0.21", "20000"], 1), "20000 is above the maximum weight"),
        (Cli(&["backend", "drain", "web", "10.99.0.99"], 1), "VIP web has no backend 10.99.0.99"),
        (Cli(&["backend", "undrain", "nope", "10.99.0.21"], 1), "no VIP \"nope\""),
        (Cli(&["config", "save", "/nonexistent/dir/lb.toml"], 1), "writing /nonexistent/dir/lb.toml"),
        // Reloads of bad files: refused whole, with the location.
        (Reload("[agent\n".into()), "invalid table header"),
        (Reload(with("hash_seed = 0", "hash_seed = 0\nturbo = true")), "unknown field `turbo`"),
        (Reload(with("port = 80", "port = 0")), "vip[0].port: port 0 is not allowed"),
        (Reload(with("name = \"web-udp\"", "name = \"web\"")), "duplicate VIP name \"web\""),
        (Reload(with("protocol = \"udp\"", "protocol = \"tcp\"")), "duplicate VIP 10.99.0.50:80/tcp"),
        (Reload(with("interface = \"eth0\"", "interface = \"eth1\"")), "agent.interface cannot change while lbd runs; nothing was applied"),
        (Reload(with("hash_seed = 0", "hash_seed = 0\ntable_capacity = 1000000")), "agent.table_capacity cannot change while lbd runs"),
        (Reload(with("weight = 1", "weight = 99999")), "99999 is above the maximum weight"),
        (Reload(with("hash_seed = 0", "hash_seed = 0\ntcp_idle_timeout = \"soon\"")), ":5:20: invalid value: string \"soon\", expected a duration"),
        (Reload(with("address = \"10.99.0.21\"", "address = \"10.99.0.321\"")), "invalid IP address syntax"),
        (Reload(String::new()), "missing field `agent`"),
        // Raw control-socket requests.
        (Socket(b"\n".to_vec()), "malformed request"),
        (Socket(b"{\n".to_vec()), "malformed request"),
        (Socket(b"[1,2]\n".to_vec()), "malformed request"),
        (Socket(b"\x00\xff\xfe garbage\n".to_vec()), "malformed request"),
        (Socket(br#"{"v":2,"cmd":"status"}"#.to_vec()), "unsupported protocol version 2"),
        (Socket(br#"{"v":"1","cmd":"status"}"#.to_vec()), "unsupported protocol version (not a number)"),
        (Socket(br#"{"cmd":"status"}"#.to_vec()), "missing field `v`"),
        (Socket(br#"{"v":1,"cmd":"nope"}"#.to_vec()), "unknown variant `nope`"),
        (Socket(br#"{"v":1}"#.to_vec()), "missing field `cmd`"),
        (Socket(br#"{"v":1,"cmd":"status","x":1}"#.to_vec()), "unknown field `x`"),
        (Socket(br#"{"v":1,"cmd":"backend_add","vip":"web","address":"x"}"#.to_vec()), "invalid IP address syntax"),
        (Socket(br#"{"v":1,"cmd":"backend_add","vip":"web","address":"10.99.0.30","weight":-5}"#.to_vec()), "invalid value"),
        (Socket(br#"{"v":1,"cmd":"backend_weight","vip":"web","address":"10.99.0.21"}"#.to_vec()), "missing field `weight`"),
        (Socket(br#"{"v":1,"cmd":"vip_add","vip":{"address":"10.0.0.1","port":80,"protocol":"tcp","bogus":1}}"#.to_vec()), "unknown field `bogus`"),
        (Socket(br#"{"v":1,"cmd":"vip_add","vip":{"address":"10.0.0.1","port":80,"protocol":"tcp","table_size":6}}"#.to_vec()), "6 is not prime"),
        (Socket(big), "request too large"),
    ];
    assert!(cases.len() >= 50, "{} cases", cases.len());

    for (i, (input, want)) in cases.into_iter().enumerate() {
        let before = state(&socket);
        let said = match &input {
            Cli(args, code) => {
                let (got, out) = lbctl(&socket, args);
                assert_eq!(got, *code, "case {i} lbctl {args:?}: exit {got}\n{out}");
                out
            }
            Socket(bytes) => {
                let reply = raw(&socket, bytes);
                let v: serde_json::Value = serde_json::from_str(&reply)
                    .unwrap_or_else(|e| panic!("case {i}: reply is not JSON ({e}): {reply}"));
                assert_eq!(v["ok"], false, "case {i}: {reply}");
                v["error"].as_str().unwrap_or_default().to_owned()
            }
            Reload(text) => {
                std::fs::write(&config, text).unwrap();
                let (got, out) = lbctl(&socket, &["reload"]);
                std::fs::write(&config, &good_config).unwrap();
                assert_eq!(got, 1, "case {i}: a bad reload must fail\n{out}");
                assert!(out.contains("refused"), "case {i}: {out}");
                out
            }
        };
        assert!(said.contains(want), "case {i}: wanted {want:?} in:\n{said}");
        assert_eq!(
            state(&socket),
            before,
            "case {i} ({want}) changed the agent's state"
        );
    }
    // Still fully working afterwards.
    let (code, out) = lbctl(&socket, &["vip", "list"]);
    assert_eq!(code, 0, "{out}");
    drop(lbd);
}
