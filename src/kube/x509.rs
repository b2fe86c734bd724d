//! The few facts picolet reads from an X.509 certificate (DER): its
//! validity, subject, public key and subject alternative names; and from a
//! PKCS#10 certificate request its subject, public key and requested SANs.
//! A small DER walker instead of a full parser crate: these fields sit at
//! fixed places in `TBSCertificate` (RFC 5280 §4.1) and
//! `CertificationRequestInfo` (RFC 2986 §4).

use anyhow::{bail, Context, Result};

/// One DER element: tag, contents, and the bytes after it.
struct Tlv<'a> {
    tag: u8,
    /// The whole element: header and contents.
    raw: &'a [u8],
    body: &'a [u8],
    rest: &'a [u8],
}

fn tlv(all: &[u8]) -> Result<Tlv<'_>> {
    let (&tag, b) = all.split_first().context("DER: truncated")?;
    let (&l0, b) = b.split_first().context("DER: truncated")?;
    let (len, b) = if l0 < 0x80 {
        (l0 as usize, b)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            bail!("DER: bad length");
        }
        let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        (len, &b[n..])
    };
    if b.len() < len {
        bail!("DER: element longer than its container");
    }
    let header = all.len() - b.len();
    Ok(Tlv {
        tag,
        raw: &all[..header + len],
        body: &b[..len],
        rest: &b[len..],
    })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const OID: u8 = 0x06;

/// notBefore / notAfter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
}

/// Fields of a certificate picolet logs or checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub validity: Validity,
    /// Subject CN.
    pub common_name: Option<String>,
    /// Subject O (all of them).
    pub organizations: Vec<String>,
    /// The DER SubjectPublicKeyInfo (kubeadm's CA pin hashes it).
    pub spki: Vec<u8>,
}

/// The TBSCertificate's fields in order, after the optional version.
fn tbs_fields(cert: &[u8]) -> Result<Vec<Tlv<'_>>> {
    let c = tlv(cert)?;
    if c.tag != SEQUENCE {
        bail!("not a certificate (no outer SEQUENCE)");
    }
    let tbs = tlv(c.body)?;
    if tbs.tag != SEQUENCE {
        bail!("not a certificate (no TBSCertificate)");
    }
    let mut out = Vec::new();
    let mut b = tbs.body;
    while !b.is_empty() {
        let t = tlv(b)?;
        b = t.rest;
        // [0] EXPLICIT version
        if out.is_empty() && t.tag == 0xa0 {
            continue;
        }
        out.push(t);
    }
    // serial, signature, issuer, validity, subject, spki
    if out.len() < 6 {
        bail!("certificate: TBSCertificate too short");
    }
    Ok(out)
}

/// Validity, subject and public key of a DER certificate.
pub fn info(cert: &[u8]) -> Result<CertInfo> {
    let f = tbs_fields(cert)?;
    let validity = parse_validity(&f[3])?;
    let (common_name, organizations) = parse_name(f[4].body)?;
    Ok(CertInfo {
        validity,
        common_name,
        organizations,
        spki: f[5].raw.to_vec(),
    })
}

/// Subject alternative names of a DER certificate: DNS names and IP
/// addresses (other kinds are skipped). Empty without the extension.
pub fn subject_alt_names(cert: &[u8]) -> Result<(Vec<String>, Vec<std::net::IpAddr>)> {
    let f = tbs_fields(cert)?;
    // After the SPKI: [1] issuerUniqueID, [2] subjectUniqueID, [3] extensions.
    for t in &f[6..] {
        if t.tag == 0xa3 {
            return sans_in_extensions(tlv(t.body)?.body);
        }
    }
    Ok((Vec::new(), Vec::new()))
}

