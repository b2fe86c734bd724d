//! The messages upstream's kubelet (v1.31) puts in its events, so that
//! `kubectl describe` reads the same on a picolet node. Each helper names
//! the reason it goes with ([`super::reasons`]) and the event type.
//!
//! Go formatting is kept where it shows: `%q` quoting ([`go_quote`]),
//! `time.Duration` strings ([`go_duration`]), `format.Pod` pod names
//! ([`format_pod`]).

use std::time::Duration;

// ---- images (pkg/kubelet/images/image_manager.go) ----

/// `Pulling` (Normal).
pub fn pulling(image: &str) -> String {
    format!("Pulling image {}", go_quote(image))
}

/// `Pulled` (Normal) after a pull: how long the pull itself took, how long
/// including the wait for the puller, and the image's size.
pub fn pulled(image: &str, pull: Duration, with_waiting: Duration, size_bytes: u64) -> String {
    format!(
        "Successfully pulled image {} in {} ({} including waiting). Image size: {size_bytes} bytes.",
        go_quote(image),
        go_duration(truncate_ms(pull)),
        go_duration(truncate_ms(with_waiting)),
    )
}

/// `Pulled` (Normal) when the image was already there.
pub fn already_present(image: &str) -> String {
    format!(
        "Container image {} already present on machine",
        go_quote(image)
    )
}

/// `ErrImageNeverPull` (Warning).
pub fn never_pull(image: &str) -> String {
    format!(
        "Container image {} is not present with pull policy of Never",
        go_quote(image)
    )
}

/// `Failed` (Warning) when a pull failed.
pub fn failed_to_pull(image: &str, err: &str) -> String {
    format!("Failed to pull image {}: {err}", go_quote(image))
}

/// `BackOff` (Normal: upstream records the image back-off as Normal).
pub fn back_off_pull(image: &str) -> String {
    format!("Back-off pulling image {}", go_quote(image))
}

/// `InspectFailed` (Warning) for an image name that does not parse.
pub fn invalid_image_name(image: &str, err: &str) -> String {
    format!(
        "Failed to apply default image tag {}: {err}",
        go_quote(image)
    )
}

/// `InspectFailed` (Warning) when the local image store could not be read.
pub fn failed_to_inspect(image: &str, err: &str) -> String {
    format!("Failed to inspect image {}: {err}", go_quote(image))
}

// ---- containers (pkg/kubelet/kuberuntime) ----

/// `Failed` (Warning) after a failed pull, create or start: the message is
/// the waiting reason or error, e.g. `Error: ErrImagePull`,
/// `Error: ImagePullBackOff`, `Error: <runtime error>`.
pub fn error(err: &str) -> String {
    format!("Error: {err}")
}

/// `Created` (Normal).
pub fn created(container: &str) -> String {
    format!("Created container {container}")
}

/// `Started` (Normal).
pub fn started(container: &str) -> String {
    format!("Started container {container}")
}

/// `Killing` (Normal) when a container is stopped for no more specific
/// reason (pod deletion, ...).
pub fn stopping(container: &str) -> String {
    format!("Stopping container {container}")
}

/// `Killing` (Normal) after a liveness or startup probe failure;
/// `probe` is `liveness` or `startup` (upstream's lower-case probe type).
pub fn failed_probe_restart(container: &str, probe: &str) -> String {
    format!("Container {container} failed {probe} probe, will be restarted")
}

/// `Killing` (Normal) when the container's spec changed (its hash).
pub fn definition_changed(container: &str) -> String {
    format!("Container {container} definition changed, will be restarted")
}

/// `BackOff` (Warning) while a crashed container waits to be restarted;
/// `pod` is [`format_pod`].
pub fn back_off_restart(container: &str, pod: &str) -> String {
    format!("Back-off restarting failed container {container} in pod {pod}")
}

/// `ExceededGracePeriod` (Warning).
pub fn exceeded_grace_period() -> String {
    "Container runtime did not kill the pod within specified grace period.".into()
}

/// `FailedPostStartHook` / `FailedPreStopHook` (Warning) of an exec hook;
/// `pod` is [`format_pod`].
pub fn exec_hook_failed(
    command: &[String],
    container: &str,
    pod: &str,
    err: &str,
    output: &str,
) -> String {
    format!(
        "Exec lifecycle hook ({}) for Container {} in Pod {} failed - error: {err}, message: {}",
        go_string_slice(command),
        go_quote(container),
        go_quote(pod),
        go_quote(output)
    )
}

