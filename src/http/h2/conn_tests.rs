//! The connection against a scripted server speaking raw frames over a
//! Unix socket pair: what a real server rarely does on demand (GOAWAY,
//! resets, tiny windows, garbage, silence).

use super::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::unix::UnixStream;
use std::future::Future;

/// Runs a test on the executor the connection's tasks live on, failing it
/// after 20 s instead of hanging.
fn run<T>(f: impl Future<Output = T>) -> T {
    crate::rt::block_on(future::or(f, async {
        Timer::after(Duration::from_secs(20)).await;
        panic!("test timed out")
    }))
}

async fn sleep(ms: u64) {
    Timer::after(Duration::from_millis(ms)).await;
}

fn get(path: &str) -> Request {
    Request {
        method: "GET".into(),
        scheme: "https".into(),
        authority: "api.example.test:6443".into(),
        path: path.into(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
    }
}

fn post(path: &str, body: Vec<u8>) -> Request {
    Request {
        method: "POST".into(),
        body,
        ..get(path)
    }
}

/// The scripted server.
struct Peer {
    io: UnixStream,
    buf: Vec<u8>,
    dec: Decoder,
    enc: Encoder,
    /// WINDOW_UPDATE increments received, per stream (0: connection).
    credits: BTreeMap<u32, u64>,
}

/// A request as the server saw it.
struct Req {
    id: u32,
    fields: Vec<(String, String)>,
    end_stream: bool,
    /// Header block size (all fragments).
    block_len: usize,
    /// Frames the block came in.
    frames: usize,
}

impl Req {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Peer {
    /// The next frame, or None at EOF.
    async fn raw(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16
                    | (self.buf[1] as usize) << 8
                    | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let rest = self.buf.split_off(9 + len);
                    let f = std::mem::replace(&mut self.buf, rest);
                    return Some(Frame {
                        kind: f[3],
                        flags: f[4],
                        stream: be32(&f, 5) & 0x7fff_ffff,
                        payload: f[9..].to_vec(),
                    });
                }
            }
            let mut tmp = vec![0u8; 64 * 1024];
            let n = self.io.read(&mut tmp).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// The next frame other than SETTINGS ACK and WINDOW_UPDATE (recorded
    /// in `credits`).
    async fn recv(&mut self) -> Frame {
        loop {
            let f = self.raw().await.expect("the client closed the connection");
            match f.kind {
                SETTINGS if f.flags & ACK != 0 => {}
                WINDOW_UPDATE => {
                    *self.credits.entry(f.stream).or_default() += be32(&f.payload, 0) as u64;
                }
                _ => return f,
            }
        }
    }

    /// Waits for a SETTINGS ACK (nothing else may come first but
    /// WINDOW_UPDATE).
    async fn settings_ack(&mut self) {
        loop {
            let f = self.raw().await.expect("the client closed the connection");
            match f.kind {
                SETTINGS if f.flags & ACK != 0 => return,
                WINDOW_UPDATE => {
                    *self.credits.entry(f.stream).or_default() += be32(&f.payload, 0) as u64;
                }
                _ => panic!("unexpected {f:?}"),
            }
        }
    }

    /// Waits for the next WINDOW_UPDATE.
    async fn wait_credit(&mut self) {
        loop {
            let f = self.raw().await.expect("the client closed the connection");
            match f.kind {
                SETTINGS if f.flags & ACK != 0 => {}
                WINDOW_UPDATE => {
                    *self.credits.entry(f.stream).or_default() += be32(&f.payload, 0) as u64;
                    return;
                }
                _ => panic!("unexpected {f:?}"),
            }
        }
    }

    /// Asserts that nothing but SETTINGS ACK and WINDOW_UPDATE arrives for
    /// `ms` milliseconds.
    async fn quiet(&mut self, ms: u64) {
        let r = future::or(async { Some(self.recv().await) }, async {
            sleep(ms).await;
            None
        })
        .await;
        if let Some(f) = r {
            panic!("unexpected frame {:#x} on stream {}", f.kind, f.stream);
        }
    }

    async fn request(&mut self) -> Req {
        let f = self.recv().await;
        assert_eq!(f.kind, HEADERS, "expected HEADERS, got {f:?}");
        let end_stream = f.flags & END_STREAM != 0;
        let mut block = f.payload.clone();
        let mut frames = 1;
        let mut flags = f.flags;
        while flags & END_HEADERS == 0 {
            let c = self.recv().await;
            assert_eq!((c.kind, c.stream), (CONTINUATION, f.stream));
            block.extend_from_slice(&c.payload);
            flags = c.flags;
            frames += 1;
        }
        let fields = self.dec.decode(&block).unwrap();
        Req {
            id: f.stream,
            fields,
            end_stream,
            block_len: block.len(),
            frames,
        }
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut b = Vec::new();
        frame(&mut b, kind, flags, stream, payload);
        self.write(&b).await;
    }

    async fn write(&mut self, b: &[u8]) {
        self.io.write_all(b).await.unwrap();
    }

    async fn respond(&mut self, id: u32, status: u16, headers: &[(&str, &str)], end: bool) {
        let status = status.to_string();
        let mut block = Vec::new();
        let fields = [(":status", status.as_str())].into_iter();
        self.enc
            .encode(fields.chain(headers.iter().copied()), &mut block);
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        self.send(HEADERS, flags, id, &block).await;
    }

    async fn respond_trailers(&mut self, id: u32, fields: &[(&str, &str)]) {
        let mut block = Vec::new();
        self.enc.encode(fields.iter().copied(), &mut block);
        self.send(HEADERS, END_HEADERS | END_STREAM, id, &block)
            .await;
    }

    async fn data(&mut self, id: u32, d: &[u8], end: bool) {
        self.send(DATA, if end { END_STREAM } else { 0 }, id, d)
            .await;
    }

    async fn settings(&mut self, s: &[(u16, u32)]) {
        self.send(SETTINGS, 0, 0, &settings_payload(s)).await;
    }
}

/// A connection and the server it talks to, past the preface: the
/// client's SETTINGS and WINDOW_UPDATE are checked, the server's SETTINGS
/// (`settings`) sent.
async fn setup(opts: ConnOptions, settings: &[(u16, u32)]) -> (Connection, Peer) {
    let (a, b) = UnixStream::pair().unwrap();
    let window = opts.connection_window;
    let stream_window = opts.initial_stream_window;
    let c = Connection::handshake(a, opts).await.unwrap();
    let mut p = Peer {
        io: b,
        buf: Vec::new(),
        dec: Decoder::default(),
        enc: Encoder::default(),
        credits: BTreeMap::new(),
    };
    while p.buf.len() < PREFACE.len() {
        let mut tmp = [0u8; 64];
        let n = p.io.read(&mut tmp).await.unwrap();
        assert!(n > 0);
        p.buf.extend_from_slice(&tmp[..n]);
    }
    assert_eq!(&p.buf[..PREFACE.len()], PREFACE);
    p.buf.drain(..PREFACE.len());
    let s = p.raw().await.unwrap();
    assert_eq!((s.kind, s.flags, s.stream), (SETTINGS, 0, 0));
    let s = parse_settings(&s.payload).unwrap();
    assert!(s.contains(&(SETTINGS_ENABLE_PUSH, 0)));
    assert!(s.contains(&(SETTINGS_INITIAL_WINDOW_SIZE, stream_window)));
    if window > DEFAULT_WINDOW {
        let w = p.raw().await.unwrap();
        assert_eq!((w.kind, w.stream), (WINDOW_UPDATE, 0));
        assert_eq!(be32(&w.payload, 0), window - DEFAULT_WINDOW);
    }
    p.settings(settings).await;
    // Deterministic tests: the client has applied our SETTINGS.
    p.settings_ack().await;
    (c, p)
}

fn opts() -> ConnOptions {
    ConnOptions::default()
}

fn spawn_send(c: &Connection, req: Request) -> smol::Task<Result<(u16, Vec<u8>), Error>> {
    let c = c.clone();
    crate::rt::spawn(async move {
        let mut r = c.send(req).await?;
        let b = r.body.read_to_end(64 << 20).await?;
        Ok((r.status, b))
    })
}

#[test]
fn concurrent_streams_interleave_and_hpack_indexes_repeats() {
    run(async {
        let (c, mut p) = setup(opts(), &[]).await;
        let tasks: Vec<_> = (0..3)
            .map(|i| spawn_send(&c, get(&format!("/api/v1/obj/{i}"))))
            .collect();
        let mut reqs = Vec::new();
        for _ in 0..3 {
            reqs.push(p.request().await);
        }
        let ids: Vec<u32> = reqs.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 3, 5]);
        for r in &reqs {
            assert!(r.end_stream);
            assert_eq!(r.get(":method"), Some("GET"));
            assert_eq!(r.get(":scheme"), Some("https"));
            assert_eq!(r.get(":authority"), Some("api.example.test:6443"));
            assert_eq!(r.get("user-agent"), Some(opts().user_agent.as_str()));
            assert_eq!(r.get("accept"), Some("application/json"));
        }
        // The second and third blocks index what the first one added.
        assert!(
            reqs[1].block_len * 2 < reqs[0].block_len,
            "{} {}",
            reqs[1].block_len,
            reqs[0].block_len
        );
        let path = |id: u32| {
            reqs.iter()
                .find(|r| r.id == id)
                .unwrap()
                .get(":path")
                .unwrap()
                .to_string()
        };
        // Responses interleaved, out of order.
        p.respond(5, 200, &[("x-path", &path(5))], false).await;
        p.respond(1, 200, &[], false).await;
        p.data(1, b"one-", false).await;
        p.respond(3, 201, &[("content-type", "text/plain")], false)
            .await;
        p.data(5, b"five", true).await;
        p.data(3, b"three", false).await;
        p.data(1, b"done", true).await;
        p.data(3, b"", true).await;
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        let by_path = |i: usize| {
            let id = reqs
                .iter()
                .find(|r| r.get(":path") == Some(&format!("/api/v1/obj/{i}")))
                .unwrap()
                .id;
            match id {
                1 => (200, b"one-done".to_vec()),
                3 => (201, b"three".to_vec()),
                _ => (200, b"five".to_vec()),
            }
        };
        for (i, g) in got.into_iter().enumerate() {
            assert_eq!(g, by_path(i));
        }
        assert_eq!(c.open_streams(), 0);
        assert!(!c.is_closed());
        assert!(c.bytes_sent() > 24 && c.bytes_received() > 50);
    });
}

