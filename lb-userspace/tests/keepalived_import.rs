//! `lbctl config import`: the corpus in `tests/fixtures/keepalived/` converts to exactly the
//! checked-in TOML, which our validation accepts; bad input is refused with its location;
//! no input, however mangled, makes the importer panic or write an invalid config.
//!
//! After an intended change of the output: `UPDATE_EXPECT=1 cargo test -p lb-userspace
//! --test keepalived_import`, then review the diff of the `.toml` files.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use lb_userspace::{
    config,
    import::{
        keepalived::{import_file, import_str},
        ImportError, Imported, Options, Severity,
    },
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keepalived")
}

/// Every `NAME.conf` of the corpus (files included by them live in subdirectories).
fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixtures())
        .expect("fixtures directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files
}

/// Converts a corpus file, named by its file name so the output is the same on every
/// machine.
fn convert(path: &Path, opts: &Options) -> Result<Imported, ImportError> {
    let text = fs::read_to_string(path).expect("read fixture");
    let name = path.file_name().unwrap().to_string_lossy();
    import_str(&text, &name, &fixtures(), opts)
}

#[test]
fn corpus_converts_to_the_expected_toml() {
    let files = corpus();
    assert!(files.len() >= 8, "the corpus shrank: {files:?}");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut mismatched = Vec::new();
    for conf in &files {
        let imported = convert(conf, &Options::default())
            .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        let reparsed = config::parse(&imported.toml)
            .unwrap_or_else(|d| panic!("{}: the output does not validate: {d:#?}", conf.display()));
        assert_eq!(reparsed, imported.config, "{}", conf.display());
        let expected_path = conf.with_extension("toml");
        if update {
            fs::write(&expected_path, &imported.toml).expect("write expected output");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != imported.toml {
            eprintln!(
                "=== {} differs; got:\n{}",
                expected_path.display(),
                imported.toml
            );
            mismatched.push(expected_path);
        }
    }
    assert!(
        mismatched.is_empty(),
        "output differs from {mismatched:?}; if intended, rerun with UPDATE_EXPECT=1 and review the diff"
    );
}

/// Each kind of construct in the corpus is actually converted (so an expected file can not
/// silently become "everything dropped").
#[test]
fn corpus_covers_each_construct() {
    let all: String = corpus()
        .iter()
        .map(|c| convert(c, &Options::default()).expect("converts").toml)
        .collect();
    for needle in [
        "auth_pass = \"1111\"",
        "preempt = false",
        "preempt_delay = \"30s\"",
        "advert_interval = \"500ms\"",
        "unicast_peers = [\"172.31.10.12\", \"172.31.10.13\"]",
        "notify = [\"/usr/local/sbin/vrrp-notify.sh\", \"frontend\"]",
        "type = \"tcp\"",
        "type = \"http\"",
        "type = \"https\"",
        "type = \"exec\"",
        "type = \"udp\"",
        "source_affinity = true",
        "mode = \"dr\"",
        "initial = \"down\"",
        "expect_status = [200, 301, 302]",
        "LBD_BACKEND_ADDRESS",
        "tcp_idle_timeout = \"7200s\"",
        "address = \"192.168.201.11\"",
        "address = \"10.7.0.11\"",
    ] {
        assert!(
            all.contains(needle),
            "no converted file contains {needle:?}"
        );
    }
}

#[test]
fn warnings_name_their_source_line() {
    let imported = convert(&fixtures().join("unsupported.conf"), &Options::default()).unwrap();
    let text: Vec<String> = imported.remarks.iter().map(|r| r.to_string()).collect();
    for expected in [
        "unsupported.conf:5: warning: vrrp_strict",
        "unsupported.conf:10: warning: static_routes",
        "unsupported.conf:14: warning: vrrp_sync_group VG_EDGE",
        "unsupported.conf:25: warning: vrrp_instance VI_OUT: use_vmac",
        "unsupported.conf:32: warning: vrrp_instance VI_OUT: auth_type AH",
        "unsupported.conf:40: warning: vrrp_instance VI_OUT: `dev eth3`",
        "unsupported.conf:41: warning: vrrp_instance VI_OUT: 2001:db8::1/64 is not of the family",
        "unsupported.conf:50: warning: vrrp_instance VI_OUT: `@edge1 priority`",
        "unsupported.conf:53: warning: vrrp_instance VI_OUT: unknown keyword `bogus_option`",
        "unsupported.conf:64: warning: vrrp_instance VI_IN: track_script vrrp_script chk_missing",
        "unsupported.conf:68: warning: vrrp_instance VI_NO_VRID: no (valid) virtual_router_id",
        "unsupported.conf:75: warning: virtual_server fwmark 1",
        "unsupported.conf:84: warning: virtual_server 10.1.0.1 25: lb_kind TUN",
        "unsupported.conf:109: warning: virtual_server 10.1.0.1 5060: protocol SCTP",
        "unsupported.conf:112: warning: virtual_server 10.1.0.1: a service on every port",
        "unsupported.conf:116: warning: unknown top-level keyword `mystery_block`",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(expected)),
            "no remark starts with {expected:?}:\n{}",
            text.join("\n")
        );
    }
    // Every warning is in the header of the output too.
    for r in imported
        .remarks
        .iter()
        .filter(|r| r.severity == Severity::Warning)
    {
        assert!(imported.toml.contains(&r.message), "not in the header: {r}");
    }
}