/// `FailedPostStartHook` / `FailedPreStopHook` (Warning) of an httpGet hook.
pub fn http_hook_failed(path: &str, container: &str, pod: &str, err: &str) -> String {
    format!(
        "HTTP lifecycle hook ({path}) for Container {} in Pod {} failed - error: {err}",
        go_quote(container),
        go_quote(pod)
    )
}

// ---- probes (pkg/kubelet/prober) ----

/// `Unhealthy` (Warning); `probe` is `Liveness`, `Readiness` or `Startup`.
pub fn probe_failed(probe: &str, output: &str) -> String {
    format!("{probe} probe failed: {output}")
}

/// `Unhealthy` (Warning) when the probe could not be run; `result` is the
/// result it counts as (`failure`, `unknown`).
pub fn probe_errored(probe: &str, result: &str, err: &str) -> String {
    format!("{probe} probe errored and resulted in {result} state: {err}")
}

/// `ProbeWarning` (Warning): the probe succeeded with a warning.
pub fn probe_warning(probe: &str, output: &str) -> String {
    format!("{probe} probe warning: {output}")
}

// ---- pods ----

/// `FailedCreatePodSandBox` (Warning).
pub fn failed_create_sandbox(err: &str) -> String {
    format!("Failed to create pod sandbox: {err}")
}

/// `SandboxChanged` (Normal).
pub fn sandbox_changed() -> String {
    "Pod sandbox changed, it will be killed and re-created.".into()
}

/// `FailedKillPod` (Warning).
pub fn failed_kill_pod(err: &str) -> String {
    format!("error killing pod: {err}")
}

/// `FailedMount` (Warning) when the pod's volumes are not ready in time.
pub fn failed_mount(err: &str) -> String {
    format!("Unable to attach or mount volumes: {err}")
}

/// `FailedMount` (Warning) for one volume whose set-up failed.
pub fn mount_setup_failed(volume: &str, err: &str) -> String {
    format!(
        "MountVolume.SetUp failed for volume {} : {err}",
        go_quote(volume)
    )
}

/// `NetworkNotReady` (Warning).
pub fn network_not_ready(err: &str) -> String {
    format!("network is not ready: {err}")
}

/// `Preempting` (Warning) on a pod killed to admit a critical pod.
pub fn preempting() -> String {
    "Preempted in order to admit critical pod".into()
}

/// The message of an `OutOf<resource>` admission rejection (Warning;
/// reason [`super::reasons::out_of`]).
pub fn insufficient_resource(resource: &str, requested: i64, used: i64, capacity: i64) -> String {
    format!(
        "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
    )
}

/// `Evicted` (Warning) message prefix of the eviction manager.
pub fn evicted(resource: &str) -> String {
    format!("The node was low on resource: {resource}. ")
}

/// `EvictionThresholdMet` (Warning, on the node).
pub fn eviction_threshold_met(resource: &str) -> String {
    format!("Attempting to reclaim {resource}")
}

// ---- node ----

/// `Starting` (Normal, on the node).
pub fn starting_kubelet() -> String {
    "Starting kubelet.".into()
}

/// The message of every node status event (`NodeReady`,
/// `NodeHasSufficientMemory`, `NodeSchedulable`, ...; all Normal):
/// `Node <name> status is now: <reason>`.
pub fn node_status(node: &str, reason: &str) -> String {
    format!("Node {node} status is now: {reason}")
}

/// `Rebooted` (Warning, on the node).
pub fn node_rebooted(node: &str, boot_id: &str) -> String {
    format!("Node {node} has been rebooted, boot id: {boot_id}")
}

/// `NodeAllocatableEnforced` (Normal, on the node).
pub fn node_allocatable_enforced() -> String {
    "Updated Node Allocatable limit across pods".into()
}

// ---- Go formatting ----

/// `format.Pod`: `name_namespace(uid)`.
pub fn format_pod(name: &str, namespace: &str, uid: &str) -> String {
    format!("{name}_{namespace}({uid})")
}

fn truncate_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// Go's `time.Duration.String()`: `0s`, `1.5µs`, `523ms`, `1.234s`,
/// `2m3.5s`, `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    // Below a second: the largest unit that keeps an integer part.
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(ns, div));
    }
    let secs_ns = ns % 60_000_000_000;
    let mins = ns / 60_000_000_000;
    let mut out = String::new();
    if mins > 0 {
        let (h, m) = (mins / 60, mins % 60);
        if h > 0 {
            out += &format!("{h}h");
        }
        out += &format!("{m}m");
    }
    out += &fraction(secs_ns, 1_000_000_000);
    out.push('s');
    out
}

