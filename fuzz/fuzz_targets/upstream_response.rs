//! An upstream's HTTP/1.1 response as the proxy's own client reads it: the
//! head (interim responses skipped), then the body framing, with the bytes
//! arriving in pieces whose size the input's first byte chooses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first & 0x3f) + 1;
    canary_proxy::fuzzing::upstream_response(rest, first & 0x80 != 0, piece);
});
