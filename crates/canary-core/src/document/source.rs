//! Reading a document (YAML or JSON) into a tree plus a map from each field
//! path (`stages[1].weight`) to the line it was written on.
//!
//! YAML is a superset of JSON, so one parser serves both; the line map lets
//! errors say "line 7" even though validation runs on typed values.
//!
//! # Limits
//! A document is hostile input until checked, so reading it is bounded:
//! nesting deeper than [`MAX_DEPTH`] levels, aliases that would expand to
//! more than [`MAX_ALIAS_EXPANSION`] nodes and string bytes (or four times
//! the document's size, if that is more), a second document, a NUL byte
//! and `<<` merge keys are refused with their line. A leading byte-order
//! mark is skipped. (The binary also refuses files over 16 MiB before they
//! get here.)

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// A parsed document: its value tree and where each path was written.
#[derive(Debug, Clone, Default)]
pub struct SourceDoc {
    /// The document as a JSON value tree.
    pub value: Value,
    /// 1-based line of every path (`""` is the root, `stages[0].weight` a leaf).
    pub lines: BTreeMap<String, usize>,
}

impl SourceDoc {
    /// The line of `path`, or of its nearest parent that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path.to_string();
        loop {
            if let Some(l) = self.lines.get(&p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }
}

/// A syntax error in the document, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What the parser said.
    pub message: String,
}

/// The deepest nesting of sequences and maps a document may have.
pub const MAX_DEPTH: usize = 64;

/// The most nodes plus string bytes that aliases may add to a document
/// (at least; four times the document's size when that is more).
pub const MAX_ALIAS_EXPANSION: usize = 1 << 20;

enum Frame {
    Seq(Vec<Value>, String, usize),
    Map(Map<String, Value>, String, Option<String>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    lines: BTreeMap<String, usize>,
    /// Anchored values and their sizes.
    anchors: BTreeMap<usize, (Value, usize)>,
    /// The first problem, with its line; once set, events are ignored.
    error: Option<(String, usize)>,
    /// Nodes and bytes added by aliases so far, and the most allowed.
    expanded: usize,
    expansion_limit: usize,
    documents: usize,
}

/// Nodes plus string bytes of a value (what an alias copy costs).
fn size(v: &Value) -> usize {
    match v {
        Value::String(s) => 1 + s.len(),
        Value::Array(a) => 1 + a.iter().map(size).sum::<usize>(),
        Value::Object(m) => 1 + m.iter().map(|(k, v)| k.len() + size(v)).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    /// The path at which the next value will be placed.
    fn next_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq(items, path, _)) => Some(format!("{path}[{}]", items.len())),
            Some(Frame::Map(_, path, Some(key), _)) => Some(if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            }),
            Some(Frame::Map(_, _, None, _)) => None, // the next scalar is a key
        }
    }

    fn fail(&mut self, message: String, line: usize) {
        if self.error.is_none() {
            self.error = Some((message, line));
        }
    }

    fn place(&mut self, v: Value, anchor: usize, line: usize) {
        if anchor > 0 {
            let n = size(&v);
            self.anchors.insert(anchor, (v.clone(), n));
        }
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq(items, _, _)) => items.push(v),
            Some(Frame::Map(map, _, key, _)) => match key.take() {
                Some(k) => {
                    if map.contains_key(&k) && self.error.is_none() {
                        self.error = Some((format!("duplicate key `{k}`"), line));
                    }
                    map.insert(k, v);
                }
                None => {
                    let k = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    *key = Some(k);
                }
            },
        }
    }
}

