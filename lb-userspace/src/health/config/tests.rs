use std::time::Duration;

use super::*;

fn parse(text: &str) -> HealthCheckConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

fn spec(text: &str) -> CheckSpec {
    parse(text)
        .to_spec()
        .unwrap_or_else(|e| panic!("{text}\n{e:?}"))
}

fn issues(text: &str) -> Vec<(&'static str, String)> {
    let cfg = parse(text);
    let issues = cfg.to_spec().expect_err(text);
    for i in &issues {
        assert!(
            i.span.end <= text.len() && i.span.start < i.span.end,
            "{i:?}"
        );
    }
    issues.into_iter().map(|i| (i.key, i.message)).collect()
}

#[test]
fn defaults() {
    let s = spec(r#"type = "tcp""#);
    assert_eq!(s, CheckSpec::new(Probe::Tcp));
    assert_eq!(
        (s.interval, s.timeout, s.rise, s.fall, s.initial),
        (
            Duration::from_secs(2),
            Duration::from_secs(1),
            2,
            3,
            Initial::Up
        )
    );
    let Probe::Http(http) = spec(r#"type = "http""#).probe else {
        panic!()
    };
    assert_eq!(http, HttpProbe::get("/"));
    assert_eq!(
        spec(r#"type = "udp""#).probe,
        Probe::Udp(UdpProbe::default())
    );
}

#[test]
fn every_key() {
    let s = spec(
        r#"
        type = "http"
        interval = "500ms"
        timeout = "250ms"
        rise = 1
        fall = 5
        initial = "down"
        port = 8080
        source_address = "10.0.0.1"
        path = "/healthz?full=1"
        host = "api.example.com"
        expect_status = [200, 204]
        expect_body = "ok"
        "#,
    );
    assert_eq!(
        s,
        CheckSpec {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(250),
            rise: 1,
            fall: 5,
            initial: Initial::Down,
            port: Some(8080),
            source_address: Some("10.0.0.1".parse().unwrap()),
            probe: Probe::Http(HttpProbe {
                path: "/healthz?full=1".into(),
                host: Some("api.example.com".into()),
                expect_status: vec![200, 204],
                expect_body: Some("ok".into()),
                tls: None,
            }),
        }
    );
    let s = spec(
        r#"
        type = "udp"
        interval = "1m"
        timeout = "1s 500ms"
        send = [0x00, 0x01, 0xff]
        expect = "pong"
        "#,
    );
    assert_eq!(
        (s.interval, s.timeout),
        (Duration::from_secs(60), Duration::from_millis(1500))
    );
    assert_eq!(
        s.probe,
        Probe::Udp(UdpProbe {
            send: vec![0, 1, 255],
            expect: Some(b"pong".to_vec())
        })
    );
    assert_eq!(
        spec(
            r#"type = "exec"
                command = ["/usr/lib/check", "--quiet"]"#
        )
        .probe,
        Probe::Exec(ExecProbe {
            command: vec!["/usr/lib/check".into(), "--quiet".into()]
        })
    );
}

#[test]
fn https_verification_is_explicit() {
    let s = spec(
        r#"type = "https"
           server_name = "api.test"
           insecure_skip_verify = true"#,
    );
    let Probe::Http(HttpProbe { tls: Some(tls), .. }) = s.probe else {
        panic!()
    };
    assert_eq!(
        (
            tls.server_name.as_deref(),
            tls.ca_file,
            tls.insecure_skip_verify
        ),
        (Some("api.test"), None, true)
    );

    let ca = rcgen::generate_simple_self_signed(vec!["api.test".to_owned()]).unwrap();
    let path =
        std::env::temp_dir().join(format!("lbd-health-config-ca-{}.pem", std::process::id()));
    std::fs::write(&path, ca.cert.pem()).unwrap();
    let s = parse(&format!(
        "type = \"https\"\nca_file = {:?}",
        path.display().to_string()
    ))
    .to_spec();
    std::fs::remove_file(&path).unwrap();
    let Probe::Http(HttpProbe { tls: Some(tls), .. }) = s.unwrap().probe else {
        panic!()
    };
    assert_eq!((tls.ca_file, tls.insecure_skip_verify), (Some(path), false));

    assert_eq!(
        issues(
            r#"type = "https"
                  ca_file = "/nonexistent/ca.pem""#
        )[0]
        .0,
        "ca_file"
    );
    assert_eq!(
        issues(
            r#"type = "https"
                  ca_file = "/x.pem"
                  insecure_skip_verify = true"#
        ),
        [(
            "ca_file",
            "ca_file and insecure_skip_verify exclude each other".to_owned()
        )]
    );
    assert_eq!(
        issues(
            r#"type = "https"
                  server_name = "not a name"
                  insecure_skip_verify = true"#
        )[0]
        .0,
        "server_name"
    );
}

#[test]
fn durations_must_read_as_durations() {
    assert_eq!(
        issues(r#"type = "tcp"
                  interval = "2""#),
        [(
            "interval",
            "\"2\" is not a duration (time unit needed, for example 2sec or 2ms); write e.g. \"500ms\" or \"2s\"".to_owned()
        )]
    );
    assert_eq!(
        issues(
            r#"type = "tcp"
                  timeout = "5ms""#
        ),
        [("timeout", "must be at least 10ms".to_owned())]
    );
    assert_eq!(
        issues(
            r#"type = "tcp"
                  interval = "1s"
                  timeout = "3s""#
        ),
        [(
            "timeout",
            "timeout 3s is longer than interval 1s: a check would still run when the next is due"
                .to_owned()
        )]
    );
    // A short interval alone takes the default timeout down with it.
    let s = spec(
        r#"type = "tcp"
           interval = "500ms""#,
    );
    assert_eq!(s.timeout, Duration::from_millis(500));
}

#[test]
fn keys_of_other_check_types_are_rejected() {
    assert_eq!(
        issues(
            r#"type = "tcp"
                  path = "/health"
                  command = ["true"]"#
        ),
        [
            (
                "path",
                "`path` applies to http and https checks, not to a tcp check".to_owned()
            ),
            (
                "command",
                "`command` applies to exec checks, not to a tcp check".to_owned()
            ),
        ]
    );
    assert_eq!(
        issues(
            r#"type = "http"
                  insecure_skip_verify = true"#
        ),
        [(
            "insecure_skip_verify",
            "`insecure_skip_verify` applies to https checks, not to a http check".to_owned()
        )]
    );
    assert_eq!(
        issues(
            r#"type = "exec"
                  command = ["true"]
                  source_address = "10.0.0.1""#
        )[0]
        .0,
        "source_address"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let found = issues(
        r#"type = "http"
           rise = 0
           fall = 101
           port = 0
           path = "health"
           host = "a b"
           expect_status = [200, 700]"#,
    );
    let keys: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        ["rise", "fall", "port", "path", "host", "expect_status"],
        "{found:?}"
    );
    assert_eq!(found[0].1, "must be between 1 and 100");
    assert_eq!(found[5].1, "700 is not an HTTP status (100-599)");
}

#[test]
fn exec_needs_a_command() {
    assert_eq!(issues(r#"type = "exec""#)[0].0, "command");
    assert_eq!(
        issues(
            r#"type = "exec"
                  command = []"#
        ),
        [("command", "needs at least the program to run".to_owned())]
    );
}

#[test]
fn unknown_keys_and_types_are_syntax_errors() {
    let e = toml::from_str::<HealthCheckConfig>("type = \"tcp\"\nintervall = \"1s\"").unwrap_err();
    assert!(e.message().contains("unknown field `intervall`"), "{e}");
    let e = toml::from_str::<HealthCheckConfig>("type = \"icmp\"").unwrap_err();
    assert!(e.message().contains("unknown variant `icmp`"), "{e}");
    let e = toml::from_str::<HealthCheckConfig>("interval = \"1s\"").unwrap_err();
    assert!(e.message().contains("missing field `type`"), "{e}");
}

#[test]
fn embeds_as_a_vip_table() {
    #[derive(Deserialize)]
    struct File {
        vip: Vec<Vip>,
    }
    #[derive(Deserialize)]
    struct Vip {
        health_check: Option<HealthCheckConfig>,
    }
    let text = r#"
        [[vip]]
        [vip.health_check]
        type = "tcp"
        port = 8081

        [[vip]]
    "#;
    let file: File = toml::from_str(text).unwrap();
    let check = file.vip[0].health_check.as_ref().unwrap();
    assert_eq!(check.to_spec().unwrap().port, Some(8081));
    assert_eq!(&text[check.port.as_ref().unwrap().span()], "8081");
    assert!(file.vip[1].health_check.is_none());
}
