//! Pure decisions: imagePullPolicy (with the upstream defaults and error
//! texts) and image GC (how much to free, in which order).

use super::reference::Reference;
use super::store::Record;
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Parses `Always`/`IfNotPresent`/`Never`; empty means the default for the image.
    pub fn parse(s: &str, image: &str) -> Result<PullPolicy, String> {
        match s {
            "" => Ok(Self::default_for(image)),
            "Always" => Ok(Self::Always),
            "IfNotPresent" => Ok(Self::IfNotPresent),
            "Never" => Ok(Self::Never),
            o => Err(format!(
                "unsupported imagePullPolicy {o:?}: supported values: \"Always\", \"IfNotPresent\", \"Never\""
            )),
        }
    }

    /// Upstream defaulting: `:latest` or no tag -> Always, else IfNotPresent
    /// (a digest without a tag counts as tagged).
    pub fn default_for(image: &str) -> PullPolicy {
        match Reference::parse_named(image) {
            Ok(r) if r.tag.is_none() && r.digest.is_none() => Self::Always,
            Ok(r) if r.tag.as_deref() == Some("latest") => Self::Always,
            _ => Self::IfNotPresent,
        }
    }
}

/// What the kubelet does about an image before starting a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullDecision {
    Pull,
    UsePresent,
}

/// An image failure with the upstream reason (the container's waiting reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// `ErrImageNeverPull`, `InvalidImageName`, `ErrImagePull`, `ImagePullBackOff`.
    pub reason: &'static str,
    pub message: String,
}

impl ImageError {
    pub const NEVER_PULL: &'static str = "ErrImageNeverPull";
    pub const INVALID_NAME: &'static str = "InvalidImageName";
    pub const PULL: &'static str = "ErrImagePull";
    pub const BACK_OFF: &'static str = "ImagePullBackOff";

    /// A failed pull, worded like the kubelet's event.
    pub fn pull_failed(image: &str, cause: &anyhow::Error) -> ImageError {
        ImageError {
            reason: Self::PULL,
            message: format!("Failed to pull image {image:?}: {cause:#}"),
        }
    }

    /// A pull skipped because of back-off after failures.
    pub fn back_off(image: &str) -> ImageError {
        ImageError {
            reason: Self::BACK_OFF,
            message: format!("Back-off pulling image {image:?}"),
        }
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for ImageError {}

/// Decides whether to pull. `policy` `None` means the default for the image.
pub fn pull_decision(
    policy: Option<PullPolicy>,
    image: &str,
    present: bool,
) -> Result<PullDecision, ImageError> {
    if let Err(e) = Reference::parse(image) {
        return Err(ImageError {
            reason: ImageError::INVALID_NAME,
            message: format!("Failed to apply default image tag {image:?}: {e:#}"),
        });
    }
    let policy = policy.unwrap_or_else(|| PullPolicy::default_for(image));
    match (policy, present) {
        (PullPolicy::Always, _) => Ok(PullDecision::Pull),
        (PullPolicy::IfNotPresent, false) => Ok(PullDecision::Pull),
        (_, true) => Ok(PullDecision::UsePresent),
        (PullPolicy::Never, false) => Err(ImageError {
            reason: ImageError::NEVER_PULL,
            message: format!("Container image {image:?} is not present with pull policy of Never"),
        }),
    }
}

/// Bytes to free when usage is at or above `high`% so that it drops to
/// `low`%; `None` below the high threshold (upstream `imageGCManager`).
/// A high threshold of 100 turns disk-based GC off, as upstream documents.
pub fn gc_bytes_to_free(capacity: u64, available: u64, high: u8, low: u8) -> Option<u64> {
    if capacity == 0 || high >= 100 {
        return None;
    }
    let usage = 100 - (available as u128 * 100 / capacity as u128) as u64;
    if usage < high as u64 {
        return None;
    }
    let want_avail = capacity as u128 * (100 - low as u128) / 100;
    Some((want_avail as u64).saturating_sub(available)).filter(|n| *n > 0)
}

/// Images GC may remove, in order: not in use, older than `min_age` since
/// they appeared, least recently used first (then oldest).
pub fn gc_candidates(
    records: &[Record],
    in_use: &HashSet<String>,
    now: u64,
    min_age: Duration,
) -> Vec<String> {
    let mut c: Vec<&Record> = records
        .iter()
        .filter(|r| !in_use.contains(&r.image.id))
        .filter(|r| now.saturating_sub(r.created) >= min_age.as_secs())
        .collect();
    c.sort_by_key(|r| (r.last_used, r.created));
    c.into_iter().map(|r| r.image.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Image;

    #[test]
    fn default_policy_by_tag() {
        assert_eq!(PullPolicy::default_for("busybox"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::default_for("busybox:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::default_for("busybox:1.36"),
            PullPolicy::IfNotPresent
        );
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::default_for(&d), PullPolicy::IfNotPresent);
        assert_eq!(
            PullPolicy::parse("", "x:1").unwrap(),
            PullPolicy::IfNotPresent
        );
        assert!(PullPolicy::parse("Sometimes", "x").is_err());
    }

    #[test]
    fn decisions_and_texts() {
        use PullDecision::*;
        let d = |p, img, present| pull_decision(p, img, present);
        assert_eq!(d(None, "busybox", true).unwrap(), Pull);
        assert_eq!(d(None, "busybox:1", true).unwrap(), UsePresent);
        assert_eq!(d(None, "busybox:1", false).unwrap(), Pull);
        assert_eq!(
            d(Some(PullPolicy::Never), "busybox", true).unwrap(),
            UsePresent
        );
        let e = d(Some(PullPolicy::Never), "busybox", false).unwrap_err();
        assert_eq!(e.reason, "ErrImageNeverPull");
        assert_eq!(
            e.message,
            "Container image \"busybox\" is not present with pull policy of Never"
        );
        let e = d(None, "Bad Name", false).unwrap_err();
        assert_eq!(e.reason, "InvalidImageName");
        assert!(e
            .message
            .starts_with("Failed to apply default image tag \"Bad Name\""));
        let e = ImageError::pull_failed("x", &anyhow::anyhow!("boom"));
        assert_eq!(
            e.to_string(),
            "ErrImagePull: Failed to pull image \"x\": boom"
        );
        assert_eq!(
            ImageError::back_off("x").message,
            "Back-off pulling image \"x\""
        );
    }

    #[test]
    fn gc_amounts() {
        // 84% used: nothing to do; 90% used: free down to 80%.
        assert_eq!(gc_bytes_to_free(1000, 160, 85, 80), None);
        assert_eq!(gc_bytes_to_free(1000, 100, 85, 80), Some(100));
        assert_eq!(gc_bytes_to_free(1000, 150, 85, 80), Some(50));
        assert_eq!(gc_bytes_to_free(0, 0, 85, 80), None);
        // 100 disables it, even on a full disk.
        assert_eq!(gc_bytes_to_free(1000, 0, 100, 99), None);
    }

    fn rec(id: &str, created: u64, last_used: u64) -> Record {
        Record {
            image: Image {
                id: id.into(),
                ..Default::default()
            },
            manifest_digest: String::new(),
            layers: vec![],
            created,
            last_used,
        }
    }

    #[test]
    fn gc_order() {
        let recs = vec![
            rec("a", 0, 500),
            rec("b", 0, 100),
            rec("c", 0, 300),
            rec("young", 990, 990),
        ];
        let in_use: HashSet<String> = ["c".to_string()].into();
        let got = gc_candidates(&recs, &in_use, 1000, Duration::from_secs(120));
        assert_eq!(got, vec!["b", "a"]);
    }
}
