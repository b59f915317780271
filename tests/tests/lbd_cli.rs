//! The binaries' front doors: a bad config or a bad command line gets a precise message and
//! starts nothing. None of these need root: lbd stops before touching the kernel.

use std::{path::PathBuf, process::Command};

use lb_tests::agent::{bin_dir, lbd_binary};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("lbt-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn config(&self, body: &str) -> (PathBuf, PathBuf) {
        let socket = self.0.join("lbd.sock");
        let path = self.0.join("lb.toml");
        let text = format!(
            "[agent]\ninterface = \"lbtnope0\"\ncontrol_socket = \"{}\"\n{body}",
            socket.display()
        );
        std::fs::write(&path, text).unwrap();
        (path, socket)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn lbd_rejects_a_bad_config_with_file_line_and_key_and_starts_nothing() {
    let s = Scratch::new("bad");
    let (path, socket) = s.config(
        "\n[[vip]]\naddress = \"10.0.0.1\"\nport = 0\nprotocol = \"tcp\"\ntable_size = 100\n\
         [[vip.backend]]\naddress = \"2001:db8::1\"\n",
    );
    let (code, _, stderr) = run(Command::new(lbd_binary()).arg("--config").arg(&path));
    assert_eq!(code, 2, "{stderr}");
    let file = path.display();
    for want in [
        format!("{file}: 3 errors in configuration"),
        format!("{file}:7:8: vip[0].port: port 0 is not allowed"),
        format!("{file}:9:14: vip[0].table_size: 100 is not prime"),
        format!("{file}:11:11: vip[0].backend[0].address: backend 2001:db8::1 and VIP 10.0.0.1 are different address families"),
        "lbd: nothing was started".to_owned(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(
        !socket.exists(),
        "a rejected config must not open the control socket"
    );
}

#[test]
fn lbd_reports_a_syntax_error_at_its_position() {
    let s = Scratch::new("syntax");
    let (path, _) = s.config("[[vip]\n");
    let (code, _, stderr) = run(Command::new(lbd_binary()).arg("--config").arg(&path));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:4:6: invalid table header", path.display()))
            && stderr.contains("invalid table header; expected"),
        "{stderr}"
    );
}

#[test]
fn lbd_check_validates_without_starting_anything() {
    let s = Scratch::new("check");
    let (path, socket) = s.config("");
    let (code, stdout, stderr) = run(Command::new(lbd_binary())
        .arg("--config")
        .arg(&path)
        .arg("--check"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("configuration is valid (0 VIPs"),
        "{stdout}"
    );
    assert!(!socket.exists());
}

#[test]
fn lbd_names_a_missing_config_file() {
    let (code, _, stderr) =
        run(Command::new(lbd_binary()).args(["--config", "/nonexistent/lb.toml"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/lb.toml") && stderr.contains("cannot read the file"),
        "{stderr}"
    );
}

#[test]
fn lbd_names_an_interface_that_does_not_exist() {
    let s = Scratch::new("iface");
    let (path, socket) = s.config("");
    let (code, _, stderr) = run(Command::new(lbd_binary()).arg("--config").arg(&path));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("interface \"lbtnope0\" not found") && stderr.contains("agent.interface"),
        "{stderr}"
    );
    assert!(!socket.exists());
}

#[test]
fn lbctl_explains_when_no_agent_listens() {
    let (code, _, stderr) = run(Command::new(bin_dir().join("lbctl")).args([
        "--socket",
        "/nonexistent/lbd.sock",
        "status",
    ]));
    assert_eq!(code, 1);
    assert!(stderr.contains("is lbd running?"), "{stderr}");
}

#[test]
fn lbctl_rejects_a_bad_command_line_with_usage() {
    let (code, _, stderr) = run(Command::new(bin_dir().join("lbctl")).arg("frobnicate"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unrecognized subcommand 'frobnicate'") && stderr.contains("Usage"),
        "{stderr}"
    );
}

#[test]
fn lbd_logs_one_json_object_per_line_with_log_format_json() {
    let s = Scratch::new("json");
    let (path, _) = s.config("");
    let (code, _, stderr) = run(Command::new(lbd_binary())
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json"]));
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let error = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line in {stderr}"));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("interface \"lbtnope0\" not found"),
        "{error}"
    );
    assert!(error["timestamp"].is_string(), "{error}");

    let (code, _, stderr) = run(Command::new(lbd_binary())
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "xml"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("possible values: human, json"), "{stderr}");
}

#[test]
fn lbd_stops_before_anything_when_the_metrics_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let s = Scratch::new("metrics");
    let (path, socket) = s.config(&format!("metrics_listen = \"{addr}\"\n"));
    let (code, _, stderr) = run(Command::new(lbd_binary()).arg("--config").arg(&path));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "agent.metrics_listen: cannot listen on {addr}; nothing was started"
        )) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!socket.exists());
}
