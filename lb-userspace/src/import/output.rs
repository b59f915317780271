//! The converted configuration before it is TOML: tables of keys in the order an operator
//! reads them, each remembering the source line it came from. [`finish`] renders it,
//! validates the text with [`config::parse`], and, for as long as the validation refuses
//! something, takes the refused part out (or back to its default) with a warning. So the
//! output is valid whatever the input was, and nothing is dropped without a word.

use std::{fmt::Write as _, sync::Arc};

use lb_common::{backend::MAX_BACKENDS, vip::MAX_VIPS};
use toml::Value;

use super::{ImportError, Imported, Remark, Severity};
use crate::config::{self, Diagnostic, DEFAULT_TABLE_SIZE};

/// Where something came from in the source configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

impl Origin {
    pub fn remark(&self, severity: Severity, message: impl Into<String>) -> Remark {
        Remark {
            file: self.file.clone(),
            line: self.line,
            severity,
            message: message.into(),
        }
    }
}

/// One TOML table: its keys in order, and a comment naming its source.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub origin: Option<Origin>,
    /// What it was in the source, e.g. `vrrp_instance VI_1`.
    pub source: String,
    pub entries: Vec<(String, Value)>,
}

impl Table {
    pub fn new(origin: Option<Origin>, source: impl Into<String>) -> Table {
        Table {
            origin,
            source: source.into(),
            entries: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key.to_owned(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    fn warn(&self, remarks: &mut Vec<Remark>, message: String) {
        let origin = self.origin.clone().unwrap_or(Origin {
            file: Arc::from("(input)"),
            line: 0,
        });
        remarks.push(origin.remark(Severity::Warning, message));
    }
}

/// A `[[vip]]` with its health check and backends.
#[derive(Clone, Debug, PartialEq)]
pub struct Vip {
    pub table: Table,
    pub check: Option<Table>,
    pub backends: Vec<Table>,
}

/// The whole converted configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    /// The input as the user named it, for the header.
    pub source: String,
    pub agent: Table,
    pub vrrp: Vec<Table>,
    pub vips: Vec<Vip>,
}

/// What a line of the rendered text belongs to, so a validation error can be traced back.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    Nothing,
    Agent(Option<String>),
    Vrrp(usize, Option<String>),
    Vip(usize, Option<String>),
    Check(usize, Option<String>),
    Backend(usize, usize, Option<String>),
}

/// VRRP keys without which an instance means nothing: an error there drops the instance,
/// an error anywhere else drops only the key.
const VRRP_ESSENTIAL: &[&str] = &["name", "interface", "vrid", "addresses"];

/// Renders, validates and repairs `draft`; `remarks` are the converter's.
pub fn finish(mut draft: Draft, mut remarks: Vec<Remark>) -> Result<Imported, ImportError> {
    limit_counts(&mut draft, &mut remarks);
    // Each round removes or resets at least one key or table, so this bound is never
    // reached by a working repair; it only stops a repair that stopped making progress.
    let budget = 16
        + draft
            .vrrp
            .iter()
            .map(|t| t.entries.len() + 1)
            .sum::<usize>()
        + draft
            .vips
            .iter()
            .map(|v| v.table.entries.len() + v.backends.len() + 2)
            .sum::<usize>();
    for _ in 0..budget {
        size_tables(&mut draft);
        sort_remarks(&mut remarks);
        let (text, owners) = render(&draft, &remarks);
        let diagnostics = match config::parse(&text) {
            Ok(config) => {
                return Ok(Imported {
                    toml: text,
                    config,
                    remarks,
                })
            }
            Err(d) => d,
        };
        let Some(d) = diagnostics.first() else {
            return Err(ImportError::Unconvertible(
                "the converted configuration is invalid, with no reason given".into(),
            ));
        };
        let owner = d
            .line
            .checked_sub(1)
            .and_then(|i| owners.get(i))
            .cloned()
            .unwrap_or(Owner::Nothing);
        repair(&mut draft, &mut remarks, owner, d)?;
    }
    Err(ImportError::Unconvertible(
        "the converted configuration could not be made valid (a bug: please report it with the input)".into(),
    ))
}

fn describe(d: &Diagnostic) -> String {
    if d.key.is_empty() {
        d.message.clone()
    } else {
        format!("{}: {}", d.key, d.message)
    }
}

/// Takes out (or resets) what `d` complains about.
fn repair(
    draft: &mut Draft,
    remarks: &mut Vec<Remark>,
    owner: Owner,
    d: &Diagnostic,
) -> Result<(), ImportError> {
    let why = describe(d);
    match owner {
        Owner::Agent(Some(key)) if key == "interface" => {
            let bad = draft
                .agent
                .get("interface")
                .map(|v| v.to_string())
                .unwrap_or_default();
            draft.agent.set("interface", "eth0");
            remarks.push(Origin { file: Arc::from(draft.source.as_str()), line: 1 }.remark(
                Severity::Warning,
                format!("agent.interface {bad} is refused by lbd ({why}); set to \"eth0\": give the real one with --interface"),
            ));
        }
        Owner::Agent(Some(key)) if draft.agent.remove(&key).is_some() => {
            remarks.push(
                Origin {
                    file: Arc::from(draft.source.as_str()),
                    line: 1,
                }
                .remark(
                    Severity::Warning,
                    format!("agent.{key} is refused by lbd ({why}); left at lbd's default"),
                ),
            );
        }
        Owner::Nothing | Owner::Agent(_) => {
            return Err(ImportError::Unconvertible(format!(
                "the converted configuration is invalid at [agent] (line {}): {why}",
                d.line
            )))
        }
        Owner::Vrrp(i, Some(key)) if !VRRP_ESSENTIAL.contains(&key.as_str()) => {
            let t = &mut draft.vrrp[i];
            let value = t.remove(&key).map(|v| v.to_string()).unwrap_or_default();
            let msg = format!(
                "{}: {key} = {value} is refused by lbd ({why}); left at lbd's default",
                t.source
            );
            t.warn(remarks, msg);
        }
        Owner::Vrrp(i, _) => {
            let t = draft.vrrp.remove(i);
            t.warn(
                remarks,
                format!("{} not converted: lbd refuses it ({why})", t.source),
            );
        }
        Owner::Vip(i, Some(key))
            if key == "mode" && draft.vips[i].table.get("mode") != Some(&"dr".into()) =>
        {
            let v = &mut draft.vips[i];
            let mode = v
                .table
                .get("mode")
                .map(|m| m.to_string())
                .unwrap_or_default();
            v.table.set("mode", "dr");
            for b in &mut v.backends {
                b.remove("port");
            }
            let msg = format!(
                "{}: mode {mode} is not supported by this lbd ({why}); converted as direct return (\"dr\"): every backend must hold the VIP on its loopback and answer clients directly",
                v.table.source
            );
            v.table.warn(remarks, msg);
        }
        Owner::Vip(i, _) => {
            let v = draft.vips.remove(i);
            let msg = format!("{} not converted: lbd refuses it ({why})", v.table.source);
            v.table.warn(remarks, msg);
        }
        Owner::Check(i, _) => {
            let v = &mut draft.vips[i];
            if let Some(c) = v.check.take() {
                let msg = format!(
                    "{}: health check not converted: lbd refuses it ({why}); the backends are not checked",
                    c.source
                );
                c.warn(remarks, msg);
            }
        }
        Owner::Backend(i, _, Some(key)) if key == "port" => {
            let v = &mut draft.vips[i];
            for b in &mut v.backends {
                b.remove("port");
            }
            let msg = format!(
                "{}: backend ports are not supported by this lbd ({why}); every backend gets the VIP's port",
                v.table.source
            );
            v.table.warn(remarks, msg);
        }
        Owner::Backend(i, j, _) => {
            let b = draft.vips[i].backends.remove(j);
            b.warn(
                remarks,
                format!("{} not converted: lbd refuses it ({why})", b.source),
            );
        }
    }
    Ok(())
}

/// The VIP and backend counts lbd can hold; beyond them the last ones are left out.
fn limit_counts(draft: &mut Draft, remarks: &mut Vec<Remark>) {
    let max_vips = MAX_VIPS as usize;
    if draft.vips.len() > max_vips {
        for v in draft.vips.drain(max_vips..) {
            let msg = format!(
                "{} not converted: lbd holds at most {max_vips} VIPs",
                v.table.source
            );
            v.table.warn(remarks, msg);
        }
    }
    let mut total = 0usize;
    for v in &mut draft.vips {
        let room = (MAX_BACKENDS as usize).saturating_sub(total);
        if v.backends.len() > room {
            for b in v.backends.drain(room..) {
                let msg = format!(
                    "{} not converted: lbd holds at most {MAX_BACKENDS} backends in all",
                    b.source
                );
                b.warn(remarks, msg);
            }
        }
        total += v.backends.len();
    }
}

/// Raises `table_capacity` when the VIPs' default tables would not fit the default.
fn size_tables(draft: &mut Draft) {
    let need: u64 = draft
        .vips
        .iter()
        .map(|v| {
            v.table
                .get("table_size")
                .and_then(Value::as_integer)
                .unwrap_or(i64::from(DEFAULT_TABLE_SIZE))
                .max(0) as u64
        })
        .sum();
    if need > u64::from(lb_common::backend::DEFAULT_TABLE_CAPACITY) {
        draft
            .agent
            .set("table_capacity", i64::try_from(need).unwrap_or(i64::MAX));
    } else {
        draft.agent.remove("table_capacity");
    }
}

/// Warnings first, then notes; each group in source order (files in order of appearance).
pub fn sort_remarks(remarks: &mut [Remark]) {
    let mut files: Vec<Arc<str>> = Vec::new();
    for r in remarks.iter() {
        if !files.contains(&r.file) {
            files.push(r.file.clone());
        }
    }
    remarks.sort_by_key(|r| (r.severity, files.iter().position(|f| *f == r.file), r.line));
}

fn render(draft: &Draft, remarks: &[Remark]) -> (String, Vec<Owner>) {
    let mut out = Renderer::default();
    out.comment(&format!(
        "Converted from {} by `lbctl config import` (see docs/import.md).",
        draft.source
    ));
    out.comment("Review it, then check it with `lbd --config FILE --check`.");
    out.comment("");
    let warnings: Vec<_> = remarks
        .iter()
        .filter(|r| r.severity == Severity::Warning)
        .collect();
    let notes: Vec<_> = remarks
        .iter()
        .filter(|r| r.severity == Severity::Note)
        .collect();
    if warnings.is_empty() {
        out.comment("Warnings: none; everything was converted to what it meant.");
    } else {
        out.comment(&format!(
            "{} warning{} (not converted, or converted to something that behaves differently):",
            warnings.len(),
            if warnings.len() == 1 { "" } else { "s" }
        ));
        for r in &warnings {
            out.comment(&format!("  {}:{}: {}", r.file, r.line, r.message));
        }
    }
    if !notes.is_empty() {
        out.comment("");
        out.comment(&format!(
            "{} note{}:",
            notes.len(),
            if notes.len() == 1 { "" } else { "s" }
        ));
        for r in &notes {
            out.comment(&format!("  {}:{}: {}", r.file, r.line, r.message));
        }
    }

    out.table("[agent]", &draft.agent, &Owner::Agent);
    for (i, t) in draft.vrrp.iter().enumerate() {
        out.table("[[vrrp]]", t, &|k| Owner::Vrrp(i, k));
    }
    for (i, v) in draft.vips.iter().enumerate() {
        out.table("[[vip]]", &v.table, &|k| Owner::Vip(i, k));
        if let Some(c) = &v.check {
            out.table("[vip.health_check]", c, &|k| Owner::Check(i, k));
        }
        for (j, b) in v.backends.iter().enumerate() {
            out.table("[[vip.backend]]", b, &|k| Owner::Backend(i, j, k));
        }
    }
    (out.text, out.owners)
}

#[derive(Default)]
struct Renderer {
    text: String,
    owners: Vec<Owner>,
}

impl Renderer {
    fn line(&mut self, line: &str, owner: Owner) {
        self.text.push_str(line);
        self.text.push('\n');
        self.owners.push(owner);
    }

    fn comment(&mut self, text: &str) {
        let line = if text.is_empty() {
            "#".to_owned()
        } else {
            format!("# {}", comment_text(text))
        };
        self.line(&line, Owner::Nothing);
    }

    fn table(&mut self, header: &str, t: &Table, owner: &dyn Fn(Option<String>) -> Owner) {
        self.line("", Owner::Nothing);
        if let Some(o) = &t.origin {
            let text = comment_text(&format!("{}:{}: {}", o.file, o.line, t.source));
            self.line(&format!("# {text}"), owner(None));
        }
        self.line(header, owner(None));
        for (k, v) in &t.entries {
            let mut line = String::new();
            let _ = write!(line, "{k} = {}", inline(v));
            self.line(&line, owner(Some(k.clone())));
        }
    }
}

/// Text that TOML accepts in a comment, on one line: control characters (which the input
/// may hold) are shown escaped.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A value on one line, as TOML writes it.
fn inline(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}