#[test]
fn large_request_body_waits_for_stream_and_connection_windows() {
    run(async {
        // The peer allows 1000 bytes per stream and bigger frames.
        let (c, mut p) = setup(
            opts(),
            &[
                (SETTINGS_INITIAL_WINDOW_SIZE, 1000),
                (SETTINGS_MAX_FRAME_SIZE, 32768),
            ],
        )
        .await;
        let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let t = spawn_send(&c, post("/upload", body.clone()));
        let r = p.request().await;
        assert!(!r.end_stream);
        assert_eq!(r.get("content-length"), Some("100000"));
        let mut got = Vec::new();
        // The stream window: 1000 bytes, then nothing.
        while got.len() < 1000 {
            let f = p.recv().await;
            assert_eq!((f.kind, f.stream), (DATA, 1));
            got.extend_from_slice(&f.payload);
        }
        assert_eq!(got.len(), 1000);
        p.quiet(150).await;
        // A big stream window: now the connection window (65535) binds.
        p.send(WINDOW_UPDATE, 0, 1, &200_000u32.to_be_bytes()).await;
        while got.len() < 65_535 {
            let f = p.recv().await;
            assert_eq!(f.kind, DATA);
            // 16 KiB frames, although the peer allows 32 KiB.
            assert!(f.payload.len() <= 16384);
            got.extend_from_slice(&f.payload);
        }
        assert_eq!(got.len(), 65_535);
        p.quiet(150).await;
        p.send(WINDOW_UPDATE, 0, 0, &100_000u32.to_be_bytes()).await;
        loop {
            let f = p.recv().await;
            got.extend_from_slice(&f.payload);
            if f.flags & END_STREAM != 0 {
                break;
            }
        }
        assert_eq!(got, body);
        p.respond(1, 201, &[], true).await;
        assert_eq!(t.await.unwrap(), (201, vec![]));
    });
}

