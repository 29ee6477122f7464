//! A rollout spec, YAML or JSON: parsing, validation, and the error text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match canary_core::Policy::from_text(text) {
        Ok(p) => {
            let _ = format!("{p:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
