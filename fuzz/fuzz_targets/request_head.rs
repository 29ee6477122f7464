//! A client's request head: what the proxy itself does with it (routing by
//! override header, cookie and sticky key; hop-by-hop stripping; the
//! upstream request target).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canary_proxy::fuzzing::request_head(data);
});
