//! CRI log files as /containerLogs reads them: lines through the
//! formatter with every option, and the tail offset.
#![no_main]
use libfuzzer_sys::fuzz_target;
use picolet::server::logs::{tail_offset, Formatter, LogOptions};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (cfg, text) = data.split_at(2);
    let opts = LogOptions {
        timestamps: cfg[0] & 1 != 0,
        limit_bytes: (cfg[0] & 2 != 0).then_some(u64::from(cfg[1])),
        since_nanos: (cfg[0] & 4 != 0).then_some(1_700_000_000_000_000_000),
        ..Default::default()
    };
    let mut f = Formatter::new(&opts);
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        if !f.line(line, &mut out) {
            break;
        }
    }
    if let Some(l) = opts.limit_bytes {
        assert!(out.len() as u64 <= l);
    }
    let mut c = std::io::Cursor::new(text.to_vec());
    let off = tail_offset(&mut c, u64::from(cfg[1])).unwrap();
    assert!(off <= text.len() as u64);
});
