//! The `picolet` binary: one multi-call executable (argh subcommands).

use argh::FromArgs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("picolet {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let res = match cli.cmd {
        None => {
            eprintln!(
                "picolet: a subcommand is required (run, pause, images, check-config); see --help"
            );
            return ExitCode::from(2);
        }
        Some(Cmd::Pause(_)) => {
            eprintln!("picolet pause: not built yet");
            return ExitCode::FAILURE;
        }
        Some(Cmd::Run(a)) => run(a),
        Some(Cmd::Images(a)) => {
            picolet::logger::init(a.v);
            let _ = (a.root_dir, a.config);
            Err(anyhow::anyhow!("picolet images: not built yet"))
        }
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

fn run(a: RunArgs) -> anyhow::Result<()> {
    picolet::logger::init(a.v);
    let cfg = picolet::config::Config::new(
        a.config.as_deref(),
        a.root_dir,
        a.kubeconfig,
        a.hostname_override,
        a.node_ip,
    )?;
    log::info!(
        "picolet {} starting as node {}",
        env!("CARGO_PKG_VERSION"),
        cfg.node_name
    );
    Err(anyhow::anyhow!("picolet run: not built yet"))
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
