//! Reading a document (YAML or JSON) into a tree plus a map from each field
//! path (`stages[1].weight`) to the line it was written on.
//!
//! YAML is a superset of JSON, so one parser serves both; the line map lets
//! errors say "line 7" even though validation runs on typed values.

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

enum Frame {
    Seq(Vec<Value>, String),
    Map(Map<String, Value>, String, Option<String>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    lines: BTreeMap<String, usize>,
    anchors: BTreeMap<usize, Value>,
    error: Option<String>,
}

impl Builder {
    /// The path at which the next value will be placed.
    fn next_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq(items, path)) => Some(format!("{path}[{}]", items.len())),
            Some(Frame::Map(_, path, Some(key))) => Some(if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            }),
            Some(Frame::Map(_, _, None)) => None, // the next scalar is a key
        }
    }

    fn place(&mut self, v: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, v.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq(items, _)) => items.push(v),
            Some(Frame::Map(map, _, key)) => match key.take() {
                Some(k) => {
                    if map.contains_key(&k) && self.error.is_none() {
                        self.error = Some(format!("duplicate key `{k}`"));
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
        let is_key = matches!(self.stack.last(), Some(Frame::Map(_, _, None)));
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
                    let key_path = match self.stack.last() {
                        Some(Frame::Map(_, path, _)) if path.is_empty() => text.clone(),
                        Some(Frame::Map(_, path, _)) => format!("{path}.{text}"),
                        _ => text.clone(),
                    };
                    self.lines.insert(key_path, mark.line());
                    self.place(Value::String(text), 0);
                } else {
                    self.place(scalar(text, style), anchor);
                }
            }
            Event::SequenceStart(_, _) => {
                let path = self.next_path().unwrap_or_default();
                self.stack.push(Frame::Seq(Vec::new(), path));
            }
            Event::MappingStart(_, _) => {
                let path = self.next_path().unwrap_or_default();
                self.stack.push(Frame::Map(Map::new(), path, None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let v = match frame {
                        Frame::Seq(items, _) => Value::Array(items),
                        Frame::Map(map, _, _) => Value::Object(map),
                    };
                    self.place(v, 0);
                }
            }
            Event::Alias(id) => {
                let v = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.place(v, 0);
            }
            _ => {}
        }
    }
}

/// Parses a YAML or JSON document.
///
/// # Errors
/// A [`SyntaxError`] with the line and column of the first syntax error, or of
/// a duplicate key.
pub fn parse(text: &str) -> Result<SourceDoc, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    if let Some(message) = builder.error {
        return Err(SyntaxError {
            line: 0,
            col: 0,
            message,
        });
    }
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
}