/// SANs in a SEQUENCE OF Extension's contents.
fn sans_in_extensions(mut b: &[u8]) -> Result<(Vec<String>, Vec<std::net::IpAddr>)> {
    const SAN: &[u8] = &[0x55, 0x1d, 0x11];
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    while !b.is_empty() {
        let ext = tlv(b)?;
        b = ext.rest;
        let id = tlv(ext.body)?;
        if id.tag != OID || id.body != SAN {
            continue;
        }
        // Optional BOOLEAN critical, then the OCTET STRING value.
        let mut v = tlv(id.rest)?;
        if v.tag == 0x01 {
            v = tlv(v.rest)?;
        }
        let names = tlv(v.body)?;
        let mut n = names.body;
        while !n.is_empty() {
            let g = tlv(n)?;
            n = g.rest;
            match (g.tag, g.body.len()) {
                (0x82, _) => dns.push(String::from_utf8_lossy(g.body).into_owned()),
                (0x87, 4) => {
                    let a: [u8; 4] = g.body.try_into().context("IP SAN")?;
                    ips.push(std::net::IpAddr::from(a));
                }
                (0x87, 16) => {
                    let a: [u8; 16] = g.body.try_into().context("IP SAN")?;
                    ips.push(std::net::IpAddr::from(a));
                }
                _ => {}
            }
        }
    }
    Ok((dns, ips))
}

/// What a PKCS#10 certificate request (DER) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    /// The DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
}

/// Subject, public key and requested SANs of a DER certificate request.
pub fn csr_info(der: &[u8]) -> Result<CsrInfo> {
    // 1.2.840.113549.1.9.14 extensionRequest
    const EXT_REQ: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
    let outer = tlv(der)?;
    if outer.tag != SEQUENCE {
        bail!("not a certificate request (no outer SEQUENCE)");
    }
    let info = tlv(outer.body)?;
    if info.tag != SEQUENCE {
        bail!("not a certificate request (no CertificationRequestInfo)");
    }
    let version = tlv(info.body)?;
    let subject = tlv(version.rest)?;
    let spki = tlv(subject.rest)?;
    if subject.tag != SEQUENCE || spki.tag != SEQUENCE {
        bail!("certificate request: malformed subject or public key");
    }
    let (common_name, organizations) = parse_name(subject.body)?;
    let (mut dns_names, mut ip_addresses) = (Vec::new(), Vec::new());
    if !spki.rest.is_empty() {
        let attrs = tlv(spki.rest)?;
        let mut a = attrs.body;
        while !a.is_empty() {
            let attr = tlv(a)?;
            a = attr.rest;
            let id = tlv(attr.body)?;
            if id.tag == OID && id.body == EXT_REQ {
                let values = tlv(id.rest)?;
                let exts = tlv(values.body)?;
                let (d, i) = sans_in_extensions(exts.body)?;
                dns_names.extend(d);
                ip_addresses.extend(i);
            }
        }
    }
    Ok(CsrInfo {
        common_name,
        organizations,
        spki: spki.raw.to_vec(),
        dns_names,
        ip_addresses,
    })
}

/// The validity of a DER certificate.
pub fn validity(cert: &[u8]) -> Result<Validity> {
    parse_validity(&tbs_fields(cert)?[3])
}

fn parse_validity(v: &Tlv<'_>) -> Result<Validity> {
    if v.tag != SEQUENCE {
        bail!("certificate: validity is not a SEQUENCE");
    }
    let nb = tlv(v.body)?;
    let na = tlv(nb.rest)?;
    Ok(Validity {
        not_before: parse_time(&nb).context("notBefore")?,
        not_after: parse_time(&na).context("notAfter")?,
    })
}