#[test]
fn response_window_is_credited_as_the_reader_consumes() {
    run(async {
        let o = ConnOptions {
            initial_stream_window: 64 * 1024,
            connection_window: 128 * 1024,
            ..opts()
        };
        let (c, mut p) = setup(o, &[]).await;
        let (tx, rx) = smol::channel::unbounded::<usize>();
        let (done_tx, done_rx) = smol::channel::unbounded::<usize>();
        let c2 = c.clone();
        let reader = crate::rt::spawn(async move {
            let mut r = c2.send(get("/big")).await.unwrap();
            let mut total = 0;
            // Reads only as many chunks as it is told to.
            while let Ok(n) = rx.recv().await {
                for _ in 0..n {
                    match r.body.chunk().await.unwrap() {
                        Some(d) => total += d.len(),
                        None => return total,
                    }
                }
                done_tx.send(total).await.unwrap();
            }
            total
        });
        let r = p.request().await;
        p.respond(r.id, 200, &[], false).await;
        // Fill the stream window exactly.
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..4 {
            p.data(1, &chunk, false).await;
        }
        // Nothing read: no credit.
        p.quiet(150).await;
        assert_eq!(p.credits.get(&1), None);
        assert_eq!(p.credits.get(&0), None);
        {
            let i = c.h.0.borrow();
            assert_eq!(i.streams[&1].buffered, 64 * 1024);
        }
        // One chunk read (a quarter of the window): the stream gets it back.
        tx.send(1).await.unwrap();
        assert_eq!(done_rx.recv().await.unwrap(), 16 * 1024);
        p.quiet(100).await;
        assert_eq!(p.credits.get(&1), Some(&(16 * 1024)));
        // The connection window is credited at a quarter of 128 KiB.
        assert_eq!(p.credits.get(&0), None);
        tx.send(1).await.unwrap();
        done_rx.recv().await.unwrap();
        p.quiet(100).await;
        assert_eq!(p.credits.get(&0), Some(&(32 * 1024)));
        // Stream it through: 2 MiB, never more in flight than credited.
        let total = 2 * 1024 * 1024;
        let mut sent = 64 * 1024;
        tx.send(usize::MAX).await.unwrap();
        while sent < total {
            let window = 64 * 1024 + p.credits.get(&1).copied().unwrap_or(0) as usize;
            let conn = 128 * 1024 + p.credits.get(&0).copied().unwrap_or(0) as usize;
            let avail = window.min(conn) - sent;
            if avail == 0 {
                p.wait_credit().await;
                continue;
            }
            let n = avail.min(16 * 1024).min(total - sent);
            sent += n;
            p.data(1, &chunk[..n], sent == total).await;
        }
        assert_eq!(reader.await, total);
        assert_eq!(c.open_streams(), 0);
    });
}