/// `n / div` in decimal without trailing zeros (`1.5`, `2`, `0.25`).
fn fraction(n: u128, div: u128) -> String {
    let int = n / div;
    let rem = n % div;
    if rem == 0 {
        return int.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{rem:0width$}");
    format!("{int}.{}", f.trim_end_matches('0'))
}

/// Go's `%q` of a string: double-quoted, with Go's escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\n' => out += "\\n",
            '\t' => out += "\\t",
            '\r' => out += "\\r",
            '\u{7}' => out += "\\a",
            '\u{8}' => out += "\\b",
            '\u{c}' => out += "\\f",
            '\u{b}' => out += "\\v",
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out += &format!("\\x{:02x}", c as u32),
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out += &format!("\\u{:04x}", c as u32)
                } else {
                    out += &format!("\\U{:08x}", c as u32)
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%v` of a `[]string`: `[a b c]`.
pub fn go_string_slice(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_messages() {
        assert_eq!(pulling("busybox:1.36"), "Pulling image \"busybox:1.36\"");
        assert_eq!(
            pulled(
                "busybox:1.36",
                Duration::from_micros(1_234_567),
                Duration::from_micros(2_000_999),
                4_269_255
            ),
            "Successfully pulled image \"busybox:1.36\" in 1.234s (2s including waiting). \
             Image size: 4269255 bytes."
        );
        assert_eq!(
            pulled("a", Duration::from_micros(523_900), Duration::from_secs(61), 1),
            "Successfully pulled image \"a\" in 523ms (1m1s including waiting). Image size: 1 bytes."
        );
        assert_eq!(
            already_present("x:1"),
            "Container image \"x:1\" already present on machine"
        );
        assert_eq!(
            never_pull("x:1"),
            "Container image \"x:1\" is not present with pull policy of Never"
        );
        assert_eq!(
            failed_to_pull("x:1", "not found"),
            "Failed to pull image \"x:1\": not found"
        );
        assert_eq!(back_off_pull("x:1"), "Back-off pulling image \"x:1\"");
        assert_eq!(error("ErrImagePull"), "Error: ErrImagePull");
    }

    #[test]
    fn container_and_pod_messages() {
        assert_eq!(created("app"), "Created container app");
        assert_eq!(started("app"), "Started container app");
        assert_eq!(stopping("app"), "Stopping container app");
        assert_eq!(
            failed_probe_restart("app", "liveness"),
            "Container app failed liveness probe, will be restarted"
        );
        let pod = format_pod("web", "shop", "u-1");
        assert_eq!(pod, "web_shop(u-1)");
        assert_eq!(
            back_off_restart("app", &pod),
            "Back-off restarting failed container app in pod web_shop(u-1)"
        );
        assert_eq!(
            probe_failed("Liveness", "HTTP probe failed with statuscode: 500"),
            "Liveness probe failed: HTTP probe failed with statuscode: 500"
        );
        assert_eq!(
            exec_hook_failed(
                &["sh".into(), "-c".into(), "exit 1".into()],
                "app",
                &pod,
                "command terminated with exit code 1",
                "oops\n"
            ),
            "Exec lifecycle hook ([sh -c exit 1]) for Container \"app\" in Pod \"web_shop(u-1)\" \
             failed - error: command terminated with exit code 1, message: \"oops\\n\""
        );
        assert_eq!(
            mount_setup_failed("config", "configmap \"c\" not found"),
            "MountVolume.SetUp failed for volume \"config\" : configmap \"c\" not found"
        );
        assert_eq!(
            insufficient_resource("cpu", 2000, 3000, 4000),
            "Node didn't have enough resource: cpu, requested: 2000, used: 3000, capacity: 4000"
        );
        assert_eq!(
            node_status("n1", "NodeHasSufficientMemory"),
            "Node n1 status is now: NodeHasSufficientMemory"
        );
        assert_eq!(starting_kubelet(), "Starting kubelet.");
    }

    #[test]
    fn go_durations() {
        let d = |ns: u64| go_duration(Duration::from_nanos(ns));
        assert_eq!(d(0), "0s");
        assert_eq!(d(7), "7ns");
        assert_eq!(d(1_500), "1.5µs");
        assert_eq!(d(523_000_000), "523ms");
        assert_eq!(d(1_000_000_000), "1s");
        assert_eq!(d(1_234_000_000), "1.234s");
        assert_eq!(d(123_500_000_000), "2m3.5s");
        assert_eq!(d(3_600_000_000_000), "1h0m0s");
        assert_eq!(d(3_723_000_000_000), "1h2m3s");
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote("t\tn\n\0"), "\"t\\tn\\n\\x00\"");
        assert_eq!(go_quote("é"), "\"é\"");
        assert_eq!(go_quote("\u{85}"), "\"\\u0085\"");
    }
}