fn parse_time(t: &Tlv<'_>) -> Result<jiff::Timestamp> {
    let s = std::str::from_utf8(t.body).context("time is not ASCII")?;
    let s = s.strip_suffix('Z').context("time is not in UTC")?;
    let full = match t.tag {
        // YYMMDDHHMMSS; RFC 5280: YY >= 50 means 19YY.
        UTC_TIME if s.len() == 12 => {
            let yy: u32 = s[..2].parse().context("bad year")?;
            format!("{}{s}", if yy >= 50 { "19" } else { "20" })
        }
        GENERALIZED_TIME if s.len() == 14 => s.to_string(),
        _ => bail!("unsupported time encoding"),
    };
    if !full.bytes().all(|b| b.is_ascii_digit()) {
        bail!("bad time {full:?}");
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    iso.parse().with_context(|| format!("bad time {iso:?}"))
}

/// CN and O values of an X.501 Name.
fn parse_name(mut b: &[u8]) -> Result<(Option<String>, Vec<String>)> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    let (mut cn, mut orgs) = (None, Vec::new());
    while !b.is_empty() {
        let set = tlv(b)?;
        b = set.rest;
        if set.tag != SET {
            bail!("certificate: malformed name");
        }
        let mut s = set.body;
        while !s.is_empty() {
            let atv = tlv(s)?;
            s = atv.rest;
            let oid = tlv(atv.body)?;
            if oid.tag != OID {
                bail!("certificate: malformed name attribute");
            }
            let val = tlv(oid.rest)?;
            let text = String::from_utf8_lossy(val.body).into_owned();
            if oid.body == CN {
                cn = Some(text);
            } else if oid.body == O {
                orgs.push(text);
            }
        }
    }
    Ok((cn, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    // openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
    //   -subj "/O=system:nodes/O=second/CN=system:node:n1" -days 1
    const PEM: &str = "MIIB1jCCAX2gAwIBAgIUPNrJDFJ7S83ZPoNvYP1HUj0l7IkwCgYIKoZIzj0EAwIw
QTEVMBMGA1UECgwMc3lzdGVtOm5vZGVzMQ8wDQYDVQQKDAZzZWNvbmQxFzAVBgNV
BAMMDnN5c3RlbTpub2RlOm4xMB4XDTI2MTIwNjE4MDAxM1oXDTI2MTIwNzE4MDAx
M1owQTEVMBMGA1UECgwMc3lzdGVtOm5vZGVzMQ8wDQYDVQQKDAZzZWNvbmQxFzAV
BgNVBAMMDnN5c3RlbTpub2RlOm4xMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
wj27avAFLFTqVDMUodXaaWDtlxut1/15TN2OH4J9+VrMVv4Z5UNz/CwnG0b0B2Rk
Wxf/ytUhDYHqRMJZ5RoYZ6NTMFEwHQYDVR0OBBYEFChbazXnS7vlcdqxPUTapQXT
8kTvMB8GA1UdIwQYMBaAFChbazXnS7vlcdqxPUTapQXT8kTvMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgBKe77/X8Rf1MZVSW/XjyMmYJBTR21xHg
hO5o3CmKyvYCIAehfbqoA7k3nQlooaoHPdxGdjZufJ1pxaJ3z5y290bP";

    fn der() -> Vec<u8> {
        let s: String = PEM.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn reads_validity_subject_and_spki() {
        let i = info(&der()).unwrap();
        assert_eq!(
            i.validity.not_before,
            "2026-12-06T18:00:13Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert_eq!(
            i.validity.not_after,
            "2026-12-07T18:00:13Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert_eq!(i.common_name.as_deref(), Some("system:node:n1"));
        assert_eq!(i.organizations, vec!["system:nodes", "second"]);
        // An EC P-256 SubjectPublicKeyInfo is 91 bytes: 30 59 ...
        assert_eq!(i.spki.len(), 91);
        assert_eq!(&i.spki[..2], &[0x30, 0x59]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let d = der();
        for cut in [0, 1, 2, 10, 50, 200, d.len() - 1] {
            let _ = info(&d[..cut]);
        }
        assert!(info(b"\x30\x82\xff\xff").is_err());
        assert!(info(b"hello").is_err());
        let mut bad = d.clone();
        for i in (0..bad.len()).step_by(7) {
            bad[i] ^= 0x55;
            let _ = info(&bad);
        }
    }
}
