//! Documents: where every document the product reads is parsed — rollout
//! specs, scenarios, and the input of `canary analyze`.
//!
//! [`source`] turns YAML or JSON text into a value tree plus a map from each
//! field path (`stages[1].weight`) to the line it was written on; the layers
//! above deserialize that tree into their own types and report problems with
//! the path and the line.

pub mod source;

pub use source::{SourceDoc, SyntaxError};
