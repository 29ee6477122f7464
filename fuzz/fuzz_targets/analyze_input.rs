//! The `canary analyze` input: parsing, then judging with every judge it
//! names (the work is bounded by the input's size).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(input) = canary_stats::analyze::parse(text) {
        if let Ok(report) = canary_stats::analyze::analyze(&input) {
            let _ = format!("{report:?}");
        }
    }
});
