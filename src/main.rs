//! The `picolet` binary: one multi-call executable (argh subcommands).

use argh::FromArgs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// zig libc's malloc keeps every slab it ever used; see util::heap.
#[cfg(target_env = "musl")]
#[global_allocator]
static HEAP: picolet::util::heap::Heap = picolet::util::heap::Heap;

/// picolet: a small Kubernetes node agent.
#[derive(FromArgs)]
struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Run(RunArgs),
    Join(picolet::join::JoinArgs),
    Pause(PauseArgs),
    Images(ImagesArgs),
    CheckConfig(CheckConfigArgs),
}

/// Run the node agent.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct RunArgs {
    #[argh(
        option,
        description = "the KubeletConfiguration file (kubelet.config.k8s.io/v1beta1)"
    )]
    config: Option<PathBuf>,
    #[argh(option, description = "kubeconfig of the API server (optional)")]
    kubeconfig: Option<PathBuf>,
    #[argh(
        option,
        long = "bootstrap-kubeconfig",
        description = "credentials to request a client certificate with when --kubeconfig is missing or expired (TLS bootstrap)"
    )]
    bootstrap_kubeconfig: Option<PathBuf>,
    #[argh(
        option,
        long = "cert-dir",
        description = "client and serving certificates (default <root-dir>/pki)"
    )]
    cert_dir: Option<PathBuf>,
    #[argh(
        option,
        long = "root-dir",
        description = "state directory (default /var/lib/picolet)"
    )]
    root_dir: Option<PathBuf>,
    #[argh(
        option,
        long = "hostname-override",
        description = "node name instead of the host name"
    )]
    hostname_override: Option<String>,
    #[argh(option, long = "node-ip", description = "IP address of the node")]
    node_ip: Option<IpAddr>,
    #[argh(
        option,
        long = "node-labels",
        description = "labels the Node is registered with: key=value,key2=value2"
    )]
    node_labels: Option<String>,
    #[argh(
        option,
        short = 'v',
        long = "v",
        default = "2",
        description = "log verbosity (klog levels)"
    )]
    v: u8,
}

/// The pod's infra process: holds the pod's namespaces, reaps zombies.
#[derive(FromArgs)]
#[argh(subcommand, name = "pause")]
struct PauseArgs {}

/// Manage images in picolet's store.
#[derive(FromArgs)]
#[argh(subcommand, name = "images")]
struct ImagesArgs {
    #[argh(
        option,
        long = "root-dir",
        description = "state directory (default /var/lib/picolet)"
    )]
    root_dir: Option<PathBuf>,
    #[argh(
        option,
        description = "the KubeletConfiguration file (registries, credentials)"
    )]
    config: Option<PathBuf>,
    #[argh(
        option,
        short = 'v',
        long = "v",
        default = "2",
        description = "log verbosity"
    )]
    v: u8,
    #[argh(subcommand)]
    cmd: ImagesCmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum ImagesCmd {
    Pull(ImagesPull),
    List(ImagesList),
    Rm(ImagesRm),
    Prune(ImagesPrune),
    Import(ImagesImport),
}

/// Pull an image from its registry (or a configured mirror).
#[derive(FromArgs)]
#[argh(subcommand, name = "pull")]
struct ImagesPull {
    #[argh(
        positional,
        description = "image reference, e.g. busybox or 127.0.0.1:5000/app:1"
    )]
    reference: String,
}

/// List the images in the store.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct ImagesList {}

/// Remove an image by reference (only that tag when it has others) or id.
#[derive(FromArgs)]
#[argh(subcommand, name = "rm")]
struct ImagesRm {
    #[argh(positional, description = "image reference or id")]
    image: String,
}

/// Remove untagged images and unreferenced blobs and snapshots.
#[derive(FromArgs)]
#[argh(subcommand, name = "prune")]
struct ImagesPrune {}

/// Import an OCI image-layout tarball or a `docker save` archive.
#[derive(FromArgs)]
#[argh(subcommand, name = "import")]
struct ImagesImport {
    #[argh(
        positional,
        description = "tarball (optionally gzip- or zstd-compressed)"
    )]
    file: PathBuf,
}

/// Check a KubeletConfiguration file and print the effective config.
#[derive(FromArgs)]
#[argh(subcommand, name = "check-config")]
struct CheckConfigArgs {
    #[argh(option, description = "the KubeletConfiguration file to check")]
    config: PathBuf,
    #[argh(
        switch,
        description = "also fail on warnings (unknown or ignored fields)"
    )]
    strict: bool,
}