#[test]
fn settings_mid_connection_window_delta_and_table_shrink() {
    run(async {
        let (c, mut p) = setup(opts(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 10)]).await;
        let t = spawn_send(&c, post("/p", vec![1u8; 100]));
        let r1 = p.request().await;
        let f = p.recv().await;
        assert_eq!((f.kind, f.payload.len()), (DATA, 10));
        p.quiet(100).await;
        // +90 on every open stream's window: the rest of the body follows.
        p.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 100)]).await;
        let f = p.recv().await;
        assert_eq!(
            (f.kind, f.payload.len(), f.flags & END_STREAM),
            (DATA, 90, END_STREAM)
        );
        p.respond(r1.id, 200, &[], true).await;
        assert_eq!(t.await.unwrap().0, 200);
        // A smaller window than what is in flight: negative, then credit.
        let t = spawn_send(&c, post("/p", vec![2u8; 150]));
        let r = p.request().await;
        let f = p.recv().await;
        assert_eq!(f.payload.len(), 100);
        p.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 50)]).await; // window now -50
        p.send(WINDOW_UPDATE, 0, r.id, &60u32.to_be_bytes()).await; // +10
        let f = p.recv().await;
        assert_eq!(f.payload.len(), 10);
        p.send(WINDOW_UPDATE, 0, r.id, &1000u32.to_be_bytes()).await;
        let f = p.recv().await;
        assert_eq!((f.payload.len(), f.flags), (40, END_STREAM));
        p.respond(r.id, 200, &[], true).await;
        t.await.unwrap();

        // The header table shrinks to 0: the next block says so first and
        // indexes nothing; the peer's decoder follows.
        let used_before = c.h.0.borrow().encoder.table_size();
        assert!(used_before > 0);
        p.settings(&[(SETTINGS_HEADER_TABLE_SIZE, 0)]).await;
        // The SETTINGS ACK proves the setting was applied.
        p.settings_ack().await;
        let t = spawn_send(&c, get("/after-shrink"));
        let f = p.recv().await;
        assert_eq!(f.kind, HEADERS);
        assert_eq!(f.payload[0], 0x20, "a size update to 0 comes first");
        let fields = p.dec.decode(&f.payload).unwrap();
        assert!(fields.contains(&(":path".into(), "/after-shrink".into())));
        assert_eq!(c.h.0.borrow().encoder.table_size(), 0);
        p.respond(f.stream, 204, &[], true).await;
        assert_eq!(t.await.unwrap().0, 204);
        // And grows back to 1000: indexing resumes within it.
        p.settings(&[(SETTINGS_HEADER_TABLE_SIZE, 1000)]).await;
        for i in 0..3 {
            let t = spawn_send(&c, get(&format!("/grow/{i}")));
            let r = p.request().await;
            assert_eq!(r.get(":path"), Some(format!("/grow/{i}").as_str()));
            p.respond(r.id, 200, &[], true).await;
            t.await.unwrap();
        }
        let size = c.h.0.borrow().encoder.table_size();
        assert!(size > 0 && size <= 1000, "{size}");
    });
}

#[test]
fn goaway_finishes_lower_streams_and_refuses_higher_ones() {
    run(async {
        let (c, mut p) = setup(opts(), &[]).await;
        let t1 = spawn_send(&c, get("/1"));
        let t3 = spawn_send(&c, get("/3"));
        let t5 = spawn_send(&c, get("/5"));
        for _ in 0..3 {
            p.request().await;
        }
        let mut g = 3u32.to_be_bytes().to_vec();
        g.extend_from_slice(&NO_ERROR.to_be_bytes());
        g.extend_from_slice(b"shutting down");
        p.send(GOAWAY, 0, 0, &g).await;
        let e = t5.await.unwrap_err();
        assert!(
            matches!(&e, Error::Unprocessed(m) if m.contains("GOAWAY") && m.contains("shutting down")),
            "{e}"
        );
        assert!(c.is_closed());
        let e = c.send(get("/new")).await.unwrap_err();
        assert!(matches!(e, Error::Unprocessed(_)), "{e}");
        // The accepted streams finish.
        p.respond(1, 200, &[], false).await;
        p.respond(3, 200, &[], true).await;
        p.data(1, b"still here", true).await;
        assert_eq!(t1.await.unwrap(), (200, b"still here".to_vec()));
        assert_eq!(t3.await.unwrap(), (200, vec![]));
        // Then the connection closes: our GOAWAY, then EOF.
        let f = p.recv().await;
        assert_eq!((f.kind, be32(&f.payload, 4)), (GOAWAY, NO_ERROR));
        assert!(p.raw().await.is_none());
        assert_eq!(c.open_streams(), 0);
    });
}

