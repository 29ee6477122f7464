//! Helpers shared by the subcommands: reading documents (bounded), loading
//! specs and scenarios, writing to standard output.

use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use canary_core::Policy;

/// The largest document (spec, scenario, analyze input) canary reads: 16 MiB.
pub const MAX_DOCUMENT_BYTES: u64 = 16 << 20;

/// Reads the document at `path` (`-`: standard input) as UTF-8 text, refusing
/// one larger than [`MAX_DOCUMENT_BYTES`] without reading past the limit (so
/// `/dev/zero` or an endless pipe ends in an error, not in exhausted memory).
pub fn read_document(path: &Path, what: &str) -> Result<String> {
    let name = path.display();
    let mut bytes = Vec::new();
    let limit = MAX_DOCUMENT_BYTES + 1;
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {what} from standard input"))?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {what} {name}"))?;
    }
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        bail!(
            "{what} {name}: larger than the {} MiB limit for documents",
            MAX_DOCUMENT_BYTES >> 20
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        anyhow!("{what} {name}: not UTF-8 text (invalid byte at offset {at})")
    })
}

/// Writes `text` to standard output. A reader that has gone away (a closed
/// pipe, as in `canary simulate | head -1`) is not an error: nobody is left
/// to read the rest.
pub fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to standard output"),
    }
}

/// Loads and validates the spec at `path`, or the default strategy.
/// Every validation error is listed, each prefixed with the file name.
pub fn load_policy(path: Option<&Path>) -> Result<Policy> {
    let Some(path) = path else {
        return Ok(Policy::default_strategy());
    };
    let text = read_document(path, "spec")?;
    let policy = canary_prometheus::policy_from_text(&text).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        anyhow!("{} error(s) in spec:\n{}", errors.0.len(), lines.join("\n"))
    })?;
    if let Some(e) = kubeconfig_problem(&policy) {
        bail!("{}: {e}", path.display());
    }
    Ok(policy)
}

/// What is wrong with the kubeconfig a Kubernetes provider's spec names
/// (`traffic.kubernetes.kubeconfig`, else `KUBECONFIG`): missing, not
/// parseable, without the context. A build without the Kubernetes
/// providers checks only that a named file exists.
pub fn kubeconfig_problem(policy: &Policy) -> Option<String> {
    let t = policy.traffic.as_ref()?;
    let k = t
        .kubernetes
        .as_ref()
        .filter(|_| t.provider.is_kubernetes())?;
    #[cfg(feature = "kubernetes")]
    {
        canary_kube::check_kubeconfig(k)
            .err()
            .map(|e| format!("traffic.kubernetes: {e}"))
    }
    #[cfg(not(feature = "kubernetes"))]
    {
        let path = k.kubeconfig.as_ref()?;
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => None,
            Ok(_) => Some(format!(
                "traffic.kubernetes.kubeconfig: {path} is not a file"
            )),
            Err(e) => Some(format!("traffic.kubernetes.kubeconfig: {path}: {e}")),
        }
    }
}

/// Prints `value` as pretty JSON with a final newline.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

/// A built-in scenario by name, or a scenario file.
pub fn load_scenario(name_or_path: &str) -> Result<canary_sim::Scenario> {
    if let Some(s) = canary_sim::Scenario::built_in(name_or_path) {
        return Ok(s);
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        return Err(anyhow!(
            "`{name_or_path}` is neither a built-in scenario ({}) nor a file",
            canary_sim::BUILT_IN.join(", ")
        ));
    }
    let text = read_document(path, "scenario")?;
    canary_sim::Scenario::from_text(&text).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        anyhow!(
            "{} error(s) in scenario:\n{}",
            errors.0.len(),
            lines.join("\n")
        )
    })
}
