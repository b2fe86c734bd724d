//! The container hash (upstream `HashContainer`, pkg/kubelet/container/
//! helpers.go), stored on each container as the `io.kubernetes.container.hash`
//! annotation ([`crate::runtime::keys::CONTAINER_HASH`]).
//!
//! Upstream hashes only the fields a running container may see change, which
//! since 1.31 are `name` and `image`: the API server rejects every other
//! container change, and hashing more would restart every container when a
//! kubelet upgrade adds a defaulted field. A static pod whose manifest
//! changes in any other way gets a new UID (its UID hashes the whole
//! manifest), so it is replaced as a whole. picolet computes the same value
//! as upstream, bit for bit, so the annotation reads the same.

use crate::api::core::Container;

/// The hash as upstream computes it: FNV-1a 32 over the spew-printed JSON
/// of `{"image": …, "name": …}`.
pub fn container_hash_value(c: &Container) -> u64 {
    let mut json = String::from("{\"image\":");
    go_json_string(&mut json, c.image.as_deref().unwrap_or(""));
    json.push_str(",\"name\":");
    go_json_string(&mut json, &c.name);
    json.push('}');
    // hashutil.DeepHashObject writes `%#v` of the []byte through spew,
    // which prints `([]uint8)[123 34 …]`.
    let mut h = Fnv1a32::new();
    h.write(b"([]uint8)[");
    for (i, b) in json.bytes().enumerate() {
        if i > 0 {
            h.write(b" ");
        }
        h.write(b.to_string().as_bytes());
    }
    h.write(b"]");
    h.0 as u64
}

/// The annotation form: lowercase hex, as upstream's `strconv.FormatUint(h, 16)`.
pub fn container_hash(c: &Container) -> String {
    format!("{:x}", container_hash_value(c))
}

/// Parses the annotation back (absent or garbage: 0, as upstream).
pub fn parse_container_hash(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or(0)
}

struct Fnv1a32(u32);

impl Fnv1a32 {
    fn new() -> Self {
        Fnv1a32(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u32;
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// A JSON string as Go's encoding/json writes it (HTML-safe escaping).
fn go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", ch as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    #[test]
    fn matches_upstream_test_vector() {
        // container_hash_test.go: sampleV131HashValue = 0x8e45cbd0 for this
        // container (its other fields do not count).
        let mut x = c("test_container", "foo/image:v1");
        x.command = Some(vec!["/bin/testcmd".into()]);
        assert_eq!(container_hash_value(&x), 0x8e45cbd0);
        assert_eq!(container_hash(&x), "8e45cbd0");
        assert_eq!(parse_container_hash("8e45cbd0"), 0x8e45cbd0);
        assert_eq!(parse_container_hash(""), 0);
    }

    #[test]
    fn image_and_name_change_the_hash() {
        let a = container_hash(&c("a", "busybox:1"));
        assert_ne!(a, container_hash(&c("a", "busybox:2")));
        assert_ne!(a, container_hash(&c("b", "busybox:1")));
        let mut x = c("a", "busybox:1");
        x.args = Some(vec!["sleep".into()]);
        assert_eq!(a, container_hash(&x));
    }

    #[test]
    fn go_escaping() {
        let mut s = String::new();
        go_json_string(&mut s, "a<b>&\"\\\n\u{1}é");
        assert_eq!(s, "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001é\"");
    }
}
