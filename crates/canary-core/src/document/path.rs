//! Field paths as serde and the line map write them (`stages[1].weight`):
//! splitting one into segments, finding the value it names, removing it.

use serde_json::Value;

/// `path.field`, or `field` at the root.
pub(super) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Splits `stages[1].weight` into `["stages", "1", "weight"]`.
fn segments(path: &str) -> Vec<String> {
    path.replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The value `path` names in `v`, if any.
pub(super) fn pointer_value<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in segments(path) {
        cur = match cur {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the map entry `path` names; false when there is none (or it is
/// a list element).
pub(super) fn remove_path(v: &mut Value, path: &str) -> bool {
    let segs = segments(path);
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parents {
        cur = match cur {
            Value::Object(m) => match m.get_mut(seg) {
                Some(x) => x,
                None => return false,
            },
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return false,
            },
            _ => return false,
        };
    }
    match cur {
        Value::Object(m) => m.remove(last).is_some(),
        // An element of a list cannot be removed without renumbering the
        // rest; stop gathering.
        _ => false,
    }
}
