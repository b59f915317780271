use std::path::PathBuf;

use super::*;

fn parse(text: &str) -> Document {
    parse_str(text, "k.conf", Path::new("/nonexistent")).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> (usize, usize, String) {
    match parse_str(text, "k.conf", Path::new("/nonexistent")) {
        Err(ImportError::Syntax {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, "k.conf");
            (line, column, message)
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

/// `keyword arg arg` per statement, children indented, for compact comparisons.
fn outline(stmts: &[Stmt], depth: usize, out: &mut String) {
    for s in stmts {
        let words: Vec<&str> = s.words.iter().map(|w| w.text.as_str()).collect();
        out.push_str(&"  ".repeat(depth));
        if let Some(c) = &s.condition {
            out.push_str(&format!("@{c} "));
        }
        out.push_str(&words.join("|"));
        out.push_str(&format!(" @{}:{}", s.loc().line, s.loc().column));
        out.push('\n');
        if let Some(b) = &s.block {
            outline(b, depth + 1, out);
        }
    }
}

fn tree(text: &str) -> String {
    let mut out = String::new();
    outline(&parse(text).stmts, 0, &mut out);
    out
}

#[test]
fn blocks_nest_and_keep_their_locations() {
    let text = "\
! Configuration File for keepalived
global_defs {
   router_id LVS_DEVEL   # the node
}

vrrp_instance VI_1
{
    state MASTER
    authentication {
        auth_type PASS
    }
    unicast_peer { 10.0.0.2
      10.0.0.3 }
    virtual_ipaddress { 192.168.200.16/24 dev eth0 } track_interface { eth1 }
}
";
    assert_eq!(
        tree(text),
        "\
global_defs @2:1
  router_id|LVS_DEVEL @3:4
vrrp_instance|VI_1 @6:1
  state|MASTER @8:5
  authentication @9:5
    auth_type|PASS @10:9
  unicast_peer @12:5
    10.0.0.2 @12:20
    10.0.0.3 @13:7
  virtual_ipaddress @14:5
    192.168.200.16/24|dev|eth0 @14:25
  track_interface @14:54
    eth1 @14:72
"
    );
}

#[test]
fn comments_and_quotes() {
    let text = r##"a "b c"d 'e f' # comment
b "#not" 'a!b' x!y z
c "tab\there" "q\"uote" "\x41\101\cA" 'it''s'
d ""
"##;
    let doc = parse(text);
    let words =
        |i: usize| -> Vec<String> { doc.stmts[i].words.iter().map(|w| w.text.clone()).collect() };
    assert_eq!(words(0), ["a", "b cd", "e f"]);
    assert_eq!(words(1), ["b", "#not", "a!b", "x"]);
    assert_eq!(words(2), ["c", "tab\there", "q\"uote", "AA\u{1}", "its"]);
    assert_eq!(words(3), ["d", ""]);
}

#[test]
fn syntax_errors_point_at_the_cause() {
    let (line, column, message) = error("global_defs {\n  router_id x\n\nvrrp_instance V {\n}\n");
    assert_eq!((line, column), (1, 13), "{message}");
    assert!(
        message.contains("`global_defs` block is never closed"),
        "{message}"
    );

    let (line, column, message) = error("a {\n}\n}\n");
    assert_eq!((line, column), (3, 1));
    assert!(message.contains("closes no block"), "{message}");

    let (line, column, message) = error("x {\n  auth_pass \"abc\n}\n");
    assert_eq!((line, column), (2, 13));
    assert!(message.contains("unterminated"), "{message}");

    let (line, column, message) = error("{\n}\n");
    assert_eq!((line, column), (1, 1));
    assert!(message.contains("no keyword"), "{message}");

    // A `{` on its own line after a block cannot belong to that block's owner again.
    let (line, _, _) = error("a {\n}\n{\n}\n");
    assert_eq!(line, 3);
}

#[test]
fn definitions_and_conditions() {
    let text = "\
$IF=eth1
$PRIO=150
vrrp_instance X {
  interface $IF
  priority ${PRIO}
  unicast_src_ip $UNDEFINED
  @node1 priority 200
  @^node1 priority 100
}
";
    assert_eq!(
        tree(text),
        "\
vrrp_instance|X @3:1
  interface|eth1 @4:3
  priority|150 @5:3
  unicast_src_ip|$UNDEFINED @6:3
  @node1 priority|200 @7:10
  @^node1 priority|100 @8:11
"
    );
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "lb-import-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("conf.d")).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn includes_are_spliced_in_order_relative_to_their_file() {
    let d = TempDir::new("inc");
    let main = d.write(
        "keepalived.conf",
        "global_defs {\n}\ninclude conf.d/*.conf\nvirtual_server 10.0.0.1 80 {\n  include rs/{a,b}.inc\n}\ninclude missing/*.conf\n",
    );
    d.write("conf.d/20-b.conf", "b_block {\n  include ../self.inc\n}\n");
    d.write("conf.d/10-a.conf", "a_block {\n}\n");
    d.write("conf.d/ignored.txt", "nope {\n}\n");
    d.write("self.inc", "include self.inc\nfrom_self 1\n");
    fs::create_dir_all(d.0.join("rs")).unwrap();
    d.write("rs/a.inc", "real_server 10.0.0.2 80 {\n}\n");
    d.write("rs/b.inc", "real_server 10.0.0.3 80 {\n}\n");

    let doc = parse_file(&main).unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    outline(&doc.stmts, 0, &mut out);
    assert_eq!(
        out,
        "\
global_defs @1:1
a_block @1:1
b_block @1:1
  from_self|1 @2:1
virtual_server|10.0.0.1|80 @4:1
  real_server|10.0.0.2|80 @1:1
  real_server|10.0.0.3|80 @1:1
"
    );
    let dir = d.0.display().to_string();
    let files: Vec<String> = doc.stmts.iter().map(|s| s.loc().file.to_string()).collect();
    assert_eq!(
        files,
        [
            format!("{dir}/keepalived.conf"),
            format!("{dir}/conf.d/10-a.conf"),
            format!("{dir}/conf.d/20-b.conf"),
            format!("{dir}/keepalived.conf"),
        ]
    );
    assert_eq!(
        &*doc.stmts[2].children()[0].loc().file,
        format!("{dir}/conf.d/../self.inc")
    );
    let remarks: Vec<String> = doc.remarks.iter().map(|r| r.to_string()).collect();
    assert_eq!(remarks.len(), 2, "{remarks:#?}");
    assert!(
        remarks[0].contains("self.inc:1: warning: include self.inc not followed: "),
        "{remarks:#?}"
    );
    assert!(
        remarks[1].contains("keepalived.conf:7: note: include missing/*.conf: no file matches"),
        "{remarks:#?}"
    );
}

#[test]
fn errors_in_included_files_name_them() {
    let d = TempDir::new("incerr");
    let main = d.write("main.conf", "include conf.d/bad.conf\n");
    d.write("conf.d/bad.conf", "x {\n  y {\n}\n");
    match parse_file(&main) {
        Err(ImportError::Syntax {
            file, line, column, ..
        }) => {
            assert_eq!(file, format!("{}/conf.d/bad.conf", d.0.display()));
            // The inner block is closed by the last line; the outer one is not.
            assert_eq!((line, column), (1, 3));
        }
        other => panic!("{other:?}"),
    }
    match parse_file(&d.0.join("absent.conf")) {
        Err(ImportError::Read { path, .. }) => assert!(path.ends_with("absent.conf")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wildcards() {
    for (p, n, m) in [
        ("*.conf", "a.conf", true),
        ("*.conf", "a.conf.bak", false),
        ("?-*", "1-x", true),
        ("[0-9]*", "10-a", true),
        ("[!0-9]*", "10-a", false),
        ("[^a]b", "cb", true),
        ("a*b*c", "aXbYbZc", true),
        ("a*b*c", "aXbYbZ", false),
        ("[", "[", true),
        ("", "", true),
        ("*", "", true),
    ] {
        assert_eq!(wildcard_match(p, n), m, "{p} vs {n}");
    }
    assert_eq!(expand_braces("a{b,c{d,e}}f", 0), ["abf", "acdf", "acef"]);
    assert_eq!(expand_braces("a{b", 0), ["a{b"]);
}
