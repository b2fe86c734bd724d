//! `picolet join`: one command from a fresh box to a cluster member, as
//! `kubeadm join` with a bootstrap token.
//!
//! 1. Discovery ([`crate::kube::discovery`]): kube-public/cluster-info,
//!    its JWS signature for the token, the CA pinned by
//!    `--discovery-token-ca-cert-hash`.
//! 2. Files: the bootstrap kubeconfig (the token; 0600), the cluster CA
//!    (`ca.crt` beside it, for the kubelet port's client authentication),
//!    and a KubeletConfiguration when there is none.
//! 3. Either `--run`: the agent starts with `--bootstrap-kubeconfig` and
//!    requests its client certificate while its local pods start; or the
//!    TLS bootstrap happens here and now (a refused token, a denial or no
//!    approval in time fails the command) and the command prints how to
//!    start picolet as a service.
//!
//! A failure removes every file this run created: nothing half-joined is
//! left. A node whose kubeconfig already works is not joined again unless
//! `--force`.

use crate::kube::bootstrap::{self, Bootstrap};
use crate::kube::discovery::{self, Token};
use anyhow::{bail, Context, Result};
use argh::FromArgs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Join a cluster with a bootstrap token (kubeadm-style discovery), then
/// run the agent (--run) or print how to start it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "join")]
pub struct JoinArgs {
    #[argh(
        option,
        description = "the API server: https://HOST:PORT (or HOST:PORT)"
    )]
    pub server: String,
    #[argh(option, description = "bootstrap token ID.SECRET")]
    pub token: String,
    #[argh(
        option,
        long = "discovery-token-ca-cert-hash",
        description = "sha256:<hex> of the cluster CA's public key (repeatable)"
    )]
    pub ca_cert_hash: Vec<String>,
    #[argh(
        switch,
        long = "discovery-token-unsafe-skip-ca-verification",
        description = "trust the CA cluster-info names without a pin (insecure)"
    )]
    pub unsafe_skip_ca_verification: bool,
    #[argh(
        option,
        default = "PathBuf::from(\"/etc/picolet/config.yaml\")",
        description = "the KubeletConfiguration: kept when it exists, else written (default /etc/picolet/config.yaml)"
    )]
    pub config: PathBuf,
    #[argh(
        option,
        default = "PathBuf::from(\"/etc/picolet/kubeconfig\")",
        description = "the node's kubeconfig, written by the TLS bootstrap (default /etc/picolet/kubeconfig)"
    )]
    pub kubeconfig: PathBuf,
    #[argh(
        option,
        long = "bootstrap-kubeconfig",
        default = "PathBuf::from(\"/etc/picolet/bootstrap-kubeconfig\")",
        description = "where the bootstrap kubeconfig is written (default /etc/picolet/bootstrap-kubeconfig)"
    )]
    pub bootstrap_kubeconfig: PathBuf,
    #[argh(
        option,
        long = "root-dir",
        description = "state directory (default /var/lib/picolet)"
    )]
    pub root_dir: Option<PathBuf>,
    #[argh(
        option,
        long = "cert-dir",
        description = "certificates and keys (default <root-dir>/pki)"
    )]
    pub cert_dir: Option<PathBuf>,
    #[argh(
        option,
        long = "hostname-override",
        description = "node name instead of the host name"
    )]
    pub hostname_override: Option<String>,
    #[argh(option, long = "node-ip", description = "IP address of the node")]
    pub node_ip: Option<IpAddr>,
    #[argh(
        option,
        long = "node-labels",
        description = "labels the Node is registered with: key=value,..."
    )]
    pub node_labels: Option<String>,
    #[argh(
        switch,
        long = "server-tls-bootstrap",
        description = "a new config asks the cluster for the kubelet port's certificate"
    )]
    pub server_tls_bootstrap: bool,
    #[argh(
        option,
        long = "discovery-timeout",
        default = "String::from(\"5m\")",
        description = "how long to try reading the signed cluster-info (default 5m, as kubeadm)"
    )]
    pub discovery_timeout: String,
    #[argh(
        option,
        default = "String::from(\"5m\")",
        description = "how long to wait for the client certificate without --run (default 5m)"
    )]
    pub timeout: String,
    #[argh(switch, description = "run the agent after joining")]
    pub run: bool,
    #[argh(switch, description = "join again although the kubeconfig works")]
    pub force: bool,
    #[argh(
        option,
        short = 'v',
        long = "v",
        default = "2",
        description = "log verbosity (klog levels)"
    )]
    pub v: u8,
}

/// Files this run made, removed again if it fails.
#[derive(Default)]
struct Created(Vec<PathBuf>);

