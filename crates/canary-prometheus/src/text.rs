//! The Prometheus text exposition format (and the sample lines of
//! OpenMetrics text), read into samples: a name, its labels, a value.
//!
//! Written here rather than taken from `prometheus-parse` 0.2.5, which
//! splits label sets on `,` and `=`: a label value holding either (a path
//! with a query string, an error message) loses the label, and a line it
//! cannot read is skipped without a word. Here a value is read with its
//! escapes (`\\`, `\"`, `\n`), and a line that does not parse is an error
//! naming the line.

use std::fmt;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, e.g. `http_requests_total` or
    /// `http_request_duration_seconds_bucket`.
    pub name: String,
    /// The labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`NaN`, `+Inf` and `-Inf` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not in the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole exposition: comments (`# HELP`, `# TYPE`, ...) and blank
/// lines are skipped, `# EOF` ends it, every other line must be a sample.
///
/// # Errors
/// The first line that is not a sample, with its number.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if line == "# EOF" {
                break;
            }
            continue;
        }
        let s = sample(line).map_err(|message| ParseError {
            line: i + 1,
            message,
        })?;
        out.push(s);
    }
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads a float as Prometheus writes it.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

fn sample(line: &str) -> Result<Sample, String> {
    let mut chars = line.char_indices().peekable();
    let end = loop {
        match chars.peek() {
            Some(&(i, c)) if (i == 0 && is_name_start(c)) || (i > 0 && is_name_char(c)) => {
                chars.next();
            }
            Some(&(i, _)) => break i,
            None => break line.len(),
        }
    };
    if end == 0 {
        return Err(format!("expected a metric name at `{}`", clip(line)));
    }
    let name = line[..end].to_string();
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = read_labels(r, &mut labels)?;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    // Value, then an optional timestamp, then (OpenMetrics) an optional
    // exemplar after `#`.
    let body = rest.split(" # ").next().unwrap_or(rest);
    let mut fields = body.split([' ', '\t']).filter(|f| !f.is_empty());
    let v = fields
        .next()
        .ok_or_else(|| format!("`{name}` has no value"))?;
    let value = parse_value(v).ok_or_else(|| format!("`{name}`: `{}` is not a number", clip(v)))?;
    if let Some(ts) = fields.next() {
        if ts.parse::<f64>().is_err() {
            return Err(format!("`{name}`: `{}` is not a timestamp", clip(ts)));
        }
    }
    if let Some(extra) = fields.next() {
        return Err(format!(
            "`{name}`: unexpected `{}` after the value",
            clip(extra)
        ));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Reads `name="value", ...}` and returns what follows the `}`.
fn read_labels<'a>(mut s: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(r) = s.strip_prefix('}') {
            return Ok(r);
        }
        let end = s
            .char_indices()
            .find(|&(i, c)| {
                !(if i == 0 {
                    is_name_start(c)
                } else {
                    is_name_char(c)
                })
            })
            .map_or(s.len(), |(i, _)| i);
        if end == 0 {
            return Err(format!("expected a label name at `{}`", clip(s)));
        }
        let key = s[..end].to_string();
        s = s[end..].trim_start_matches([' ', '\t']);
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("label `{key}`: expected `=`"))?;
        s = s.trim_start_matches([' ', '\t']);
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("label `{key}`: expected a quoted value"))?;
        let mut value = String::new();
        let mut it = s.char_indices();
        let close = loop {
            match it.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match it.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("label `{key}`: unterminated value")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("label `{key}`: unterminated value")),
            }
        };
        out.push((key, value));
        s = s[close + 1..].trim_start_matches([' ', '\t']);
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err(format!("expected `,` or `}}` at `{}`", clip(s)));
        }
    }
}

fn clip(s: &str) -> String {
    let t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        format!("{t}…")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_format_with_escapes_timestamps_and_special_values() {
        let text = r#"# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9
metric_without_timestamp_and_labels 12.47
something_weird{problem="division by zero"} +Inf -3982045
http_request_duration_seconds_bucket{le="+Inf"} 144320
odd{path="/a?b=c,d",x="}"} NaN
trailing{a="1",} 2
# EOF
ignored garbage
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 8);
        assert_eq!(s[0].name, "http_requests_total");
        assert_eq!(s[0].label("code"), Some("200"));
        assert_eq!(s[0].value, 1027.0);
        assert_eq!(s[2].label("path"), Some(r"C:\DIR\FILE.TXT"));
        assert_eq!(s[2].label("error"), Some("Cannot find file:\n\"FILE.TXT\""));
        assert_eq!(s[4].value, f64::INFINITY);
        assert_eq!(s[5].label("le"), Some("+Inf"));
        assert_eq!(s[6].label("path"), Some("/a?b=c,d"));
        assert_eq!(s[6].label("x"), Some("}"));
        assert!(s[6].value.is_nan());
        assert_eq!(s[7].label("a"), Some("1"));
    }

    #[test]
    fn an_openmetrics_exemplar_is_skipped() {
        let s = parse("a_bucket{le=\"0.5\"} 10 # {trace_id=\"x\"} 0.3 123\n").unwrap();
        assert_eq!(s[0].value, 10.0);
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        for (text, line, what) in [
            ("ok 1\n{a=\"b\"} 2\n", 2, "metric name"),
            ("a{b=c} 1\n", 1, "quoted value"),
            ("a{b=\"c} 1\n", 1, "unterminated"),
            ("a 1\n\na{b=\"c\" d=\"e\"} 1\n", 3, "expected `,`"),
            ("a one\n", 1, "not a number"),
            ("a\n", 1, "no value"),
            ("a 1 2 3\n", 1, "unexpected"),
            ("a 1 soon\n", 1, "timestamp"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(what), "{text}: {e}");
        }
    }
}
