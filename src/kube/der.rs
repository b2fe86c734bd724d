//! A small DER writer (X.690) for the few structures picolet builds
//! itself — PKCS#10 certificate requests — and PEM armour. Reading DER is
//! [`super::x509`]'s job.

use base64::Engine as _;

pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0c;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;

/// One element: tag, definite length (short or long form), contents.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut v = Vec::with_capacity(n + 6);
    v.push(tag);
    if n < 0x80 {
        v.push(n as u8);
    } else {
        let be = n.to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        v.push(0x80 | (be.len() - skip) as u8);
        v.extend_from_slice(&be[skip..]);
    }
    v.extend_from_slice(content);
    v
}

/// SEQUENCE of already encoded elements, in order.
pub fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

/// SET OF already encoded elements. DER sorts a SET OF by encoding; the
/// callers here pass one element, or elements already in order.
pub fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut p = parts.to_vec();
    p.sort();
    tlv(SET, &p.concat())
}

/// OBJECT IDENTIFIER from its arcs (the first two packed as 40·a + b).
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut put = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        tmp.reverse();
        body.extend_from_slice(&tmp);
    };
    match arcs {
        [a, b, rest @ ..] => {
            put(a * 40 + b);
            for x in rest {
                put(*x);
            }
        }
        [a] => put(a * 40),
        [] => {}
    }
    tlv(OID, &body)
}

/// A non-negative INTEGER from a small number.
pub fn uint(v: u64) -> Vec<u8> {
    uint_bytes(&v.to_be_bytes())
}

/// A non-negative INTEGER from big-endian bytes (minimal: leading zeros
/// dropped, one added when the top bit is set).
pub fn uint_bytes(b: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
    if b.first().is_none_or(|x| x & 0x80 != 0) {
        b.insert(0, 0);
    }
    tlv(INTEGER, &b)
}

/// BIT STRING of whole bytes (no unused bits).
pub fn bit_string(b: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(b.len() + 1);
    c.push(0);
    c.extend_from_slice(b);
    tlv(BIT_STRING, &c)
}

pub fn octet_string(b: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, b)
}

pub fn utf8(s: &str) -> Vec<u8> {
    tlv(UTF8_STRING, s.as_bytes())
}

/// `[n]` context-specific: constructed (EXPLICIT, or an IMPLICIT SET/
/// SEQUENCE) or primitive (an IMPLICIT string, e.g. a GeneralName).
pub fn context(n: u8, constructed: bool, content: &[u8]) -> Vec<u8> {
    let tag = 0x80 | if constructed { 0x20 } else { 0 } | (n & 0x1f);
    tlv(tag, content)
}

/// PEM armour with 64-column base64 lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        // base64 output is ASCII
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_short_and_long_form() {
        assert_eq!(tlv(0x04, &[]), [0x04, 0x00]);
        assert_eq!(tlv(0x04, &[7; 127])[..2], [0x04, 0x7f]);
        assert_eq!(tlv(0x04, &[7; 128])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(0x04, &[7; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(tlv(0x04, &[7; 70000])[..5], [0x04, 0x83, 0x01, 0x11, 0x70]);
    }

    #[test]
    fn known_encodings() {
        // X.690 / RFC 5480 examples.
        assert_eq!(
            oid(&[1, 2, 840, 10045, 2, 1]),
            [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]
        );
        assert_eq!(oid(&[2, 5, 4, 3]), [0x06, 0x03, 0x55, 0x04, 0x03]);
        assert_eq!(
            oid(&[1, 2, 840, 113549, 1, 9, 14]),
            [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e]
        );
        assert_eq!(uint(0), [0x02, 0x01, 0x00]);
        assert_eq!(uint(127), [0x02, 0x01, 0x7f]);
        assert_eq!(uint(128), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint(256), [0x02, 0x02, 0x01, 0x00]);
        assert_eq!(bit_string(&[0xa0]), [0x03, 0x02, 0x00, 0xa0]);
        assert_eq!(utf8("ab"), [0x0c, 0x02, b'a', b'b']);
        assert_eq!(context(0, true, &[]), [0xa0, 0x00]);
        assert_eq!(context(2, false, b"x"), [0x82, 0x01, b'x']);
        assert_eq!(seq(&[uint(1), uint(2)]), [0x30, 6, 2, 1, 1, 2, 1, 2]);
        // SET OF is sorted by encoding.
        assert_eq!(set(&[uint(2), uint(1)]), [0x31, 6, 2, 1, 1, 2, 1, 2]);
    }

    #[test]
    fn pem_lines_are_64_columns() {
        let p = pem("TEST", &[0u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN TEST-----");
        // 100 bytes: 136 base64 characters.
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 8);
        assert_eq!(lines[4], "-----END TEST-----");
    }
}
