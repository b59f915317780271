//! keepalived.conf syntax into a tree of statements with their locations.
//!
//! keepalived's grammar is line based: a line is a keyword and its arguments, `{` opens a
//! block owned by the statement before it (on the same line or the line above), `}` closes
//! it, and several statements may share a line around braces (`unicast_peer { 10.0.0.2 }`).
//! `#` and `!` start a comment anywhere outside quotes. Quotes (`"` or `'`) may start or end
//! in the middle of a word and keep the whitespace between them, as in a shell; inside
//! them the backslash escapes of keepalived.conf(5) apply.
//!
//! Also handled, because real deployments rely on them: `include` (and its `includer`,
//! `includem`, ... variants) with glob patterns, resolved relative to the including file
//! and spliced in where they stand; `$NAME=value` definitions expanded as `$NAME` and
//! `${NAME}`; `@id` / `@^id` conditional lines, kept with their condition so the
//! converter can say it could not decide them.
//!
//! Syntax errors (unbalanced braces, an unterminated quote, an unreadable main file) stop
//! the import; everything else that is odd becomes a [`Remark`].

use std::{
    collections::HashMap,
    fs,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use crate::import::{ImportError, Remark, Severity};

/// Nested includes deeper than this are a loop keepalived would also refuse.
const MAX_INCLUDE_DEPTH: usize = 16;
/// A keepalived.conf is a few kilobytes; anything this large is not one.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Files matched by one `include` pattern.
const MAX_INCLUDE_MATCHES: usize = 1024;

/// Where a word or statement is: file (as the user named it), 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl Loc {
    pub fn remark(&self, severity: Severity, message: impl Into<String>) -> Remark {
        Remark {
            file: self.file.clone(),
            line: self.line,
            severity,
            message: message.into(),
        }
    }
}

/// One word, quotes removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub loc: Loc,
}

/// A keyword line with its arguments and, if it opens one, its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    /// Never empty: `words[0]` is the keyword.
    pub words: Vec<Word>,
    pub block: Option<Vec<Stmt>>,
    /// `Some("main")` for a line written `@main keyword ...`, `Some("^main")` for `@^main`.
    pub condition: Option<String>,
}

impl Stmt {
    pub fn keyword(&self) -> &str {
        &self.words[0].text
    }

    pub fn loc(&self) -> &Loc {
        &self.words[0].loc
    }

    /// The arguments after the keyword.
    pub fn args(&self) -> &[Word] {
        &self.words[1..]
    }

    pub fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(|w| w.text.as_str())
    }

    /// The block's statements (empty without a block).
    pub fn children(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// A parsed configuration: its top-level statements (includes spliced in) and what the
/// parser noticed without failing.
#[derive(Debug)]
pub struct Document {
    pub stmts: Vec<Stmt>,
    pub remarks: Vec<Remark>,
}

/// Parses the file at `path`; `path` as given is the name used in locations.
pub fn parse_file(path: &Path) -> Result<Document, ImportError> {
    let text = read(path).map_err(|error| ImportError::Read {
        path: path.to_owned(),
        error,
    })?;
    let real_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_str(&text, &path.to_string_lossy(), &real_dir)
}

/// Parses `text`, named `name` in locations; includes are resolved against `dir`.
pub fn parse_str(text: &str, name: &str, dir: &Path) -> Result<Document, ImportError> {
    let mut p = Parser {
        remarks: Vec::new(),
        vars: HashMap::new(),
        stack: Vec::new(),
    };
    let real = dir.join(Path::new(name).file_name().unwrap_or_default());
    p.stack.push(real.canonicalize().unwrap_or(real));
    let display_dir = Path::new(name)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let stmts = p.parse_text(
        text,
        Arc::from(name),
        &FileDirs {
            real: dir.to_path_buf(),
            display: display_dir,
        },
    )?;
    Ok(Document {
        stmts,
        remarks: p.remarks,
    })
}

fn read(path: &Path) -> Result<String, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes is too large for a keepalived configuration",
            meta.len()
        ));
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    // keepalived reads bytes; a stray Latin-1 comment must not stop the import.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The directory a file's relative includes resolve against, and the same directory as
/// the user would name it (for locations).
struct FileDirs {
    real: PathBuf,
    display: PathBuf,
}

struct Parser {
    remarks: Vec<Remark>,
    /// `$NAME=value` definitions seen so far (they apply to the lines after them, across
    /// included files, as in keepalived).
    vars: HashMap<String, String>,
    /// Canonical paths of the files being parsed, outermost first: include loops.
    stack: Vec<PathBuf>,
}

/// A block being filled: the statements so far, and where it was opened.
struct Open {
    stmts: Vec<Stmt>,
    owner: Option<Stmt>,
    at: Loc,
}