fn scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => match Yaml::Real(r).as_f64().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            // NaN and infinities have no JSON form: keep the text, so that
            // validation can name the field and say what is wrong with it.
            None => Value::String(text),
        },
        _ => Value::String(text),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        "a second document: a file holds one spec (remove the `---` and what follows, or split the file)".into(),
                        line,
                    );
                }
                return;
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.fail(format!("nesting deeper than {MAX_DEPTH} levels"), line);
                return;
            }
            _ => {}
        }
        let is_key = matches!(self.stack.last(), Some(Frame::Map(_, _, None, _)));
        if !is_key {
            if let Some(p) = self.next_path() {
                if !matches!(ev, Event::SequenceEnd | Event::MappingEnd) {
                    self.lines.entry(p).or_insert(mark.line());
                }
            }
        }
        match ev {
            Event::Scalar(text, style, anchor, _) => {
                if is_key {
                    if text == "<<" && style == TScalarStyle::Plain {
                        self.fail(
                            "`<<` merge keys are not supported: write the fields out".into(),
                            line,
                        );
                        return;
                    }
                    let key_path = match self.stack.last() {
                        Some(Frame::Map(_, path, _, _)) if path.is_empty() => text.clone(),
                        Some(Frame::Map(_, path, _, _)) => format!("{path}.{text}"),
                        _ => text.clone(),
                    };
                    self.lines.insert(key_path, line);
                    self.place(Value::String(text), 0, line);
                } else {
                    self.place(scalar(text, style), anchor, line);
                }
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.next_path().unwrap_or_default();
                self.stack.push(Frame::Seq(Vec::new(), path, anchor));
            }
            Event::MappingStart(anchor, _) => {
                let path = self.next_path().unwrap_or_default();
                self.stack.push(Frame::Map(Map::new(), path, None, anchor));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let (v, anchor) = match frame {
                        Frame::Seq(items, _, a) => (Value::Array(items), a),
                        Frame::Map(map, _, _, a) => (Value::Object(map), a),
                    };
                    self.place(v, anchor, line);
                }
            }
            Event::Alias(id) => {
                let Some((v, n)) = self.anchors.get(&id).cloned() else {
                    self.fail("an alias to an unknown anchor".into(), line);
                    return;
                };
                self.expanded = self.expanded.saturating_add(n);
                if self.expanded > self.expansion_limit {
                    self.fail(
                        format!(
                            "aliases expand the document past {} nodes and bytes",
                            self.expansion_limit
                        ),
                        line,
                    );
                    return;
                }
                self.place(v, 0, line);
            }
            _ => {}
        }
    }
}

/// Indentation beyond which a line is refused before parsing.
const MAX_INDENT: usize = 10_000;

