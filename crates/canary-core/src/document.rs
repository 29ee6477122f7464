//! Documents: where every document the product reads is parsed — rollout
//! specs, scenarios, and the input of `canary analyze`.
//!
//! [`source`] turns YAML or JSON text into a value tree plus a map from each
//! field path (`stages[1].weight`) to the line it was written on; the layers
//! above deserialize that tree into their own types and report problems with
//! the path and the line.

mod path;
pub mod source;

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use path::{join, pointer_value, remove_path};
pub use source::{SourceDoc, SyntaxError};

/// Parses a YAML or JSON document; a syntax error becomes a [`SpecErrors`]
/// with its line.
///
/// # Errors
/// The syntax error, as the only entry.
pub fn parse_document(text: &str) -> Result<SourceDoc, SpecErrors> {
    source::parse(text).map_err(|e| {
        SpecErrors(vec![SpecError {
            path: String::new(),
            line: (e.line > 0).then_some(e.line),
            value: String::new(),
            rule: format!("not valid YAML or JSON: {}", e.message),
        }])
    })
}

/// Deserializes a JSON document straight into a `T`, for documents too big
/// for the value tree (the `canary analyze` input, whose series may hold a
/// million numbers): the first problem, with its field path and line, and
/// anything after the document's end refused.
///
/// # Errors
/// One [`SpecError`]: a syntax error, a shape error, or trailing characters.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, SpecError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut de = serde_json::Deserializer::from_str(text);
    let fail = |path: String, e: serde_json::Error| {
        // serde_json ends its messages with " at line L column C"; the line
        // is given on its own.
        let text = e.to_string();
        let rule = match text.rsplit_once(" at line ") {
            Some((head, _)) if e.line() > 0 => head.to_string(),
            _ => text,
        };
        SpecError {
            path: if path == "." { String::new() } else { path },
            line: (e.line() > 0).then_some(e.line()),
            value: String::new(),
            rule,
        }
    };
    let t: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        fail(path, e.into_inner())
    })?;
    de.end().map_err(|e| SpecError {
        rule: "more after the end of the document (only one JSON value is allowed)".into(),
        ..fail(String::new(), e)
    })?;
    Ok(t)
}

/// Deserializes `doc` into a `T` (a struct: the document must be a
/// mapping), gathering as many shape errors as it can: each failing value is
/// removed and the rest deserialized again.
pub(crate) fn deserialize_all<T: DeserializeOwned>(doc: &SourceDoc) -> Result<T, SpecErrors> {
    if !doc.value.is_object() {
        // serde would read a struct from a list of its fields in order;
        // a document is a mapping of named fields.
        return Err(SpecErrors(vec![SpecError {
            path: String::new(),
            line: Some(1),
            value: short(&doc.value),
            rule: "the document must be a mapping of fields (name, stages, ...), not a list or a single value".into(),
        }]));
    }
    let mut value = doc.value.clone();
    let mut errors: Vec<SpecError> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..32 {
        let result: Result<T, _> = serde_path_to_error::deserialize(value.clone());
        let e = match result {
            Ok(t) if errors.is_empty() => return Ok(t),
            Ok(_) => break,
            Err(e) => e,
        };
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let message = e.inner().to_string();
        // A field we removed because its value was wrong is now "missing":
        // that is the same fault, already reported.
        let is_echo = message.starts_with("missing field")
            && removed.iter().any(|r| {
                let field = message.split('`').nth(1).unwrap_or("");
                *r == join(&path, field)
            });
        if !is_echo {
            let at = pointer_value(&value, &path);
            errors.push(SpecError {
                line: doc.line_of(&path),
                value: at.map(short).unwrap_or_default(),
                rule: message,
                path: path.clone(),
            });
        }
        if path.is_empty() || !remove_path(&mut value, &path) {
            break;
        }
        removed.push(path);
    }
    // The tree's maps are sorted by key: report in the order of the file.
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(SpecErrors(errors))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// One problem with a document (a spec, a scenario).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Field path, e.g. `stages[1].weight`; empty for the whole document.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// The offending value as written (may be empty).
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, Some(l)) => write!(f, "line {l}: ")?,
            (true, None) => {}
            (false, Some(l)) => write!(f, "{} (line {l}): ", self.path)?,
            (false, None) => write!(f, "{}: ", self.path)?,
        }
        if self.value.is_empty() {
            write!(f, "{}", self.rule)
        } else {
            write!(f, "{} — {}", self.value, self.rule)
        }
    }
}

/// Every problem found with a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