#[test]
fn refused_stream_is_unprocessed_other_resets_are_not() {
    run(async {
        let (c, mut p) = setup(opts(), &[]).await;
        let t1 = spawn_send(&c, get("/a"));
        let t3 = spawn_send(&c, get("/b"));
        p.request().await;
        p.request().await;
        p.send(RST_STREAM, 0, 1, &REFUSED_STREAM.to_be_bytes())
            .await;
        p.respond(3, 200, &[], false).await;
        p.send(RST_STREAM, 0, 3, &0x2u32.to_be_bytes()).await;
        assert!(matches!(t1.await, Err(Error::Unprocessed(m)) if m.contains("REFUSED_STREAM")));
        match t3.await {
            Err(Error::Reset { code: 2, name }) => assert_eq!(name, "INTERNAL_ERROR"),
            r => panic!("{r:?}"),
        }
        // The connection goes on; nothing reset by us.
        assert!(!c.is_closed());
        let t = spawn_send(&c, get("/c"));
        let r = p.request().await;
        assert_eq!(r.id, 5);
        p.respond(5, 200, &[], true).await;
        t.await.unwrap();
        p.quiet(50).await;
    });
}

#[test]
fn peer_closing_mid_body_fails_every_open_stream() {
    run(async {
        let (c, mut p) = setup(opts(), &[]).await;
        let c2 = c.clone();
        let done = crate::rt::spawn(async move {
            let mut r = c2.send(get("/done")).await.unwrap();
            sleep(200).await; // read after the connection died
            r.body.read_to_end(100).await
        });
        let c3 = c.clone();
        let partial = crate::rt::spawn(async move {
            let mut r = c3.send(get("/partial")).await.unwrap();
            let first = r.body.chunk().await;
            (first, r.body.chunk().await)
        });
        let waiting = spawn_send(&c, get("/waiting"));
        for _ in 0..3 {
            p.request().await;
        }
        p.respond(1, 200, &[], false).await;
        p.data(1, b"complete", true).await;
        p.respond(3, 200, &[], false).await;
        p.data(3, b"half", false).await;
        sleep(50).await;
        drop(p);
        let (first, second) = partial.await;
        assert_eq!(first.unwrap(), Some(b"half".to_vec()));
        assert!(
            matches!(&second, Err(Error::Connection(m)) if m.contains("closed by the peer")),
            "{second:?}"
        );
        assert!(matches!(waiting.await, Err(Error::Connection(_))));
        // A response that was complete stays readable.
        assert_eq!(done.await.unwrap(), b"complete");
        assert!(c.is_closed());
        assert!(matches!(
            c.send(get("/x")).await,
            Err(Error::Unprocessed(_))
        ));
    });
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_is_a_connection_error_without_panics() {
    run(async {
        // Not HTTP/2 at all.
        let (a, mut b) = UnixStream::pair().unwrap();
        let c = Connection::handshake(a, opts()).await.unwrap();
        let t = spawn_send(&c, get("/"));
        b.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let e = t.await.unwrap_err();
        assert!(
            matches!(&e, Error::Connection(_) | Error::Unprocessed(_)),
            "{e}"
        );
        assert!(c.is_closed());

        // A header block that is not HPACK: COMPRESSION_ERROR in our GOAWAY.
        let (c, mut p) = setup(opts(), &[]).await;
        let t = spawn_send(&c, get("/"));
        p.request().await;
        p.send(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        )
        .await;
        let e = t.await.unwrap_err();
        assert!(
            matches!(&e, Error::Connection(m) if m.contains("COMPRESSION_ERROR")),
            "{e}"
        );
        let f = p.recv().await;
        assert_eq!((f.kind, be32(&f.payload, 4)), (GOAWAY, COMPRESSION_ERROR));

        // Random frames after a valid start: an error or nothing, never a
        // panic; every stream ends.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..200 {
            let (c, mut p) = setup(opts(), &[]).await;
            let t = spawn_send(&c, post("/", vec![0; 100]));
            p.request().await;
            let mut junk = Vec::new();
            for _ in 0..1 + rng.next() % 4 {
                let len = (rng.next() % 40) as usize;
                let kind = (rng.next() % 11) as u8;
                let flags = rng.next() as u8;
                let stream = (rng.next() % 8) as u32;
                let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                frame(&mut junk, kind, flags, stream, &payload);
            }
            if round % 3 == 0 {
                // Raw bytes, not even frames.
                junk = (0..rng.next() % 64).map(|_| rng.next() as u8).collect();
            }
            p.write(&junk).await;
            sleep(1).await;
            drop(p);
            let _ = t.await;
            assert!(c.is_closed());
            assert_eq!(c.open_streams(), 0);
        }
    });
}

