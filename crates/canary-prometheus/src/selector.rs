//! Series selectors for scraped samples: `name{label="v", code=~"5.."}`,
//! with PromQL's four matchers (`=`, `!=`, `=~`, `!~`; regexes anchored at
//! both ends, as in PromQL).

use std::fmt;

use regex::Regex;

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    label: String,
    op: Op,
    value: String,
    regex: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl Matcher {
    /// `label="value"`.
    pub fn equal(label: &str, value: &str) -> Self {
        Self {
            label: label.into(),
            op: Op::Eq,
            value: value.into(),
            regex: None,
        }
    }

    fn matches(&self, labels: &[(String, String)]) -> bool {
        // A missing label matches as the empty string, as in PromQL.
        let v = labels
            .iter()
            .find(|(k, _)| *k == self.label)
            .map_or("", |(_, v)| v.as_str());
        match (self.op, &self.regex) {
            (Op::Eq, _) => v == self.value,
            (Op::Ne, _) => v != self.value,
            (Op::Re, Some(r)) => r.is_match(v),
            (Op::NotRe, Some(r)) => !r.is_match(v),
            (Op::Re | Op::NotRe, None) => false,
        }
    }
}

/// A metric name and label matchers.
#[derive(Debug, Clone)]
pub struct Selector {
    /// The metric name.
    pub name: String,
    matchers: Vec<Matcher>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.matchers.is_empty() {
            f.write_str("{")?;
            for (i, m) in self.matchers.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                let op = match m.op {
                    Op::Eq => "=",
                    Op::Ne => "!=",
                    Op::Re => "=~",
                    Op::NotRe => "!~",
                };
                write!(f, "{}{op}{:?}", m.label, m.value)?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

impl Selector {
    /// Parses `name` or `name{label="v", ...}`.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let s = s.trim();
        let end = s
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
            })
            .map_or(s.len(), |(i, _)| i);
        if end == 0 {
            return Err(format!("`{s}`: a selector starts with a metric name"));
        }
        let name = s[..end].to_string();
        let mut rest = s[end..].trim_start();
        let mut matchers = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                rest = rest.trim_start();
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let lend = rest
                    .char_indices()
                    .find(|&(i, c)| {
                        !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()))
                    })
                    .map_or(rest.len(), |(i, _)| i);
                if lend == 0 {
                    return Err(format!("`{s}`: expected a label name"));
                }
                let label = rest[..lend].to_string();
                rest = rest[lend..].trim_start();
                let (op, r) = if let Some(r) = rest.strip_prefix("=~") {
                    (Op::Re, r)
                } else if let Some(r) = rest.strip_prefix("!~") {
                    (Op::NotRe, r)
                } else if let Some(r) = rest.strip_prefix("!=") {
                    (Op::Ne, r)
                } else if let Some(r) = rest.strip_prefix('=') {
                    (Op::Eq, r)
                } else {
                    return Err(format!("`{s}`: label `{label}` needs one of =, !=, =~, !~"));
                };
                rest = r.trim_start();
                let (value, r) = quoted(rest).ok_or_else(|| {
                    format!("`{s}`: label `{label}` needs a quoted value, e.g. {label}=\"x\"")
                })?;
                rest = r.trim_start();
                let regex = match op {
                    Op::Re | Op::NotRe => Some(
                        Regex::new(&format!("^(?:{value})$"))
                            .map_err(|e| format!("`{s}`: label `{label}`: bad regex: {e}"))?,
                    ),
                    _ => None,
                };
                matchers.push(Matcher {
                    label,
                    op,
                    value,
                    regex,
                });
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else if !rest.starts_with('}') {
                    return Err(format!("`{s}`: expected `,` or `}}`"));
                }
            }
        }
        if !rest.trim().is_empty() {
            return Err(format!(
                "`{s}`: unexpected `{}` after the selector (only a name and label matchers; \
                 functions need a Prometheus server)",
                rest.trim()
            ));
        }
        Ok(Selector { name, matchers })
    }

    /// This selector with `extra` matchers added.
    #[must_use]
    pub fn with(mut self, extra: impl IntoIterator<Item = Matcher>) -> Self {
        self.matchers.extend(extra);
        self
    }

    /// This selector for another metric name (a histogram's `_bucket`).
    #[must_use]
    pub fn renamed(&self, name: String) -> Self {
        Self {
            name,
            matchers: self.matchers.clone(),
        }
    }

    /// Whether a sample with this name and these labels is selected.
    pub fn matches(&self, name: &str, labels: &[(String, String)]) -> bool {
        name == self.name && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// A double- or single-quoted string with backslash escapes, and what
/// follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next().filter(|&c| c == '"' || c == '\'')?;
    let mut out = String::new();
    let mut it = s[1..].char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '\\' => match it.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c => out.push(c),
            },
            c if c == q => return Some((out, &s[1 + i + 1..])),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_select_as_promql_does() {
        let s = Selector::parse(
            r#"http_requests_total{code=~"5..", method!="GET", path!~"/health.*"}"#,
        )
        .unwrap();
        assert!(s.matches(
            "http_requests_total",
            &l(&[("code", "503"), ("method", "POST")])
        ));
        assert!(!s.matches("http_requests_total", &l(&[("code", "200")])));
        assert!(
            !s.matches("http_requests_total", &l(&[("code", "5000")])),
            "anchored"
        );
        assert!(!s.matches(
            "http_requests_total",
            &l(&[("code", "500"), ("method", "GET")])
        ));
        assert!(!s.matches(
            "http_requests_total",
            &l(&[("code", "500"), ("path", "/healthz")])
        ));
        assert!(!s.matches("other", &l(&[("code", "500")])));
        let bare = Selector::parse("up").unwrap();
        assert!(bare.matches("up", &[]));
        let empty = Selector::parse(r#"x{version=""}"#).unwrap();
        assert!(
            empty.matches("x", &[]),
            "a missing label is the empty string"
        );
        assert_eq!(
            s.to_string(),
            r#"http_requests_total{code=~"5..",method!="GET",path!~"/health.*"}"#
        );
    }

    #[test]
    fn a_bad_selector_says_what_is_wrong() {
        for (s, what) in [
            ("", "starts with a metric name"),
            ("{code=\"5\"}", "starts with a metric name"),
            ("x{code=5}", "quoted value"),
            ("x{code~\"5\"}", "needs one of"),
            ("x{code=~\"(\"}", "bad regex"),
            ("rate(x[5m])", "unexpected"),
            ("x{a=\"1\" b=\"2\"}", "expected `,`"),
        ] {
            let e = Selector::parse(s).unwrap_err();
            assert!(e.contains(what), "{s}: {e}");
        }
    }
}