/// Refuses, before the YAML parser sees them, lines that could nest deeper
/// than the parser's own stack allows: block nesting needs either one more
/// column of indentation per level or a run of `- `, `? ` or `: `
/// indicators on one line (`- - - - 1`). The builder then enforces
/// [`MAX_DEPTH`] exactly.
fn deep_lines(text: &str) -> Result<(), SyntaxError> {
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let mut rest = &line[indent..];
        let mut run = 0;
        while let Some(r) = rest
            .strip_prefix("- ")
            .or_else(|| rest.strip_prefix("? "))
            .or_else(|| rest.strip_prefix(": "))
            .or_else(|| rest.strip_prefix("-\t"))
        {
            run += 1;
            rest = r.trim_start_matches([' ', '\t']);
        }
        if run > MAX_DEPTH || indent > MAX_INDENT {
            return Err(SyntaxError {
                line: i + 1,
                col: 1,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
    }
    Ok(())
}

/// Parses a YAML or JSON document.
///
/// # Errors
/// A [`SyntaxError`] with the line and column of the first syntax error, or of
/// a duplicate key.
pub fn parse(text: &str) -> Result<SourceDoc, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(at) = text.find('\0') {
        let line = 1 + text[..at].matches('\n').count();
        let col = 1 + at - text[..at].rfind('\n').map_or(0, |n| n + 1);
        return Err(SyntaxError {
            line,
            col,
            message: "a NUL byte: not a text document".into(),
        });
    }
    deep_lines(text)?;
    let mut builder = Builder {
        expansion_limit: MAX_ALIAS_EXPANSION.max(text.len().saturating_mul(4)),
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    let loaded = parser.load(&mut builder, true);
    // A limit the builder hit stops reading; it comes before whatever the
    // parser made of the rest.
    if let Some((message, line)) = builder.error {
        return Err(SyntaxError {
            line,
            col: 0,
            message,
        });
    }
    loaded.map_err(|e| SyntaxError {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    Ok(SourceDoc {
        value: builder.root.unwrap_or(Value::Null),
        lines: builder.lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_nested_fields() {
        let doc =
            parse("name: x\nstages:\n  - weight: 1\n    duration: 5m\n  - weight: 5\n").unwrap();
        assert_eq!(doc.value["stages"][1]["weight"], 5);
        assert_eq!(doc.lines["name"], 1);
        assert_eq!(doc.lines["stages"], 2);
        assert_eq!(doc.lines["stages[0].duration"], 4);
        assert_eq!(doc.lines["stages[1].weight"], 5);
        assert_eq!(doc.line_of("stages[1].weight.nope"), Some(5));
    }

    #[test]
    fn json_is_yaml() {
        let doc = parse("{\"name\": \"x\",\n \"stages\": [{\"weight\": 2.5}]}").unwrap();
        assert_eq!(doc.value["stages"][0]["weight"], 2.5);
        assert_eq!(doc.lines["stages[0].weight"], 2);
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let doc = parse("a: '5'\nb: 5\nc: .nan\n").unwrap();
        assert_eq!(doc.value["a"], "5");
        assert_eq!(doc.value["b"], 5);
        assert_eq!(doc.value["c"], ".nan");
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e}");
    }

    #[test]
    fn duplicate_keys_rejected() {
        assert!(parse("a: 1\na: 2\n").is_err());
    }

    /// Issue 10: 40,000 levels of `- - - … 1` overflowed the stack; 20,000
    /// took 1.35 GB.
    #[test]
    fn deep_nesting_is_refused_with_the_limit() {
        for n in [65, 20_000, 40_000] {
            let e = parse(&format!("{}1\n", "- ".repeat(n))).unwrap_err();
            assert!(e.message.contains("deeper than 64"), "{n}: {e}");
        }
        let stairs: String = (0..100).map(|i| format!("{}-\n", " ".repeat(i))).collect();
        let e = parse(&format!("{stairs}{} 1\n", " ".repeat(100))).unwrap_err();
        assert!(e.message.contains("deeper than 64"), "{e}");
        let flow = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&flow).is_err());
        assert!(parse(&format!("{}1\n", "- ".repeat(60))).is_ok());
    }

    /// Issue 10: 3,000 aliases of a 1 MB string took 8 GB.
    #[test]
    fn alias_expansion_is_bounded() {
        let big = "x".repeat(100_000);
        let aliases = vec!["*a"; 3_000].join(", ");
        let e = parse(&format!("s: &a {big}\nl: [{aliases}]\n")).unwrap_err();
        assert!(e.message.contains("aliases expand"), "{e}");
        assert_eq!(e.line, 2);
        // A few aliases are fine, and aliases to maps keep the map.
        let doc = parse("b: &b {w: 1}\nl: [*b, *b]\n").unwrap();
        assert_eq!(doc.value["l"][1]["w"], 1);
    }

    #[test]
    fn a_second_document_merge_keys_nul_bytes_are_refused_and_a_bom_skipped() {
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("second document"), "{e}");
        assert_eq!(e.line, 2);
        let e = parse("{\"a\": 1} trailing\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        let e = parse("b: &b {w: 1}\nc: {<<: *b}\n").unwrap_err();
        assert!(e.message.contains("merge keys"), "{e}");
        let e = parse("a: 1\nb: 2\0\n").unwrap_err();
        assert!(e.message.contains("NUL"), "{e}");
        assert_eq!((e.line, e.col), (2, 5));
        assert_eq!(parse("\u{feff}a: 1\n").unwrap().value["a"], 1);
    }
}
