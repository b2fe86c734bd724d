//! Request heads, query strings and paths as the server takes them apart,
//! and the options of /containerLogs, /exec and /portForward.
#![no_main]
use libfuzzer_sys::fuzz_target;
use picolet::server::http1::{parse_head, percent_decode, query_pairs, segments};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, used))) = parse_head(data) {
        assert!(used <= data.len());
        let _ = segments(&req.path);
        let _ = req.header_tokens("x-stream-protocol-version");
        let _ = picolet::server::logs::parse_options(&req, 0);
        if let Some(s) = segments(&req.path) {
            let segs: Vec<&str> = s.iter().map(String::as_str).collect();
            let kind = picolet::server::remotecommand::Kind::Exec;
            let _ = picolet::server::remotecommand::parse_request(kind, &segs, &req);
            let _ = picolet::server::portforward::query_ports(&req);
        }
        let _ = picolet::server::auth::bearer_token(&req);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = query_pairs(s);
        let _ = percent_decode(s, true);
        if let Some(segs) = segments(s) {
            assert!(segs.iter().all(|x| x != ".." && !x.contains('/')));
        }
    }
});
