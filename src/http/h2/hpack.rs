//! HPACK (RFC 7541): the decoder with Huffman strings and the dynamic
//! table, and an encoder that indexes repeated fields in its own dynamic
//! table, never indexes credentials, and Huffman-codes strings when that is
//! shorter.

use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::sync::OnceLock;

/// SETTINGS_HEADER_TABLE_SIZE: the protocol default, which is also what we
/// advertise for our decoder and the most our encoder uses (more table
/// buys little for a client's requests and costs memory per connection).
pub const HEADER_TABLE_SIZE: usize = 4_096;

/// The static table (Appendix A), 1-based in the protocol.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// A dynamic table (§2.3.2, §4): the decoder's and the encoder's share this
/// code, so the encoder evicts exactly as the peer's decoder will.
#[derive(Debug)]
struct Table {
    /// Newest first.
    entries: VecDeque<(String, String)>,
    size: usize,
    max_size: usize,
}

impl Table {
    fn new(max_size: usize) -> Self {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// Index `i` of the combined address space (§2.3.3), 1-based.
    fn get(&self, i: usize) -> Option<(&str, &str)> {
        if i == 0 {
            return None;
        }
        if let Some((n, v)) = STATIC_TABLE.get(i - 1) {
            return Some((n, v));
        }
        self.entries
            .get(i - 1 - STATIC_TABLE.len())
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    fn insert(&mut self, name: String, value: String) {
        let s = entry_size(&name, &value);
        self.evict(s);
        // An entry larger than the table empties it and is not added (§4.4).
        if s <= self.max_size {
            self.size += s;
            self.entries.push_front((name, value));
        }
    }

    fn set_max(&mut self, n: usize) {
        self.max_size = n;
        self.evict(0);
    }

    /// Evicts the oldest entries until `extra` more bytes fit.
    fn evict(&mut self, extra: usize) {
        while self.size + extra > self.max_size {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// An HPACK decoder with its dynamic table.
pub struct Decoder {
    table: Table,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: Table::new(HEADER_TABLE_SIZE),
        }
    }
}

fn entry_size(n: &str, v: &str) -> usize {
    n.len() + v.len() + 32
}

impl Decoder {
    /// Decodes one complete header block into (name, value) pairs.
    pub fn decode(&mut self, b: &[u8]) -> Result<Vec<(String, String)>> {
        Ok(self.decode_limited(b, usize::MAX)?.0)
    }

    /// Decodes one header block, keeping at most `max_list` bytes of fields
    /// (counted as in SETTINGS_MAX_HEADER_LIST_SIZE: name + value + 32).
    /// Past the limit the block is still decoded, so that the dynamic table
    /// stays in step with the peer's encoder, but its fields are dropped and
    /// the second value is true: a stream error, not a connection error.
    pub fn decode_limited(
        &mut self,
        mut b: &[u8],
        max_list: usize,
    ) -> Result<(Vec<(String, String)>, bool)> {
        let mut out = Vec::new();
        let mut list_size = 0usize;
        let mut over = false;
        let mut size_update_allowed = true;
        while let Some(&first) = b.first() {
            let field = if first & 0x80 != 0 {
                // Indexed Header Field.
                let (i, rest) = decode_int(b, 7)?;
                b = rest;
                self.lookup(i)?
            } else if first & 0xc0 == 0x40 {
                // Literal with Incremental Indexing.
                let (name, value, rest) = self.literal(b, 6)?;
                b = rest;
                self.table.insert(name.clone(), value.clone());
                (name, value)
            } else if first & 0xe0 == 0x20 {
                // Dynamic Table Size Update: only at the block's start.
                if !size_update_allowed {
                    bail!("HPACK: table size update after a header field");
                }
                let (n, rest) = decode_int(b, 5)?;
                b = rest;
                if n > HEADER_TABLE_SIZE {
                    bail!("HPACK: table size {n} above our limit {HEADER_TABLE_SIZE}");
                }
                self.table.set_max(n);
                continue;
            } else {
                // Literal without Indexing (0000) or Never Indexed (0001).
                let (name, value, rest) = self.literal(b, 4)?;
                b = rest;
                (name, value)
            };
            size_update_allowed = false;
            list_size = list_size.saturating_add(entry_size(&field.0, &field.1));
            if list_size > max_list {
                over = true;
                out = Vec::new();
            } else {
                out.push(field);
            }
        }
        Ok((out, over))
    }

    fn literal<'a>(&self, b: &'a [u8], prefix: u8) -> Result<(String, String, &'a [u8])> {
        let (i, b) = decode_int(b, prefix)?;
        let (name, b) = if i == 0 {
            decode_string(b)?
        } else {
            (self.lookup(i)?.0, b)
        };
        let (value, b) = decode_string(b)?;
        Ok((name, value, b))
    }

    fn lookup(&self, i: usize) -> Result<(String, String)> {
        if i == 0 {
            bail!("HPACK: index 0");
        }
        self.table
            .get(i)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .with_context(|| format!("HPACK: index {i} beyond the dynamic table"))
    }
}

/// An HPACK encoder with its dynamic table. Which representation a field
/// gets (§6):
/// - a static or dynamic table entry with the same name and value: indexed
///   (one or two bytes);
/// - `authorization`, `proxy-authorization`, `cookie`: literal never
///   indexed, so neither our table nor an intermediary's holds a secret
///   (§7.1.3);
/// - fields whose values rarely repeat (`content-length`, validators) and
///   entries larger than a quarter of the table: literal without indexing,
///   so they do not evict the useful entries;
/// - everything else (`:authority`, `:path`, `user-agent`, `accept`,
///   `content-type`, ...): literal with incremental indexing, so the next
///   request with the same field sends an index.
///
/// Names are taken by index when the static or dynamic table has them;
/// strings are Huffman-coded when that is shorter.
#[derive(Debug)]
pub struct Encoder {
    table: Table,
    /// Table size updates owed at the start of the next block: the smallest
    /// size since the last block, then the final one (§4.2).
    pending: Option<(usize, usize)>,
    huffman: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            table: Table::new(HEADER_TABLE_SIZE),
            pending: None,
            huffman: true,
        }
    }
}

