//! A SPDY session's input: frames one after another, header blocks
//! through one inflater (as the server reads them), name/value blocks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use picolet::server::spdy::{parse_frame, parse_header_block, Frame, Inflater};

fuzz_target!(|data: &[u8]| {
    let mut inflater = Inflater::new();
    let mut rest = data;
    while let Ok(Some((f, used))) = parse_frame(rest) {
        assert!(used >= 8 && used <= rest.len());
        rest = &rest[used..];
        if let Frame::SynStream { block, .. } | Frame::Headers { block, .. } = f {
            match inflater.inflate(&block) {
                Ok(raw) => {
                    assert!(raw.len() <= picolet::server::spdy::MAX_HEADERS + (32 << 10));
                    let _ = parse_header_block(&raw);
                }
                // The stream is unusable after an error, as in a session.
                Err(_) => inflater = Inflater::new(),
            }
        }
    }
    let _ = parse_header_block(data);
});
