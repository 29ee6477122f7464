//! Helpers shared by the subcommands: loading specs and printing JSON.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use canary_core::Policy;

/// Loads and validates the spec at `path`, or the default strategy.
/// Every validation error is listed, each prefixed with the file name.
pub fn load_policy(path: Option<&Path>) -> Result<Policy> {
    let Some(path) = path else {
        return Ok(Policy::default_strategy());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read spec {}", path.display()))?;
    Policy::from_text(&text).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        anyhow!("{} error(s) in spec:\n{}", errors.0.len(), lines.join("\n"))
    })
}

/// Prints `value` as pretty JSON with a final newline.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
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
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read scenario {}", path.display()))?;
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
