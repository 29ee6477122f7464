//! A scenario file: parsing and validation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = canary_sim::Scenario::from_text(text) {
        let _ = e.to_string();
    }
});