#[test]
fn pings_are_answered() {
    run(async {
        let (_c, mut p) = setup(opts(), &[]).await;
        p.send(PING, 0, 0, b"pingpong").await;
        let f = p.recv().await;
        assert_eq!(
            (f.kind, f.flags, &f.payload[..]),
            (PING, ACK, &b"pingpong"[..])
        );
        // An ACK we did not ask for is ignored.
        p.send(PING, ACK, 0, b"whatever").await;
        p.quiet(50).await;
    });
}

#[test]
fn keepalive_pings_and_closes_when_unanswered() {
    run(async {
        let o = ConnOptions {
            ping_idle: Duration::from_millis(100),
            ping_timeout: Duration::from_millis(150),
            ..opts()
        };
        let (c, mut p) = setup(o, &[]).await;
        // Answered: the connection stays.
        for _ in 0..3 {
            let f = p.recv().await;
            assert_eq!((f.kind, f.flags), (PING, 0));
            p.send(PING, ACK, 0, &f.payload).await;
        }
        assert!(!c.is_closed());
        // Unanswered: closed after the timeout; a waiting request fails.
        let t = spawn_send(&c, get("/slow"));
        p.request().await;
        let f = p.recv().await;
        assert_eq!(f.kind, PING);
        let start = Instant::now();
        let e = t.await.unwrap_err();
        assert!(
            matches!(&e, Error::Connection(m) if m.contains("no answer to PING")),
            "{e}"
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(c.is_closed());
    });
}

#[test]
fn dropping_a_body_or_a_pending_send_resets_the_stream() {
    run(async {
        let (c, mut p) = setup(opts(), &[]).await;
        let c2 = c.clone();
        let watch = crate::rt::spawn(async move {
            let mut r = c2.send(get("/watch")).await.unwrap();
            let first = r.body.chunk().await.unwrap();
            (first, r)
        });
        let r = p.request().await;
        p.respond(r.id, 200, &[], false).await;
        p.data(r.id, b"event 1", false).await;
        let (first, resp) = watch.await;
        assert_eq!(first, Some(b"event 1".to_vec()));
        assert_eq!(c.open_streams(), 1);
        // More data buffered but never read: credited back on drop.
        p.data(r.id, &[0; 1000], false).await;
        sleep(20).await;
        drop(resp);
        let f = p.recv().await;
        assert_eq!(
            (f.kind, f.stream, be32(&f.payload, 0)),
            (RST_STREAM, 1, CANCEL)
        );
        assert_eq!(c.open_streams(), 0);
        // A send dropped while waiting for its response.
        let c3 = c.clone();
        let pending = crate::rt::spawn(async move { c3.send(get("/slow")).await.map(|_| ()) });
        let r = p.request().await;
        drop(pending);
        let f = p.recv().await;
        assert_eq!(
            (f.kind, f.stream, be32(&f.payload, 0)),
            (RST_STREAM, r.id, CANCEL)
        );
        // Frames the server had in flight for it are ignored.
        p.respond(r.id, 200, &[], false).await;
        p.data(r.id, b"late", true).await;
        let t = spawn_send(&c, get("/next"));
        let r = p.request().await;
        p.respond(r.id, 200, &[], true).await;
        assert_eq!(t.await.unwrap().0, 200);
        assert_eq!(c.open_streams(), 0);
        assert!(!c.is_closed());
    });
}

#[test]
fn max_concurrent_streams_is_respected() {
    run(async {
        let (c, mut p) = setup(opts(), &[(SETTINGS_MAX_CONCURRENT_STREAMS, 2)]).await;
        let tasks: Vec<_> = (0..5)
            .map(|i| spawn_send(&c, get(&format!("/{i}"))))
            .collect();
        let a = p.request().await;
        let b = p.request().await;
        p.quiet(100).await;
        p.respond(a.id, 200, &[], true).await;
        let c3 = p.request().await;
        p.quiet(50).await;
        p.respond(b.id, 200, &[], true).await;
        p.respond(c3.id, 200, &[], true).await;
        let d = p.request().await;
        let e = p.request().await;
        p.quiet(50).await;
        p.respond(d.id, 200, &[], true).await;
        p.respond(e.id, 200, &[], true).await;
        for t in tasks {
            assert_eq!(t.await.unwrap().0, 200);
        }
    });
}

#[test]
fn large_header_blocks_use_continuation_both_ways() {
    run(async {
        let (c, mut p) = setup(opts(), &[]).await;
        let mut req = get("/big-headers");
        // Incompressible (Huffman longer than raw): 40 KiB on the wire.
        let big: String = (0..40_000).map(|i| ['~', '|', '{', '}'][i % 4]).collect();
        req.headers.push(("x-big".into(), big.clone()));
        let t = spawn_send(&c, req);
        let r = p.request().await;
        assert_eq!(r.frames, 3, "HEADERS + 2 CONTINUATION");
        assert_eq!(r.get("x-big"), Some(big.as_str()));
        // The response's block in three pieces.
        let mut block = Vec::new();
        p.enc
            .encode([(":status", "200"), ("x-reply", "yes")], &mut block);
        let (a, rest) = block.split_at(2);
        let (b, d) = rest.split_at(3);
        p.send(HEADERS, 0, r.id, a).await;
        p.send(CONTINUATION, 0, r.id, b).await;
        p.send(CONTINUATION, END_HEADERS, r.id, d).await;
        p.data(r.id, b"ok", true).await;
        assert_eq!(t.await.unwrap(), (200, b"ok".to_vec()));
        // A frame between HEADERS and CONTINUATION is a connection error.
        let t = spawn_send(&c, get("/x"));
        let r = p.request().await;
        p.send(HEADERS, 0, r.id, &[0x88]).await;
        p.send(PING, 0, 0, b"12345678").await;
        assert!(
            matches!(t.await, Err(Error::Connection(m)) if m.contains("CONTINUATION") || m.contains("continues"))
        );
    });
}

#[test]
fn informational_responses_trailers_and_early_responses() {
    run(async {
        let (c, mut p) = setup(opts(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 100)]).await;
        let c2 = c.clone();
        let t = crate::rt::spawn(async move {
            let mut r = c2.send(get("/t")).await.unwrap();
            let b = r.body.read_to_end(100).await.unwrap();
            (
                r.status,
                r.header("X-A").map(String::from),
                b,
                r.body.trailers().to_vec(),
            )
        });
        let r = p.request().await;
        p.respond(r.id, 103, &[("link", "</x>")], false).await;
        p.respond(r.id, 200, &[("x-a", "1")], false).await;
        p.data(r.id, b"body", false).await;
        p.respond_trailers(r.id, &[("grpc-status", "0")]).await;
        let (status, xa, body, trailers) = t.await;
        assert_eq!(
            (status, xa.as_deref(), &body[..]),
            (200, Some("1"), &b"body"[..])
        );
        assert_eq!(trailers, vec![("grpc-status".to_string(), "0".to_string())]);
        // The server answers before reading the whole body: we stop
        // sending and reset the stream, and the response is delivered.
        let t = spawn_send(&c, post("/upload", vec![0; 1000]));
        let r = p.request().await;
        let f = p.recv().await;
        assert_eq!(f.payload.len(), 100);
        p.respond(r.id, 413, &[], true).await;
        p.send(WINDOW_UPDATE, 0, r.id, &1000u32.to_be_bytes()).await;
        assert_eq!(t.await.unwrap(), (413, vec![]));
        let f = p.recv().await;
        assert_eq!((f.kind, be32(&f.payload, 0)), (RST_STREAM, CANCEL));
        // Malformed response headers: a stream error, not a connection one.
        let t = spawn_send(&c, get("/bad"));
        let r = p.request().await;
        let mut block = Vec::new();
        p.enc.encode([("x-no-status", "1")], &mut block);
        p.send(HEADERS, END_HEADERS, r.id, &block).await;
        assert!(matches!(t.await, Err(Error::Protocol(m)) if m.contains(":status")));
        let f = p.recv().await;
        assert_eq!((f.kind, be32(&f.payload, 0)), (RST_STREAM, PROTOCOL_ERROR));
        assert!(!c.is_closed());
        // A task dropped while it reads: the stream is reset.
        let t = spawn_send(&c, get("/huge"));
        let r = p.request().await;
        p.respond(r.id, 200, &[], false).await;
        p.data(r.id, &[1; 60], false).await;
        sleep(20).await;
        drop(t);
        let f = p.recv().await;
        assert_eq!(
            (f.kind, f.stream, be32(&f.payload, 0)),
            (RST_STREAM, r.id, CANCEL)
        );
        // Too large a body for the caller: TooLarge, and the stream reset.
        let c4 = c.clone();
        let t = crate::rt::spawn(async move {
            let mut r = c4.send(get("/huge2")).await.unwrap();
            r.body.read_to_end(50).await
        });
        let r = p.request().await;
        p.respond(r.id, 200, &[], false).await;
        p.data(r.id, &[1; 60], false).await;
        assert_eq!(t.await, Err(Error::TooLarge(50)));
        let f = p.recv().await;
        assert_eq!(
            (f.kind, f.stream, be32(&f.payload, 0)),
            (RST_STREAM, r.id, CANCEL)
        );
        assert!(!c.is_closed());
        assert_eq!(c.open_streams(), 0);
    });
}