#[test]
fn interface_option_and_fallback() {
    let dr = fixtures().join("dr_tcp_check.conf");
    let imported = convert(
        &dr,
        &Options {
            interface: Some("ens1f0".into()),
        },
    )
    .unwrap();
    assert_eq!(imported.config.agent.interface, "ens1f0");

    let imported = import_str(
        "virtual_server 10.0.0.1 80 {\n lb_kind DR\n real_server 10.0.0.2 80 {\n }\n}\n",
        "lvs-only.conf",
        Path::new("/nonexistent"),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(imported.config.agent.interface, "eth0");
    assert!(imported.remarks[0]
        .to_string()
        .starts_with("lvs-only.conf:1: warning: no vrrp_instance names an interface"));
}

#[test]
fn syntax_errors_are_refused_with_their_location() {
    let cases = [
        (
            "vrrp_instance VI_1 {\n  state MASTER\n",
            1,
            20,
            "never closed",
        ),
        ("global_defs {\n}\n}\n", 3, 1, "closes no block"),
        (
            "vrrp_instance A {\n  notify \"/bin/x\n}\n",
            2,
            10,
            "unterminated",
        ),
        ("{\n  a 1\n}\n", 1, 1, "no keyword"),
    ];
    for (text, line, column, what) in cases {
        match import_str(
            text,
            "bad.conf",
            Path::new("/nonexistent"),
            &Options::default(),
        ) {
            Err(e @ ImportError::Syntax { .. }) => {
                let shown = e.to_string();
                assert!(
                    shown.starts_with(&format!("bad.conf:{line}:{column}: "))
                        && shown.contains(what),
                    "{text:?}: {shown}"
                );
            }
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }
}

#[test]
fn unknown_blocks_and_empty_files_are_not_errors() {
    for text in ["", "# only a comment\n", "some_future_block {\n  x 1\n}\n"] {
        let imported = import_str(
            text,
            "k.conf",
            Path::new("/nonexistent"),
            &Options::default(),
        )
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(imported.config.vips.is_empty());
    }
    let imported = import_str(
        "some_future_block {\n  x 1\n}\n",
        "k.conf",
        Path::new("/nonexistent"),
        &Options::default(),
    )
    .unwrap();
    assert!(imported.remarks.iter().any(|r| r.to_string()
        == "k.conf:1: warning: unknown top-level keyword `some_future_block`: not converted"));
}

/// A small deterministic generator: the same mutations on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Truncations, byte edits, and line deletions/duplications/swaps of every corpus file go
/// through the whole importer: it returns an error or a config that validates, and never
/// panics.
#[test]
fn mangled_inputs_never_panic() {
    const PER_FILE: usize = 400;
    let interesting = b"{}\"'#!\\$@/-. \n0123456789abcdefxX:";
    let mut rng = Rng(0x6b65_6570_616c_6976);
    let mut converted = 0;
    let mut refused = 0;
    for conf in corpus() {
        let original = fs::read(&conf).unwrap();
        for round in 0..PER_FILE {
            let mut bytes = original.clone();
            match round % 5 {
                0 => bytes.truncate(rng.below(bytes.len() + 1)),
                1 | 2 => {
                    for _ in 0..1 + rng.below(6) {
                        let i = rng.below(bytes.len());
                        let b = if rng.below(2) == 0 {
                            interesting[rng.below(interesting.len())]
                        } else {
                            rng.next() as u8
                        };
                        match rng.below(3) {
                            0 if !bytes.is_empty() => bytes[i] = b,
                            1 => bytes.insert(i.min(bytes.len()), b),
                            _ if !bytes.is_empty() => {
                                bytes.remove(i);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let mut lines: Vec<&str> = text.lines().collect();
                    for _ in 0..1 + rng.below(4) {
                        if lines.is_empty() {
                            break;
                        }
                        let i = rng.below(lines.len());
                        let j = rng.below(lines.len());
                        match rng.below(3) {
                            0 => {
                                lines.remove(i);
                            }
                            1 => lines.insert(j, lines[i]),
                            _ => lines.swap(i, j),
                        }
                    }
                    bytes = lines.join("\n").into_bytes();
                }
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let result = std::panic::catch_unwind(|| {
                import_str(&text, "mangled.conf", &fixtures(), &Options::default())
            });
            match result {
                Err(_) => panic!(
                    "the importer panicked on a mutation of {}:\n{text}",
                    conf.display()
                ),
                Ok(Ok(imported)) => {
                    if let Err(d) = config::parse(&imported.toml) {
                        panic!("invalid output {d:?} for:\n{text}");
                    }
                    converted += 1;
                }
                Ok(Err(ImportError::Syntax { .. })) => refused += 1,
                Ok(Err(e)) => panic!("unexpected error {e} for:\n{text}"),
            }
        }
    }
    eprintln!("{converted} mangled inputs converted, {refused} refused as syntax errors");
    assert!(converted > 0 && refused > 0);
}

fn lbctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(args)
        .output()
        .expect("run lbctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lbctl_config_import() {
    let conf = fixtures().join("unicast_peers.conf");
    let conf_arg = conf.to_str().unwrap();
    let (code, stdout, stderr) = lbctl(&["config", "import", conf_arg]);
    assert_eq!(code, 0, "{stderr}");
    let expected = import_file(&conf, &Options::default()).unwrap();
    assert_eq!(stdout, expected.toml);
    assert_eq!(
        stderr,
        expected
            .remarks
            .iter()
            .map(|r| format!("{r}\n"))
            .collect::<String>()
    );
    assert!(
        stderr.contains("unicast_peers.conf:29: warning: vrrp_instance VI_HAPROXY: track_script")
    );

    let dir = std::env::temp_dir().join(format!("lbctl-import-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join("lb.toml");
    let (code, stdout, stderr) = lbctl(&[
        "config",
        "import",
        conf_arg,
        "--interface",
        "eth9",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
    let written = config::load(&out).expect("written file validates");
    assert_eq!(written.agent.interface, "eth9");
    let (code, _, stderr) = lbctl(&["config", "check", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    let bad = dir.join("bad.conf");
    fs::write(&bad, "vrrp_instance X {\n  virtual_router_id 1\n").unwrap();
    let (code, stdout, stderr) = lbctl(&["config", "import", bad.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(stdout.is_empty());
    assert_eq!(
        stderr,
        format!(
            "lbctl: {}:1:17: this `vrrp_instance` block is never closed (missing `}}`)\n",
            bad.display()
        )
    );
    let (code, _, stderr) = lbctl(&[
        "config",
        "import",
        dir.join("absent.conf").to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}

/// What our validation refuses is taken out or reset, with a warning, and the rest stays.
#[test]
fn refused_values_are_repaired_with_a_warning() {
    let text = "\
vrrp_instance this_interface_name_is_too_long {
    interface this_interface_name_is_too_long
    virtual_router_id 9
    unicast_src_ip 10.0.0.1
    virtual_ipaddress {
        10.0.0.9
    }
}
vrrp_instance ok {
    interface eth1
    virtual_router_id 10
    unicast_src_ip 10.0.1.1
    virtual_ipaddress {
        10.0.1.9
    }
}
virtual_server 10.0.0.9 80 {
    lb_kind DR
    real_server 10.0.0.10 80 {
    }
}
virtual_server 10.0.0.9 80 {
    lb_kind DR
}
";
    let imported = import_str(
        text,
        "r.conf",
        Path::new("/nonexistent"),
        &Options::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = &imported.config;
    assert_eq!(c.agent.interface, "eth0");
    assert_eq!(c.vips.len(), 1);
    assert_eq!(c.vips[0].backends.len(), 1);
    assert_eq!(c.vrrp.len(), 1);
    assert_eq!(c.vrrp[0].unicast_src, None);
    let remarks: Vec<String> = imported.remarks.iter().map(|r| r.to_string()).collect();
    for expected in [
        "r.conf:1: warning: agent.interface \"this_interface_name_is_too_long\" is refused by lbd",
        "r.conf:1: warning: vrrp_instance this_interface_name_is_too_long not converted: lbd refuses it",
        "r.conf:9: warning: vrrp_instance ok: unicast_src = \"10.0.1.1\" is refused by lbd (vrrp[0].unicast_src: unicast_src without unicast_peers",
        "r.conf:22: warning: virtual_server 10.0.0.9 80 not converted: lbd refuses it (vip[1]: duplicate VIP",
    ] {
        assert!(
            remarks.iter().any(|r| r.starts_with(expected)),
            "no remark starts with {expected:?}:\n{}",
            remarks.join("\n")
        );
    }
}