impl Created {
    /// Writes `data` (0600) unless `path` exists; records it when made.
    fn write_new(&mut self, path: &Path, data: &[u8]) -> Result<bool> {
        if path.exists() {
            return Ok(false);
        }
        self.dirs(path)?;
        crate::kube::certstore::write_private(path, data)?;
        self.0.push(path.to_path_buf());
        Ok(true)
    }

    /// Writes `data` (0600), replacing what is there; records a new file.
    fn write(&mut self, path: &Path, data: &[u8]) -> Result<()> {
        let existed = path.exists();
        self.dirs(path)?;
        crate::kube::certstore::write_private(path, data)?;
        if !existed {
            self.0.push(path.to_path_buf());
        }
        Ok(())
    }

    /// Creates missing parent dirs, recording each.
    fn dirs(&mut self, path: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut d = path.parent();
        while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            missing.push(p.to_path_buf());
            d = p.parent();
        }
        for p in missing.into_iter().rev() {
            std::fs::create_dir(&p).with_context(|| format!("create {}", p.display()))?;
            self.0.push(p);
        }
        Ok(())
    }

    fn dir(&mut self, path: &Path) -> Result<()> {
        if !path.exists() {
            self.dirs(&path.join("x"))?;
        }
        Ok(())
    }

    /// Removes what was made, newest first.
    fn undo(&mut self) {
        for p in self.0.drain(..).rev() {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = r {
                log::warn!("remove {}: {e}", p.display());
            }
        }
    }
}

/// The KubeletConfiguration a join writes when there is none.
pub fn default_config(manifests: &Path, client_ca: &Path, server_tls_bootstrap: bool) -> String {
    format!(
        "# Written by `picolet join`. Upstream KubeletConfiguration fields and picolet's own\n\
         # (README.md, Configuration); check with `picolet check-config --config FILE`.\n\
         apiVersion: kubelet.config.k8s.io/v1beta1\n\
         kind: KubeletConfiguration\n\
         staticPodPath: {manifests}\n\
         rotateCertificates: true\n\
         serverTLSBootstrap: {server_tls_bootstrap}\n\
         authentication:\n  x509:\n    clientCAFile: {ca}\n",
        manifests = manifests.display(),
        ca = client_ca.display(),
    )
}

/// `picolet join`.
pub fn main(a: JoinArgs) -> Result<()> {
    crate::logger::init(a.v);
    let token = Token::parse(&a.token)?;
    let timeout = crate::util::duration::parse(&a.timeout).context("--timeout")?;
    let discovery_timeout =
        crate::util::duration::parse(&a.discovery_timeout).context("--discovery-timeout")?;
    let mut cfg = crate::config::Config::new(
        None,
        a.root_dir.clone(),
        Some(a.kubeconfig.clone()),
        a.hostname_override.clone(),
        a.node_ip,
    )?;
    cfg.bootstrap_kubeconfig = Some(a.bootstrap_kubeconfig.clone());
    cfg.cert_dir_flag = a.cert_dir.clone();
    if let Some(l) = &a.node_labels {
        let labels = crate::node::register::parse_node_labels(l)?;
        crate::node::register::validate_node_labels(&labels)?;
        cfg.node_labels = labels;
    }
    let started = std::time::Instant::now();
    let mut created = Created::default();
    let res = join(&a, &token, &cfg, [discovery_timeout, timeout], &mut created);
    if let Err(e) = res {
        created.undo();
        return Err(e);
    }
    let joined_in = started.elapsed();
    if a.run {
        let mut run_cfg = crate::config::Config::new(
            Some(&a.config),
            a.root_dir.clone(),
            Some(a.kubeconfig.clone()),
            a.hostname_override.clone(),
            a.node_ip,
        )?;
        run_cfg.bootstrap_kubeconfig = cfg.bootstrap_kubeconfig.clone();
        run_cfg.cert_dir_flag = cfg.cert_dir_flag.clone();
        run_cfg.node_labels = cfg.node_labels.clone();
        log::info!(
            "picolet {} starting as node {} (joined in {})",
            env!("CARGO_PKG_VERSION"),
            run_cfg.node_name,
            crate::util::duration::format(Duration::from_millis(joined_in.as_millis() as u64))
        );
        let exit = crate::rt::block_on(crate::agent::run_node(run_cfg))?;
        log::info!("picolet stopped ({exit:?})");
        return Ok(());
    }
    // not println!: a closed stdout must not panic
    use std::io::Write;
    let _ = std::io::stdout()
        .lock()
        .write_all(next_steps(&a, &cfg).as_bytes());
    Ok(())
}

