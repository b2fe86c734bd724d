//! WebSocket client frames, channel demultiplexing and the resize
//! stream's JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use picolet::server::remotecommand::take_sizes;
use picolet::server::websocket::{demux, parse_frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((f, used))) = parse_frame(rest) {
        assert!(used >= 6 && used <= rest.len());
        assert!(f.payload.len() <= picolet::server::websocket::MAX_MESSAGE);
        rest = &rest[used..];
        let _ = demux(f.opcode == 1, &f.payload);
    }
    let mut b = data.to_vec();
    if let Ok(sizes) = take_sizes(&mut b) {
        assert!(b.len() <= data.len());
        let _ = sizes;
    }
});