fn main() -> ExitCode {
    // Before any thread exists: it sets an environment variable.
    picolet::logger::quiet_error_backtraces();
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("picolet {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let res = match cli.cmd {
        None => {
            eprintln!(
                "picolet: a subcommand is required (run, join, pause, images, check-config); see --help"
            );
            return ExitCode::from(2);
        }
        Some(Cmd::Pause(_)) => {
            if let Err(e) = picolet::pause::run() {
                eprintln!("picolet pause: {e}");
                return ExitCode::FAILURE;
            }
            return ExitCode::SUCCESS;
        }
        Some(Cmd::Run(a)) => run(a),
        Some(Cmd::Join(a)) => picolet::join::main(a),
        Some(Cmd::Images(a)) => images(a),
        Some(Cmd::CheckConfig(a)) => check_config(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("picolet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn images(a: ImagesArgs) -> anyhow::Result<()> {
    use picolet::image::ImageService;
    picolet::logger::init(a.v);
    let cfg = picolet::config::Config::new(a.config.as_deref(), a.root_dir, None, None, None)?;
    let svc = ImageService::open(&cfg)?;
    picolet::rt::block_on(async move {
        match a.cmd {
            ImagesCmd::Pull(p) => {
                let img = svc.pull(&p.reference).await?;
                println!("{}", img.id);
            }
            ImagesCmd::List(_) => {
                let mut rows = Vec::new();
                for i in svc.list()? {
                    let short =
                        i.id.trim_start_matches("sha256:")
                            .chars()
                            .take(12)
                            .collect::<String>();
                    let size = human_size(i.size);
                    if i.repo_tags.is_empty() {
                        rows.push(("<none>".to_string(), short, size));
                    } else {
                        for t in &i.repo_tags {
                            rows.push((t.clone(), short.clone(), size.clone()));
                        }
                    }
                }
                rows.sort();
                let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(9);
                println!("{:<w$}  {:<12}  {:>9}", "REFERENCE", "IMAGE ID", "SIZE");
                for (r, id, s) in rows {
                    println!("{r:<w$}  {id:<12}  {s:>9}");
                }
            }
            ImagesCmd::Rm(r) => svc.remove(&r.image).await?,
            ImagesCmd::Prune(_) => {
                let rep = svc.prune().await?;
                for id in &rep.removed {
                    println!("deleted {id}");
                }
                println!("freed {}", human_size(rep.freed_bytes));
            }
            ImagesCmd::Import(i) => {
                for img in svc.import(&i.file).await? {
                    let names = if img.repo_tags.is_empty() {
                        "<none>".to_string()
                    } else {
                        img.repo_tags.join(" ")
                    };
                    println!("{} {names}", img.id);
                }
            }
        }
        Ok(())
    })
}

fn human_size(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    picolet::logger::init(a.v);
    let mut cfg = picolet::config::Config::new(
        a.config.as_deref(),
        a.root_dir,
        a.kubeconfig,
        a.hostname_override,
        a.node_ip,
    )?;
    if let Some(l) = &a.node_labels {
        let labels = picolet::node::register::parse_node_labels(l)?;
        picolet::node::register::validate_node_labels(&labels)?;
        cfg.node_labels = labels;
    }
    // TLS bootstrap (picolet::kube::bootstrap): where the node's kubeconfig is written.
    if a.bootstrap_kubeconfig.is_some() && cfg.kubeconfig.is_none() {
        anyhow::bail!(
            "--bootstrap-kubeconfig needs --kubeconfig (where the node's kubeconfig is written)"
        );
    }
    cfg.bootstrap_kubeconfig = a.bootstrap_kubeconfig;
    cfg.cert_dir_flag = a.cert_dir;
    log::info!(
        "picolet {} starting as node {}",
        env!("CARGO_PKG_VERSION"),
        cfg.node_name
    );
    let exit = picolet::rt::block_on(picolet::agent::run_node(cfg))?;
    log::info!("picolet stopped ({exit:?})");
    Ok(())
}

/// Parses the file as `run` would (same defaults and validation) and prints
/// the result, so packagers and CI can check shipped configs on the target.
fn check_config(a: CheckConfigArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let path = a.config.display();
    let text = std::fs::read_to_string(&a.config).with_context(|| format!("read config {path}"))?;
    let (cfg, warnings) = picolet::api::yaml::single(&text)
        .and_then(|v| picolet::config::KubeletConfig::from_value(&v))
        .with_context(|| format!("config {path}"))?;
    for w in &warnings {
        eprintln!("picolet check-config: {path}: warning: {w}");
    }
    // not println!: a closed pipe (`| head`) must be an error, not a panic
    writeln!(std::io::stdout().lock(), "{cfg:#?}").context("write to stdout")?;
    if a.strict && !warnings.is_empty() {
        anyhow::bail!("config {path}: {} warning(s) with --strict", warnings.len());
    }
    Ok(())
}