fn join(
    a: &JoinArgs,
    token: &Token,
    cfg: &crate::config::Config,
    [discovery_timeout, timeout]: [Duration; 2],
    created: &mut Created,
) -> Result<()> {
    if !a.force {
        if let Ok(kc) = bootstrap::usable_kubeconfig(&a.kubeconfig) {
            log::info!(
                "{} works already (API server {}): not joining again (--force to)",
                a.kubeconfig.display(),
                kc.server
            );
            return Ok(());
        }
    }
    if a.ca_cert_hash.is_empty() && !a.unsafe_skip_ca_verification {
        bail!(
            "give --discovery-token-ca-cert-hash sha256:<hex> (on a control-plane node: \
             openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der | \
             sha256sum), or, insecurely, --discovery-token-unsafe-skip-ca-verification"
        );
    }
    log::info!(
        "discovering the cluster at {} with token ID {}",
        a.server,
        token.id
    );
    let d = crate::rt::block_on(discovery::discover(
        &a.server,
        token,
        &a.ca_cert_hash,
        a.unsafe_skip_ca_verification,
        discovery_timeout,
    ))?;
    log::info!(
        "cluster-info verified: CA {} (cluster-info names the server {})",
        discovery::ca_hashes(&d.ca_pem)?.join(", "),
        d.advertised_server.as_deref().unwrap_or("?")
    );

    // The bootstrap kubeconfig holds the token: 0600, replaced on a re-join.
    created.write(
        &a.bootstrap_kubeconfig,
        discovery::bootstrap_kubeconfig(&d, token).as_bytes(),
    )?;
    let dir = a
        .bootstrap_kubeconfig
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let ca = dir.join("pki/ca.crt");
    created.write(&ca, &d.ca_pem)?;
    let manifests = a
        .config
        .parent()
        .unwrap_or(Path::new("."))
        .join("manifests");
    let text = default_config(&manifests, &ca, a.server_tls_bootstrap);
    if created.write_new(&a.config, text.as_bytes())? {
        created.dir(&manifests)?;
        log::info!("wrote {}", a.config.display());
    } else {
        log::info!("keeping the existing {}", a.config.display());
    }
    if a.run {
        // The agent bootstraps while its local pods start.
        return Ok(());
    }
    // The TLS bootstrap here: a refused token or a denial fails the join.
    let cert_dir = cfg.cert_dir();
    created.dir(&cert_dir)?;
    let b = Bootstrap {
        kubeconfig: a.kubeconfig.clone(),
        bootstrap_kubeconfig: a.bootstrap_kubeconfig.clone(),
        cert_dir,
        node_name: cfg.node_name.clone(),
        timeout,
    };
    let kubeconfig_existed = a.kubeconfig.exists();
    match crate::rt::block_on(b.attempt()) {
        Ok(_) => {
            if !kubeconfig_existed {
                created.0.push(a.kubeconfig.clone());
            }
            Ok(())
        }
        Err(f) => Err(anyhow::anyhow!(
            "TLS bootstrap for node {}: {f}",
            cfg.node_name
        )),
    }
}

