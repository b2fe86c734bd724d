//! The kubelet port's HTTP/2 server state (`server::h2::Core`): any frame
//! sequence after the preface, and a response on every request it opens.
#![no_main]
use libfuzzer_sys::fuzz_target;
use picolet::http::h2::frame::Frame;
use picolet::server::h2::{Core, MAX_STREAMS};
use std::task::{Context, Waker};

fuzz_target!(|data: &[u8]| {
    let mut c = Core::new(4096, 1024);
    let mut cx = Context::from_waker(Waker::noop());
    let mut rest = data;
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 8 | usize::from(rest[1])).min(rest.len() - 9);
        let f = Frame {
            kind: rest[3] % 11,
            flags: rest[4],
            stream: u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff,
            payload: rest[9..9 + len].to_vec(),
        };
        rest = &rest[9 + len..];
        match c.on_frame(f) {
            Err(_) => break,
            Ok(Some((id, req))) => {
                if let Ok(r) = &req {
                    let _ = picolet::server::logs::parse_options(r, 0);
                }
                let end = req.is_err();
                if c.send_head(id, &[(":status", "200"), ("content-type", "x")], end) && !end {
                    let _ = c.poll_data(&mut cx, id, &[b'x'; 40_000], true);
                }
            }
            Ok(None) => {}
        }
        assert!(c.open_streams() <= MAX_STREAMS);
        c.out.clear();
    }
});