impl Encoder {
    /// Huffman-codes strings when that is shorter (the default).
    pub fn set_huffman(&mut self, on: bool) {
        self.huffman = on;
    }

    /// Applies the peer's SETTINGS_HEADER_TABLE_SIZE. We use at most
    /// [`HEADER_TABLE_SIZE`], and signal the size we use at the start of the
    /// next block even when it does not change, so a decoder that took the
    /// new setting as its current size cannot drift from our table.
    pub fn set_max_table_size(&mut self, peer: usize) {
        let n = peer.min(HEADER_TABLE_SIZE);
        let min = self.pending.map_or(n, |(m, _)| m.min(n));
        self.pending = Some((min, n));
    }

    /// The dynamic table's current size in bytes (§4.1).
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Encodes one header block (names must be lower-case) onto `out`.
    pub fn encode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
        out: &mut Vec<u8>,
    ) {
        if let Some((min, fin)) = self.pending.take() {
            // The smallest size matters only when it evicted (§4.2).
            if min < fin && min < self.table.max_size {
                encode_int(out, 5, 0x20, min);
                self.table.set_max(min);
            }
            encode_int(out, 5, 0x20, fin);
            self.table.set_max(fin);
        }
        for (name, value) in fields {
            self.encode_field(name, value, out);
        }
    }

    fn encode_field(&mut self, name: &str, value: &str, out: &mut Vec<u8>) {
        let sensitive = matches!(name, "authorization" | "proxy-authorization" | "cookie");
        let (exact, name_index) = self.find(name, value);
        if let (Some(i), false) = (exact, sensitive) {
            encode_int(out, 7, 0x80, i);
            return;
        }
        let index = !sensitive
            && !matches!(
                name,
                "content-length" | "if-none-match" | "if-match" | "if-modified-since" | "etag"
            )
            && entry_size(name, value) <= self.table.max_size / 4;
        let (prefix, first) = match (sensitive, index) {
            (true, _) => (4, 0x10),
            (false, true) => (6, 0x40),
            (false, false) => (4, 0x00),
        };
        encode_int(out, prefix, first, name_index.unwrap_or(0));
        if name_index.is_none() {
            self.string(name, out);
        }
        self.string(value, out);
        if index {
            self.table.insert(name.to_string(), value.to_string());
        }
    }

    /// The index of an entry with this name and value, and of one with this
    /// name; the static table first (its indexes never move).
    fn find(&self, name: &str, value: &str) -> (Option<usize>, Option<usize>) {
        let mut by_name = None;
        let dynamic = self
            .table
            .entries
            .iter()
            .enumerate()
            .map(|(i, (n, v))| (i + STATIC_TABLE.len() + 1, n.as_str(), v.as_str()));
        let all = STATIC_TABLE
            .iter()
            .enumerate()
            .map(|(i, (n, v))| (i + 1, *n, *v))
            .chain(dynamic);
        for (i, n, v) in all {
            if n == name {
                if v == value {
                    return (Some(i), Some(i));
                }
                by_name.get_or_insert(i);
            }
        }
        (None, by_name)
    }

    fn string(&self, s: &str, out: &mut Vec<u8>) {
        if self.huffman {
            let n = huffman_len(s.as_bytes());
            if n < s.len() {
                encode_int(out, 7, 0x80, n);
                huffman_encode(s.as_bytes(), out);
                return;
            }
        }
        encode_int(out, 7, 0, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix; `first` holds the bits
/// above the prefix.
pub fn encode_int(out: &mut Vec<u8>, n: u8, first: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// "Literal Header Field without Indexing — New Name", raw strings: what
/// the one-request client sends (no table state to keep).
pub fn encode_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    encode_int(out, 7, 0, name.len());
    out.extend_from_slice(name.as_bytes());
    encode_int(out, 7, 0, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// RFC 7541 §5.1: an integer with an `n`-bit prefix.
fn decode_int(b: &[u8], n: u8) -> Result<(usize, &[u8])> {
    let Some((&first, mut rest)) = b.split_first() else {
        bail!("HPACK: truncated integer");
    };
    let max = (1usize << n) - 1;
    let mut v = first as usize & max;
    if v < max {
        return Ok((v, rest));
    }
    let mut shift = 0;
    loop {
        let Some((&c, r)) = rest.split_first() else {
            bail!("HPACK: truncated integer");
        };
        rest = r;
        if shift > 28 {
            bail!("HPACK: integer overflow");
        }
        v += ((c & 0x7f) as usize) << shift;
        shift += 7;
        if c & 0x80 == 0 {
            return Ok((v, rest));
        }
    }
}

/// RFC 7541 §5.2: a string literal, raw or Huffman-coded.
fn decode_string(b: &[u8]) -> Result<(String, &[u8])> {
    let huffman = b.first().is_some_and(|c| c & 0x80 != 0);
    let (len, rest) = decode_int(b, 7)?;
    if len > rest.len() {
        bail!("HPACK: string of {len} bytes, {} left", rest.len());
    }
    let (s, rest) = rest.split_at(len);
    let bytes = if huffman {
        huffman_decode(s)?
    } else {
        s.to_vec()
    };
    // Header values may be any octets; keep them readable.
    let s = String::from_utf8_lossy(&bytes).into_owned();
    Ok((s, rest))
}

/// Code lengths of the Huffman code (RFC 7541 Appendix B) for symbols
/// 0..=255; EOS (256) is 30 bits. The code is canonical: codes follow from
/// the lengths (ordered by length, then symbol), so the code values need
/// not be stored.
const HUFFMAN_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
];
const EOS: u16 = 256;
const MAX_CODE_LEN: usize = 30;

/// Per length: how many codes, and the symbols in canonical order; and
/// each byte's code, for encoding.
struct Canonical {
    count: [u16; MAX_CODE_LEN + 1],
    symbols: Vec<u16>,
    codes: [u32; 256],
}

fn canonical() -> &'static Canonical {
    static C: OnceLock<Canonical> = OnceLock::new();
    C.get_or_init(|| {
        let len = |s: u16| {
            if s == EOS {
                MAX_CODE_LEN as u8
            } else {
                HUFFMAN_LENGTHS[s as usize]
            }
        };
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|&s| (len(s), s));
        let mut count = [0u16; MAX_CODE_LEN + 1];
        for s in 0..=EOS {
            count[len(s) as usize] += 1;
        }
        // Canonical codes: consecutive within a length, shifted left when
        // the length grows.
        let mut codes = [0u32; 256];
        let (mut code, mut prev) = (0u32, len(symbols[0]));
        for &s in &symbols {
            code <<= len(s) - prev;
            prev = len(s);
            if s != EOS {
                codes[s as usize] = code;
            }
            code += 1;
        }
        Canonical {
            count,
            symbols,
            codes,
        }
    })
}

/// Decodes a Huffman-coded string (RFC 7541 §5.2): padding must be fewer
/// than 8 bits, all ones; EOS inside the string is an error.
pub fn huffman_decode(input: &[u8]) -> Result<Vec<u8>> {
    let c = canonical();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    // Canonical decoding state (as zlib's puff.c): `code` holds the bits
    // read for the current symbol, `first` the first code of this length,
    // `index` the symbols of shorter lengths.
    let (mut code, mut first, mut index, mut len) = (0u32, 0u32, 0usize, 0usize);
    let mut all_ones = true;
    for byte in input {
        for i in (0..8).rev() {
            let bit = (byte >> i) as u32 & 1;
            code |= bit;
            all_ones &= bit == 1;
            len += 1;
            let count = c.count[len] as u32;
            if code < first + count {
                let sym = c.symbols[index + (code - first) as usize];
                if sym == EOS {
                    bail!("HPACK: EOS symbol inside a Huffman string");
                }
                out.push(sym as u8);
                (code, first, index, len) = (0, 0, 0, 0);
                all_ones = true;
                continue;
            }
            index += count as usize;
            first = (first + count) << 1;
            code <<= 1;
            if len >= MAX_CODE_LEN {
                bail!("HPACK: invalid Huffman code");
            }
        }
    }
    if len > 7 || !all_ones {
        bail!("HPACK: invalid Huffman padding");
    }
    Ok(out)
}
/// The length of `s` Huffman-coded, in bytes.
pub fn huffman_len(s: &[u8]) -> usize {
    let bits: usize = s
        .iter()
        .map(|&b| HUFFMAN_LENGTHS[b as usize] as usize)
        .sum();
    bits.div_ceil(8)
}

/// Appends `s` Huffman-coded, padded with the EOS prefix (ones).
pub fn huffman_encode(s: &[u8], out: &mut Vec<u8>) {
    let c = canonical();
    // Codes are at most 30 bits: a 64-bit accumulator never holds more
    // than 7 + 30 bits between flushes.
    let (mut acc, mut nbits) = (0u64, 0u32);
    for &b in s {
        let len = HUFFMAN_LENGTHS[b as usize] as u32;
        acc = (acc << len) | c.codes[b as usize] as u64;
        nbits += len;
        while nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
        }
    }
    if nbits > 0 {
        let pad = 8 - nbits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn huffman_rfc_vectors() {
        // RFC 7541 Appendix C.4 and C.6.
        for (h, s) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("9bd9 ab", "gzip"),
            (
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ] {
            assert_eq!(huffman_decode(&hex(h)).unwrap(), s.as_bytes(), "{s}");
        }
        assert_eq!(huffman_decode(&[]).unwrap(), b"");
    }

    #[test]
    fn huffman_code_is_complete_and_long_codes_decode() {
        // Kraft equality: the lengths describe a complete prefix code.
        let total: u64 = HUFFMAN_LENGTHS
            .iter()
            .map(|&l| 1u64 << (30 - l))
            .sum::<u64>()
            + 1;
        assert_eq!(total, 1 << 30);
        // Symbol 10 ('\n') has a 30-bit code 0x3ffffffc: with two ones of
        // padding it fills 4 bytes.
        assert_eq!(huffman_decode(&hex("ffff fff3")).unwrap(), b"\n");
        // Symbol 0: 13 bits 0x1ff8, padded with three ones.
        assert_eq!(huffman_decode(&hex("ffc7")).unwrap(), b"\0");
    }

    #[test]
    fn huffman_rejects_bad_padding_and_eos() {
        // 'a' is 00011 (5 bits); padding with zeros is invalid.
        assert!(huffman_decode(&[0b0001_1000]).is_err());
        assert!(huffman_decode(&[0b0001_1111]).is_ok());
        // A full byte of ones is more than 7 bits of padding.
        assert!(huffman_decode(&[0b0001_1111, 0xff]).is_err());
        // EOS (30 ones) inside the string.
        assert!(huffman_decode(&hex("ffff ffff")).is_err());
    }

    #[test]
    fn integers() {
        // RFC 7541 C.1.
        let mut b = Vec::new();
        encode_int(&mut b, 5, 0, 10);
        assert_eq!(b, [10]);
        b.clear();
        encode_int(&mut b, 5, 0, 1337);
        assert_eq!(b, [31, 154, 10]);
        assert_eq!(
            decode_int(&[31, 154, 10, 7], 5).unwrap(),
            (1337, &[7u8][..])
        );
        assert_eq!(decode_int(&[42], 8).unwrap().0, 42);
        assert!(decode_int(&[31, 154], 5).is_err());
        assert!(decode_int(&[31, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 5).is_err());
    }

    #[test]
    fn hpack_requests_without_huffman_rfc_c3() {
        let mut d = Decoder::default();
        let h = d
            .decode(&hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"))
            .unwrap();
        assert_eq!(
            h,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(d.table.size, 57);
        let h = d
            .decode(&hex("8286 84be 5808 6e6f 2d63 6163 6865"))
            .unwrap();
        assert_eq!(h[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(h[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(d.table.size, 110);
        let h = d
            .decode(&hex(
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ))
            .unwrap();
        assert_eq!(h[2], (":path".into(), "/index.html".into()));
        assert_eq!(h[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(h[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.table.size, 164);
    }

    #[test]
    fn hpack_responses_with_huffman_and_eviction_rfc_c6() {
        let mut d = Decoder::default();
        // The RFC's examples use a 256-byte table.
        d.decode(&[0x3f, 0xe1, 0x01]).unwrap();
        assert_eq!(d.table.max_size, 256);
        let h = d
            .decode(&hex(
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ))
            .unwrap();
        assert_eq!(
            h,
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(d.table.size, 222);
        let h = d.decode(&hex("4883 640e ff c1c0 bf")).unwrap();
        assert_eq!(h[0], (":status".into(), "307".into()));
        assert_eq!(d.table.size, 222);
        // ":status: 302" was evicted.
        assert_eq!(d.table.entries.len(), 4);
        let h = d
            .decode(&hex(
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ))
            .unwrap();
        assert_eq!(h[0], (":status".into(), "200".into()));
        assert_eq!(h[4], ("content-encoding".into(), "gzip".into()));
        assert_eq!(
            h[5].1,
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
        );
        assert_eq!(d.table.size, 215);
    }

    #[test]
    fn hpack_errors() {
        let mut d = Decoder::default();
        assert!(d.decode(&[0x80]).is_err()); // index 0
        assert!(d.decode(&[0xbe]).is_err()); // dynamic index, empty table
        assert!(d.decode(&[0x3f, 0xe2, 0x1f]).is_err()); // size 4097 > 4096
        assert!(d.decode(&[0x82, 0x20]).is_err()); // size update after a field
        assert!(d.decode(&[0x00, 0x05, b'a']).is_err()); // short string

        // Never-indexed literal with a static name.
        let h = d.decode(&[0x14, 0x01, b'/']).unwrap();
        assert_eq!(h, pairs(&[(":path", "/")]));
        assert!(d.table.entries.is_empty());
    }

    #[test]
    fn hpack_responses_without_huffman_rfc_c5() {
        let mut d = Decoder::default();
        d.decode(&[0x3f, 0xe1, 0x01]).unwrap();
        let h = d
            .decode(&hex(
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            ))
            .unwrap();
        assert_eq!(
            h,
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(d.table.size, 222);
        let h = d.decode(&hex("4803 3330 37c1 c0bf")).unwrap();
        assert_eq!(h[0], (":status".into(), "307".into()));
        assert_eq!(h[3], ("location".into(), "https://www.example.com".into()));
        assert_eq!(d.table.size, 222);
        let h = d
            .decode(&hex(
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
            ))
            .unwrap();
        assert_eq!(h.len(), 6);
        assert_eq!(
            h[2],
            ("date".into(), "Mon, 21 Oct 2013 20:13:22 GMT".into())
        );
        assert_eq!(h[4], ("content-encoding".into(), "gzip".into()));
        assert_eq!(d.table.size, 215);
        assert_eq!(d.table.entries.len(), 3);
    }

    fn encode(e: &mut Encoder, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        e.encode(fields.iter().copied(), &mut b);
        b
    }

    #[test]
    fn encoder_reproduces_rfc_c3_and_c4() {
        let reqs: [&[(&str, &str)]; 3] = [
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ],
        ];
        // C.3: without Huffman.
        let mut e = Encoder::default();
        e.set_huffman(false);
        let want = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ];
        for (r, w) in reqs.iter().zip(want) {
            assert_eq!(encode(&mut e, r), hex(w));
        }
        assert_eq!(e.table_size(), 164);
        // C.4: with Huffman; the decoder reads it back.
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let want = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        for (r, w) in reqs.iter().zip(want) {
            let b = encode(&mut e, r);
            assert_eq!(b, hex(w));
            let got = d.decode(&b).unwrap();
            assert_eq!(got, pairs(r));
        }
        assert_eq!(d.table.size, 164);
    }

    #[test]
    fn huffman_encoding_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut b = Vec::new();
        huffman_encode(&all, &mut b);
        assert_eq!(b.len(), huffman_len(&all));
        assert_eq!(huffman_decode(&b).unwrap(), all);
        let mut b = Vec::new();
        huffman_encode(b"www.example.com", &mut b);
        assert_eq!(b, hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
        for s in [
            "",
            "a",
            "no-cache",
            "/api/v1/namespaces/default/pods?watch=1",
        ] {
            let mut b = Vec::new();
            huffman_encode(s.as_bytes(), &mut b);
            assert_eq!(huffman_decode(&b).unwrap(), s.as_bytes(), "{s}");
        }
    }

    #[test]
    fn credentials_are_never_indexed_and_repeats_are() {
        let mut e = Encoder::default();
        let f = [
            (":method", "GET"),
            ("authorization", "Bearer secret"),
            ("cookie", "a=b"),
            ("user-agent", "picolet/0.1.0"),
            ("content-length", "12"),
        ];
        let b1 = encode(&mut e, &f);
        // Never indexed, with the static table's name index (§6.2.3).
        assert_eq!(b1[1], 0x1f);
        assert_eq!(b1[2], 23 - 15);
        let b2 = encode(&mut e, &f);
        // Only user-agent was indexed.
        assert_eq!(e.table.entries.len(), 1);
        assert!(b2.len() < b1.len());
        let mut d = Decoder::default();
        assert_eq!(d.decode(&b1).unwrap(), pairs(&f));
        assert_eq!(d.decode(&b2).unwrap(), pairs(&f));
        assert_eq!(d.table.entries, e.table.entries);
        // The third time user-agent is one byte: 0xbe (index 62).
        let b3 = encode(&mut e, &[("user-agent", "picolet/0.1.0")]);
        assert_eq!(b3, [0xbe]);
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
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn encoder_decoder_round_trip_with_evictions_and_size_changes() {
        let names = [
            ":authority",
            ":path",
            ":method",
            "user-agent",
            "accept",
            "content-type",
            "authorization",
            "x-custom",
            "x-Ünïcödé-free-name",
            "content-length",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let mut evictions = 0;
        for block in 0..2000 {
            // Table size changes, as the peer's SETTINGS would bring them,
            // sometimes two between blocks (smallest, then final).
            if block % 97 == 0 {
                let sizes = [0, 64, 256, 1000, 4096, 8192];
                e.set_max_table_size(sizes[rng.below(sizes.len())]);
                if rng.below(2) == 0 {
                    e.set_max_table_size(sizes[rng.below(sizes.len())]);
                }
            }
            e.set_huffman(block % 3 != 0);
            let n = 1 + rng.below(12);
            let fields: Vec<(String, String)> = (0..n)
                .map(|_| {
                    let name = names[rng.below(names.len())].to_lowercase();
                    // Values from a small set (repeats, indexed) or unique
                    // and sometimes long (evictions).
                    let value = match rng.below(4) {
                        0 => format!("v{}", rng.below(5)),
                        1 => "x".repeat(rng.below(900)),
                        2 => format!("{}\u{e9}\n\0", rng.next()),
                        _ => String::new(),
                    };
                    (name, value)
                })
                .collect();
            let before = e.table.entries.len();
            let mut b = Vec::new();
            e.encode(fields.iter().map(|(n, v)| (n.as_str(), v.as_str())), &mut b);
            if e.table.entries.len() < before {
                evictions += 1;
            }
            let got = d.decode(&b).unwrap();
            assert_eq!(got, fields, "block {block}");
            assert_eq!(d.table.entries, e.table.entries, "block {block}");
            assert_eq!(
                (d.table.size, d.table.max_size),
                (e.table.size, e.table.max_size)
            );
            assert!(e.table.size <= e.table.max_size);
        }
        assert!(evictions > 50, "{evictions}");
    }

    #[test]
    fn size_updates_signal_the_minimum_then_the_final_size() {
        let mut e = Encoder::default();
        encode(&mut e, &[("x-a", "1")]);
        assert_eq!(e.table_size(), 36);
        e.set_max_table_size(0);
        e.set_max_table_size(100);
        let b = encode(&mut e, &[]);
        // 0 (clears the table), then 100 (0x3f 0x45).
        assert_eq!(b, [0x20, 0x3f, 0x45]);
        assert_eq!(e.table_size(), 0);
        let mut d = Decoder::default();
        d.decode(&b).unwrap();
        assert_eq!(d.table.max_size, 100);
        // A peer advertising more than we use gets our size, once.
        e.set_max_table_size(65536);
        assert_eq!(encode(&mut e, &[]), [0x3f, 0xe1, 0x1f]);
        assert_eq!(encode(&mut e, &[]), [] as [u8; 0]);
    }

    #[test]
    fn header_list_limit_keeps_the_table_in_step() {
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let big = "y".repeat(300);
        let mut b = Vec::new();
        e.encode([("x-a", "1"), ("x-b", big.as_str())], &mut b);
        let (f, over) = d.decode_limited(&b, 100).unwrap();
        assert!(over && f.is_empty());
        // Both entries are in the table all the same.
        assert_eq!(d.table.entries, e.table.entries);
        let (f, over) = d.decode_limited(&b, 1000).unwrap();
        assert!(!over && f.len() == 2);
    }
}