#[test]
fn stream_ids_run_out() {
    run(async {
        let (c, mut p) = setup(opts(), &[]).await;
        c.set_next_stream_id(MAX_STREAM_ID);
        let t = spawn_send(&c, get("/last"));
        let r = p.request().await;
        assert_eq!(r.id, MAX_STREAM_ID);
        assert!(
            matches!(c.send(get("/none")).await, Err(Error::Unprocessed(m)) if m.contains("exhausted"))
        );
        assert!(c.is_closed());
        p.respond(r.id, 200, &[], true).await;
        assert_eq!(t.await.unwrap().0, 200);
        // The last stream done, the connection closes.
        let f = p.recv().await;
        assert_eq!(f.kind, GOAWAY);
    });
}

#[test]
fn close_fails_streams_unwritten_requests_are_unprocessed() {
    run(async {
        // A peer that stops reading: the writer blocks on a big body, and
        // the next request's HEADERS stay in our buffer.
        let (c, mut p) = setup(
            opts(),
            &[
                (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
                (SETTINGS_MAX_FRAME_SIZE, MAX_MAX_FRAME),
            ],
        )
        .await;
        p.send(
            WINDOW_UPDATE,
            0,
            0,
            &(MAX_WINDOW - DEFAULT_WINDOW).to_be_bytes(),
        )
        .await;
        let big = spawn_send(&c, post("/big", vec![0; 8 << 20]));
        // Until the writer is stuck: nothing written for 50 ms, and the
        // body waits on a full buffer.
        let mut last = 0;
        loop {
            sleep(50).await;
            let i = c.h.0.borrow();
            if i.written == last && i.out.len() >= OUT_HIGH_WATER {
                break;
            }
            last = i.written;
        }
        let queued = spawn_send(&c, get("/queued"));
        while !c.h.0.borrow().streams.contains_key(&3) {
            sleep(1).await;
        }
        {
            let i = c.h.0.borrow();
            assert!(i.streams[&3].headers_end > i.taken);
        }
        c.close();
        assert!(c.is_closed());
        assert!(matches!(queued.await, Err(Error::Unprocessed(_))));
        assert!(
            matches!(big.await, Err(Error::Connection(m)) if m.contains("closed by the client"))
        );
        assert!(matches!(
            c.send(get("/after")).await,
            Err(Error::Unprocessed(_))
        ));
        // Dropping every handle closes the connection (EOF for the peer).
        drop(c);
        let mut n = 0;
        while p.raw().await.is_some() {
            n += 1;
        }
        assert!(n > 0);
    });
}

#[test]
fn dropping_every_handle_sends_goaway() {
    run(async {
        let (c, mut p) = setup(opts(), &[]).await;
        drop(c);
        let f = p.recv().await;
        assert_eq!((f.kind, be32(&f.payload, 4)), (GOAWAY, NO_ERROR));
        assert!(p.raw().await.is_none());
    });
}

#[test]
fn flow_control_violations_by_the_peer() {
    run(async {
        let o = ConnOptions {
            initial_stream_window: 100,
            ..opts()
        };
        let (c, mut p) = setup(o, &[]).await;
        let t = spawn_send(&c, get("/w"));
        let r = p.request().await;
        p.respond(r.id, 200, &[], false).await;
        p.data(r.id, &[0; 101], false).await;
        let f = p.recv().await;
        assert_eq!(
            (f.kind, be32(&f.payload, 0)),
            (RST_STREAM, FLOW_CONTROL_ERROR)
        );
        assert!(matches!(t.await, Err(Error::Protocol(m)) if m.contains("window")));
        // A frame on a stream we never opened: connection error.
        p.send(WINDOW_UPDATE, 0, 9, &1u32.to_be_bytes()).await;
        let f = p.recv().await;
        assert_eq!((f.kind, be32(&f.payload, 4)), (GOAWAY, PROTOCOL_ERROR));
        assert!(c.is_closed());
    });
}

#[test]
fn request_validation() {
    let f = request_fields(
        &Request {
            headers: vec![
                ("Connection".into(), "keep-alive".into()),
                ("Host".into(), "x".into()),
                ("TE".into(), "gzip".into()),
                ("User-Agent".into(), "mine".into()),
                ("Authorization".into(), "Bearer t".into()),
            ],
            ..post("/x", b"abc".to_vec())
        },
        "default-ua",
    )
    .unwrap();
    let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            ":method",
            ":scheme",
            ":authority",
            ":path",
            "user-agent",
            "authorization",
            "content-length"
        ]
    );
    assert_eq!(f[4].1, "mine");
    assert_eq!(f[6].1, "3");
    assert!(request_fields(&get("no-slash"), "").is_err());
    let mut r = get("/");
    r.headers.push(("x".into(), "a\r\nb".into()));
    assert!(request_fields(&r, "").is_err());
}