enum Token {
    Word(Word),
    Open(Loc),
    Close(Loc),
}

impl Parser {
    fn parse_text(
        &mut self,
        text: &str,
        file: Arc<str>,
        dirs: &FileDirs,
    ) -> Result<Vec<Stmt>, ImportError> {
        let mut blocks: Vec<Open> = vec![Open {
            stmts: Vec::new(),
            owner: None,
            at: Loc {
                file: file.clone(),
                line: 1,
                column: 1,
            },
        }];
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let expanded = self.expand(raw, &file, line);
            let Some(expanded) = expanded else { continue };
            // As in keepalived, an include is recognised on the raw line, so its pattern
            // may hold braces and quotes.
            if let Some((column, pattern)) = include_line(&expanded) {
                let at = Loc {
                    file: file.clone(),
                    line,
                    column,
                };
                let stmts = self.include(&pattern, &at, dirs)?;
                if let Some(top) = blocks.last_mut() {
                    top.stmts.extend(stmts);
                }
                continue;
            }
            let tokens = lex(&expanded, &file, line)?;
            let mut current: Vec<Word> = Vec::new();
            for token in tokens {
                match token {
                    Token::Word(w) => current.push(w),
                    Token::Open(at) => {
                        let owner = if current.is_empty() {
                            // `{` alone on a line belongs to the statement above it.
                            let top = blocks.last_mut().map(|b| &mut b.stmts);
                            match top {
                                Some(s) if s.last().is_some_and(|p| p.block.is_none()) => s.pop(),
                                _ => None,
                            }
                            .ok_or_else(|| syntax(&at, "`{` with no keyword before it"))?
                        } else {
                            self.statement(std::mem::take(&mut current))
                        };
                        blocks.push(Open {
                            stmts: Vec::new(),
                            owner: Some(owner),
                            at,
                        });
                    }
                    Token::Close(at) => {
                        self.finish(&mut blocks, std::mem::take(&mut current));
                        if blocks.len() < 2 {
                            return Err(syntax(&at, "`}` closes no block"));
                        }
                        let Some(Open {
                            stmts,
                            owner: Some(mut owner),
                            ..
                        }) = blocks.pop()
                        else {
                            return Err(syntax(&at, "`}` closes no block"));
                        };
                        owner.block = Some(stmts);
                        if let Some(b) = blocks.last_mut() {
                            b.stmts.push(owner);
                        }
                    }
                }
            }
            self.finish(&mut blocks, current);
        }
        if blocks.len() > 1 {
            let open = &blocks[blocks.len() - 1];
            let what = open
                .owner
                .as_ref()
                .map(|o| format!("`{}` block", o.keyword()))
                .unwrap_or_else(|| "block".into());
            return Err(syntax(
                &open.at,
                format!("this {what} is never closed (missing `}}`)"),
            ));
        }
        Ok(blocks.pop().map(|b| b.stmts).unwrap_or_default())
    }

    /// Ends the statement being read on the current line: it joins the innermost open
    /// block.
    fn finish(&mut self, blocks: &mut [Open], words: Vec<Word>) {
        if words.is_empty() {
            return;
        }
        let stmt = self.statement(words);
        if let Some(top) = blocks.last_mut() {
            top.stmts.push(stmt);
        }
    }

    /// Takes a leading `@condition` word off.
    fn statement(&mut self, mut words: Vec<Word>) -> Stmt {
        let condition = match words.first() {
            Some(w) if w.text.starts_with('@') && w.text.len() > 1 && words.len() > 1 => {
                Some(words.remove(0).text[1..].to_owned())
            }
            _ => None,
        };
        Stmt {
            words,
            block: None,
            condition,
        }
    }

    /// Applies `$NAME=value` definitions; returns `None` for a definition line itself.
    fn expand(&mut self, raw: &str, file: &Arc<str>, line: usize) -> Option<String> {
        let trimmed = raw.trim_start();
        if let Some(def) = trimmed.strip_prefix('$') {
            if let Some((name, value)) = def.split_once('=') {
                let name = name.trim();
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    let value = value.trim();
                    if value.ends_with('\\') || value.starts_with('{') {
                        self.remarks.push(Loc { file: file.clone(), line, column: 1 }.remark(
                            Severity::Warning,
                            format!("multi-line definition of ${name} is not expanded; the lines after it are read as they stand"),
                        ));
                    }
                    let value = self.substitute(value);
                    self.vars.insert(name.to_owned(), value);
                    return None;
                }
            }
        }
        if self.vars.is_empty() || !raw.contains('$') {
            return Some(raw.to_owned());
        }
        Some(self.substitute(raw))
    }

    fn substitute(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, len) = if let Some(braced) = after.strip_prefix('{') {
                match braced.find('}') {
                    Some(end) => (&braced[..end], end + 2),
                    None => ("", 0),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            match self.vars.get(name).filter(|_| !name.is_empty()) {
                Some(value) => {
                    out.push_str(value);
                    rest = &after[len..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn include(
        &mut self,
        pattern: &str,
        loc: &Loc,
        dirs: &FileDirs,
    ) -> Result<Vec<Stmt>, ImportError> {
        if pattern.is_empty() {
            self.remarks
                .push(loc.remark(Severity::Warning, "`include` without a file name"));
            return Ok(Vec::new());
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            self.remarks.push(loc.remark(
                Severity::Warning,
                format!("include {pattern} not followed: includes nested more than {MAX_INCLUDE_DEPTH} deep"),
            ));
            return Ok(Vec::new());
        }
        let relative = Path::new(pattern).is_relative();
        let real_pattern = dirs.real.join(pattern);
        let mut matches = glob(&real_pattern);
        if matches.is_empty() {
            // keepalived's plain `include` accepts this silently too.
            self.remarks.push(loc.remark(
                Severity::Note,
                format!("include {pattern}: no file matches; nothing included"),
            ));
            return Ok(Vec::new());
        }
        if matches.len() > MAX_INCLUDE_MATCHES {
            self.remarks.push(loc.remark(
                Severity::Warning,
                format!(
                    "include {pattern} matches {} files; only the first {MAX_INCLUDE_MATCHES} are read",
                    matches.len()
                ),
            ));
            matches.truncate(MAX_INCLUDE_MATCHES);
        }
        let mut out = Vec::new();
        for real in matches {
            let display = match (relative, real.strip_prefix(&dirs.real)) {
                (true, Ok(rel)) => dirs.display.join(rel),
                _ => real.clone(),
            };
            let canonical = real.canonicalize().unwrap_or_else(|_| real.clone());
            if self.stack.contains(&canonical) {
                self.remarks.push(loc.remark(
                    Severity::Warning,
                    format!(
                        "include {pattern} not followed: {} is already being read (an include loop)",
                        display.display()
                    ),
                ));
                continue;
            }
            let text = match read(&real) {
                Ok(t) => t,
                Err(e) => {
                    self.remarks.push(loc.remark(
                        Severity::Warning,
                        format!("include {}: cannot read it ({e})", display.display()),
                    ));
                    continue;
                }
            };
            let child_dirs = FileDirs {
                real: real.parent().map(Path::to_path_buf).unwrap_or_default(),
                display: display.parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            self.stack.push(canonical);
            let parsed = self.parse_text(
                &text,
                Arc::from(display.to_string_lossy().as_ref()),
                &child_dirs,
            );
            self.stack.pop();
            out.extend(parsed?);
        }
        Ok(out)
    }
}

/// `include PATTERN` (or a variant): the keyword's column and the pattern, its comment
/// and outer quotes removed.
fn include_line(line: &str) -> Option<(usize, String)> {
    let start = line.len() - line.trim_start().len();
    let rest = &line[start..];
    let keyword_len = rest.find(char::is_whitespace)?;
    if !matches!(
        &rest[..keyword_len],
        "include" | "includer" | "includem" | "includew" | "includeb" | "includea"
    ) {
        return None;
    }
    let mut pattern = rest[keyword_len..].trim();
    if let Some(i) = pattern
        .find(['#', '!'])
        .filter(|_| !pattern.starts_with(['"', '\'']))
    {
        pattern = pattern[..i].trim_end();
    }
    for q in ['"', '\''] {
        if let Some(inner) = pattern.strip_prefix(q).and_then(|p| p.split(q).next()) {
            pattern = inner;
        }
    }
    let column = line[..start].chars().count() + 1;
    Some((column, pattern.to_owned()))
}

fn syntax(at: &Loc, message: impl Into<String>) -> ImportError {
    ImportError::Syntax {
        file: at.file.to_string(),
        line: at.line,
        column: at.column,
        message: message.into(),
    }
}

/// Splits one line into words and braces.
fn lex(line: &str, file: &Arc<str>, line_no: usize) -> Result<Vec<Token>, ImportError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let loc = |i: usize| Loc {
        file: file.clone(),
        line: line_no,
        column: i + 1,
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '#' | '!' => break,
            '{' => {
                tokens.push(Token::Open(loc(i)));
                i += 1;
            }
            '}' => {
                tokens.push(Token::Close(loc(i)));
                i += 1;
            }
            _ => {
                let start = i;
                let mut text = String::new();
                let mut quote: Option<(char, usize)> = None;
                while i < chars.len() {
                    let c = chars[i];
                    match quote {
                        Some((q, _)) if c == q => {
                            quote = None;
                            i += 1;
                        }
                        Some(_) if c == '\\' => {
                            i += 1;
                            i += unescape(&chars[i.min(chars.len())..], &mut text);
                        }
                        Some(_) => {
                            text.push(c);
                            i += 1;
                        }
                        None if c.is_whitespace() || matches!(c, '{' | '}' | '#' | '!') => break,
                        None if c == '"' || c == '\'' => {
                            quote = Some((c, i));
                            i += 1;
                        }
                        None => {
                            text.push(c);
                            i += 1;
                        }
                    }
                }
                if let Some((q, at)) = quote {
                    return Err(syntax(
                        &loc(at),
                        format!("unterminated quoted string (no closing {q} on this line)"),
                    ));
                }
                tokens.push(Token::Word(Word {
                    text,
                    loc: loc(start),
                }));
            }
        }
    }
    Ok(tokens)
}

/// One escape sequence after a backslash (keepalived.conf(5), "Quoted strings"); returns
/// how many characters it used.
fn unescape(rest: &[char], out: &mut String) -> usize {
    let Some(&c) = rest.first() else {
        out.push('\\');
        return 0;
    };
    let simple = match c {
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'E' => Some('\x1b'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        _ => None,
    };
    if let Some(s) = simple {
        out.push(s);
        return 1;
    }
    let radix_digits = |radix: u32, max: usize, skip: usize| {
        let digits: String = rest
            .iter()
            .skip(skip)
            .take(max)
            .take_while(|d| d.is_digit(radix))
            .collect();
        let value = u32::from_str_radix(&digits, radix).ok();
        (value, digits.len())
    };
    match c {
        'x' => match radix_digits(16, 2, 1) {
            (Some(v), n) => {
                out.push(char::from_u32(v).unwrap_or('?'));
                1 + n
            }
            _ => {
                out.push('x');
                1
            }
        },
        '0'..='7' => match radix_digits(8, 3, 0) {
            (Some(v), n) => {
                out.push(char::from_u32(v).unwrap_or('?'));
                n
            }
            _ => 1,
        },
        'c' => match rest.get(1) {
            Some(&ctl) => {
                out.push(char::from_u32(ctl.to_ascii_uppercase() as u32 ^ 0x40).unwrap_or('?'));
                2
            }
            None => {
                out.push('c');
                1
            }
        },
        other => {
            out.push(other);
            1
        }
    }
}

/// Paths matching a glob(3)-style pattern (`*`, `?`, `[...]` within a path component,
/// `{a,b}` alternatives), sorted as glob(3) sorts them. A pattern without wildcards
/// matches the file if it exists.
pub fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for alternative in expand_braces(&pattern.to_string_lossy(), 0) {
        let path = PathBuf::from(alternative);
        let mut found = vec![PathBuf::new()];
        for component in path.components() {
            let part = component.as_os_str().to_string_lossy();
            let wild = matches!(component, Component::Normal(_)) && part.contains(['*', '?', '[']);
            let mut next = Vec::new();
            for base in &found {
                if !wild {
                    next.push(base.join(component.as_os_str()));
                    continue;
                }
                let dir = if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base.as_path()
                };
                let Ok(entries) = fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // As in a shell, `*` does not match a leading dot.
                    .filter(|n| !n.starts_with('.') || part.starts_with('.'))
                    .filter(|n| wildcard_match(&part, n))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
                if next.len() > MAX_INCLUDE_MATCHES * 4 {
                    break;
                }
            }
            found = next;
        }
        out.extend(found.into_iter().filter(|p| p.exists()));
    }
    out.dedup();
    out
}

/// `a{b,c}d` → `abd`, `acd` (nested braces too). Unbalanced braces stay literal.
fn expand_braces(s: &str, depth: usize) -> Vec<String> {
    let Some(open) = s.find('{') else {
        return vec![s.to_owned()];
    };
    if depth > 8 {
        return vec![s.to_owned()];
    }
    let bytes = s.as_bytes();
    let mut level = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => level += 1,
            b'}' => {
                level -= 1;
                if level == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if level == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![s.to_owned()];
    };
    let (head, tail) = (&s[..open], &s[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(&commas);
    bounds.push(close);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let alt = &s[w[0] + 1..w[1]];
        for expanded in expand_braces(&format!("{head}{alt}{tail}"), depth + 1) {
            if out.len() < MAX_INCLUDE_MATCHES {
                out.push(expanded);
            }
        }
    }
    out
}

/// Shell wildcard match of one path component.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative with one backtrack point for the last `*`: linear enough for file names.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, len)) = class_match(&p[pi..], n[ni]) {
                        if matched {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == '*')
}

/// `[abc]`, `[a-z]`, `[!x]`/`[^x]` at the start of `p`: whether `c` matches, and the
/// class's length; `None` if the bracket is not closed (then it is a literal `[`).
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(1), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests;
