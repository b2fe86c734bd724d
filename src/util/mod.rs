//! Small helpers shared by every module.

pub mod duration;
pub mod fs;
pub mod heap;
pub mod mountinfo;

/// The system's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions (musl reads the aux vector).
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => 4096,
    }
}

/// Lower-case hex of bytes (digests, ids).
pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

/// A uniformly random fraction in [0, 1), for jitter (the system's random
/// source; the clock when that fails, which is fine for jitter).
pub fn random_fraction() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let n = jiff::Timestamp::now().as_nanosecond() as u64;
        b = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponential back-off with jitter: each failure doubles the base delay
/// from `initial` up to `max`; the delay returned is the base stretched by
/// up to `jitter` (0.5 = up to 50 % longer), so many clients that failed
/// together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: std::time::Duration,
    pub max: std::time::Duration,
    pub jitter: f64,
    current: Option<std::time::Duration>,
}

impl Backoff {
    pub fn new(initial: std::time::Duration, max: std::time::Duration, jitter: f64) -> Self {
        Backoff {
            initial,
            max,
            jitter,
            current: None,
        }
    }

    /// The next delay after a failure.
    pub fn next_delay(&mut self) -> std::time::Duration {
        let base = match self.current {
            None => self.initial,
            Some(d) => (d * 2).min(self.max),
        };
        self.current = Some(base);
        base.mul_f64(1.0 + self.jitter * random_fraction())
    }

    /// After a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// No failure since the last reset.
    pub fn is_reset(&self) -> bool {
        self.current.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_to_max_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 0.5);
        let mut bases = Vec::new();
        for _ in 0..6 {
            let d = b.next_delay();
            let base = b.current.unwrap();
            assert!(d >= base && d <= base.mul_f64(1.5), "{d:?} vs {base:?}");
            bases.push(base.as_secs());
        }
        assert_eq!(bases, vec![1, 2, 4, 8, 8, 8]);
        b.reset();
        assert!(b.is_reset());
        assert!(b.next_delay() < Duration::from_millis(1501));
    }

    #[test]
    fn random_fractions_are_in_range_and_vary() {
        let v: Vec<f64> = (0..32).map(|_| random_fraction()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(v.iter().any(|x| (x - v[0]).abs() > 1e-9));
    }
}