/// How to start picolet with what `join` made: systemd, OpenWrt's init
/// script (`cross/openwrt`), or a command line.
fn next_steps(a: &JoinArgs, cfg: &crate::config::Config) -> String {
    let mut args = vec![
        format!("--kubeconfig {}", a.kubeconfig.display()),
        format!(
            "--bootstrap-kubeconfig {}",
            a.bootstrap_kubeconfig.display()
        ),
    ];
    if let Some(r) = &a.root_dir {
        args.push(format!("--root-dir {}", r.display()));
    }
    if let Some(c) = &a.cert_dir {
        args.push(format!("--cert-dir {}", c.display()));
    }
    if let Some(h) = &a.hostname_override {
        args.push(format!("--hostname-override {h}"));
    }
    if let Some(ip) = &a.node_ip {
        args.push(format!("--node-ip {ip}"));
    }
    if let Some(l) = &a.node_labels {
        args.push(format!("--node-labels {l}"));
    }
    let args = args.join(" ");
    let unit_config = Path::new("/etc/picolet/config.yaml");
    let config_note = if a.config != unit_config {
        format!(
            "  (the unit passes --config {}: put the config there, or edit ExecStart)\n",
            unit_config.display()
        )
    } else {
        String::new()
    };
    let mut out = format!(
        "\nThis node ({}) has its cluster credentials. Start picolet:\n\n\
         systemd (configs/systemd/picolet.service):\n  \
         echo 'PICOLET_ARGS=\"{args}\"' > /etc/default/picolet\n  \
         systemctl enable --now picolet\n{config_note}\n\
         OpenWrt (procd, /etc/config/picolet):\n  \
         uci set picolet.main.kubeconfig={kc}\n  \
         uci set picolet.main.bootstrap_kubeconfig={bkc}\n  \
         uci set picolet.main.config={config}\n  \
         uci set picolet.main.root_dir={root}\n",
        cfg.node_name,
        kc = a.kubeconfig.display(),
        bkc = a.bootstrap_kubeconfig.display(),
        config = a.config.display(),
        root = cfg.root_dir.display(),
    );
    if let Some(c) = &a.cert_dir {
        out += &format!("  uci set picolet.main.cert_dir={}\n", c.display());
    }
    if let Some(h) = &a.hostname_override {
        out += &format!("  uci set picolet.main.hostname_override={h}\n");
    }
    if let Some(ip) = &a.node_ip {
        out += &format!("  uci set picolet.main.node_ip={ip}\n");
    }
    if let Some(l) = &a.node_labels {
        out += &format!("  uci set picolet.main.node_labels={l}\n");
    }
    out += &format!(
        "  uci commit picolet && /etc/init.d/picolet enable && /etc/init.d/picolet start\n\n\
         or here and now:\n  picolet run --config {} {args}\n",
        a.config.display()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let text = default_config(
            Path::new("/etc/picolet/manifests"),
            Path::new("/etc/picolet/pki/ca.crt"),
            true,
        );
        let v = crate::api::yaml::single(&text).unwrap();
        let (c, _warnings) = crate::config::KubeletConfig::from_value(&v).unwrap();
        assert!(c.rotate_certificates);
        assert!(c.server_tls_bootstrap);
        assert_eq!(
            c.static_pod_path.as_deref(),
            Some(Path::new("/etc/picolet/manifests"))
        );
    }

    /// Every setting the OpenWrt steps name is one the init script reads
    /// (and turns into its flag) and the shipped config documents.
    #[test]
    fn openwrt_steps_name_settings_the_init_script_reads() {
        use argh::FromArgs;
        let a = JoinArgs::from_args(
            &["join"],
            &[
                "--server",
                "https://10.0.0.1:6443",
                "--token",
                "abcdef.0123456789abcdef",
                "--discovery-token-unsafe-skip-ca-verification",
                "--cert-dir",
                "/srv/pki",
                "--hostname-override",
                "gw-1",
                "--node-ip",
                "10.0.0.9",
                "--node-labels",
                "site=north",
                "--root-dir",
                "/srv/picolet",
            ],
        )
        .unwrap();
        let cfg = crate::config::Config::new(
            None,
            a.root_dir.clone(),
            Some(a.kubeconfig.clone()),
            a.hostname_override.clone(),
            a.node_ip,
        )
        .unwrap();
        let steps = next_steps(&a, &cfg);
        let init = include_str!("../cross/openwrt/picolet/files/picolet.init");
        let uci = include_str!("../cross/openwrt/picolet/files/picolet.config");
        let set: Vec<(&str, &str)> = steps
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("uci set picolet.main.")?
                    .split_once('=')
            })
            .collect();
        let names: Vec<&str> = set.iter().map(|(k, _)| *k).collect();
        for want in [
            "kubeconfig",
            "bootstrap_kubeconfig",
            "config",
            "root_dir",
            "cert_dir",
            "hostname_override",
            "node_ip",
            "node_labels",
        ] {
            assert!(names.contains(&want), "{want} missing from\n{steps}");
        }
        for (k, v) in &set {
            assert!(
                init.contains(&format!("config_get {k} main {k}")),
                "the init script does not read {k}"
            );
            assert!(
                uci.contains(&format!("option {k} ")),
                "picolet.config lacks {k}"
            );
            let flag = format!("--{}", k.replace('_', "-"));
            if !["config", "root_dir", "node_ip", "kubeconfig"].contains(k) {
                assert!(init.contains(&flag), "the init script never passes {flag}");
            }
            assert!(!v.is_empty(), "{k} has no value");
        }
        assert!(steps.contains("uci set picolet.main.cert_dir=/srv/pki"));
    }

    #[test]
    fn created_files_are_undone_and_existing_ones_kept() {
        let d = std::env::temp_dir().join(format!("picolet-join-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("kept"), "mine").unwrap();
        let mut c = Created::default();
        assert!(!c.write_new(&d.join("kept"), b"x").unwrap());
        c.write(&d.join("a/b/new"), b"secret").unwrap();
        c.dir(&d.join("m/n")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(d.join("a/b/new")).unwrap().mode() & 0o777,
            0o600
        );
        c.undo();
        let mut left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["kept"]);
        assert_eq!(std::fs::read(d.join("kept")).unwrap(), b"mine");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
