//! A registry pull: manifest (platform choice for indexes), config, layers
//! streamed into the store (resumable), unpacked on the blocking pool while
//! the next layer downloads, then the image record.

use super::reference::Reference;
use super::registry::{self, choose_platform, host_platform, Descriptor, Parsed, Registry};
use super::store::Store;
use super::{parse_config, unpack, Image, ImageService};
use anyhow::{anyhow, bail, Context, Result};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often a long pull logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

struct Progress {
    name: String,
    start: Instant,
    last: Instant,
    done: u64,
    total: u64,
    layer: usize,
    layers: usize,
}

impl Progress {
    fn add(&mut self, n: usize) {
        self.done += n as u64;
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            let secs = self.start.elapsed().as_secs_f64().max(0.001);
            log::info!(
                "pulling {}: layer {}/{}, {:.1}/{:.1} MiB, {:.1} MiB/s",
                self.name,
                self.layer,
                self.layers,
                mib(self.done),
                mib(self.total),
                mib(self.done) / secs
            );
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub(super) async fn pull(
    svc: &ImageService,
    r: &Reference,
    creds: Option<super::auth::Credentials>,
) -> Result<Image> {
    let start = Instant::now();
    let store = &svc.store;
    let _shared = store.lock_store(false).await?;
    let endpoints = svc.registries.endpoints(&r.domain)?;
    let reg = Registry::new(r.clone(), endpoints, creds, svc.auth.clone(), svc.retry);

    let (ct, body, top_digest) = reg.manifest(r.object()).await?;
    let (mut parsed, mut mdigest, mut mbody) = (
        registry::parse_manifest(&ct, &body)?,
        top_digest.clone(),
        body,
    );
    if let Parsed::Index(ix) = &parsed {
        let want = host_platform();
        let i = choose_platform(&ix.manifests, &want).ok_or_else(|| {
            let have: Vec<String> = ix
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| {
                    format!(
                        "{}/{}{}{}",
                        p.os,
                        p.architecture,
                        if p.variant.is_empty() { "" } else { "/" },
                        p.variant
                    )
                })
                .collect();
            anyhow!(
                "no image for platform {}/{}{} in the index (it has: {})",
                want.os,
                want.architecture,
                if want.variant.is_empty() {
                    String::new()
                } else {
                    format!("/{}", want.variant)
                },
                have.join(", ")
            )
        })?;
        let d = ix.manifests[i].clone();
        let (ct2, b2, dg2) = reg.manifest(&d.digest).await?;
        let ct2 = if ct2.is_empty() {
            d.media_type.clone()
        } else {
            ct2
        };
        parsed = registry::parse_manifest(&ct2, &b2)?;
        if matches!(parsed, Parsed::Index(_)) {
            bail!("nested image indexes are not supported");
        }
        (mdigest, mbody) = (dg2, b2);
    }
    let Parsed::Manifest(m) = parsed else {
        bail!("expected an image manifest");
    };
    store.put_blob_bytes(&mdigest, &mbody)?;

    let cfg_bytes = if store.has_blob(&m.config.digest) {
        store.read_blob(&m.config.digest, registry::MAX_DOC as u64)?
    } else {
        let b = reg.small_blob(&m.config).await.context("image config")?;
        store.put_blob_bytes(&m.config.digest, &b)?;
        b
    };
    let (config, diff_ids) = parse_config(&cfg_bytes)?;
    if diff_ids.len() != m.layers.len() {
        bail!(
            "image config lists {} diff_ids but the manifest has {} layers",
            diff_ids.len(),
            m.layers.len()
        );
    }
    for l in &m.layers {
        unpack::check_layer_media_type(&l.media_type)?;
        if !l.urls.is_empty() && !store.has_blob(&l.digest) {
            log::debug!(
                "layer {} has foreign URLs; fetching it from the registry",
                l.digest
            );
        }
    }

    let mut prog = Progress {
        name: r.to_string(),
        start,
        last: Instant::now(),
        done: 0,
        total: m.layers.iter().map(|l| l.size).sum(),
        layers: m.layers.len(),
        layer: 0,
    };
    // One unpack worker on the blocking pool takes layers in order as their
    // downloads finish, so unpacking overlaps the next download.
    let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, String)>();
    let snapshots = store.root.join("snapshots");
    let mut worker = Some(crate::rt::unblock(move || -> Result<()> {
        for (blob, diff) in rx {
            unpack::unpack_layer(&blob, &diff, &snapshots)?;
        }
        Ok(())
    }));
    let n = m.layers.len();
    for (i, (l, diff)) in m.layers.iter().zip(&diff_ids).enumerate() {
        prog.layer = i + 1;
        if store.has_snapshot(diff) {
            prog.done += l.size;
            continue;
        }
        if worker.as_ref().is_some_and(|w| w.is_finished()) {
            break; // it failed: its error is reported below
        }
        download(&reg, store, l, &mut prog, svc.retry)
            .await
            .with_context(|| format!("layer {}/{n} ({})", i + 1, l.digest))?;
        let _ = tx.send((store.blob_path(&l.digest)?, diff.clone()));
    }
    drop(tx);
    if let Some(w) = worker.take() {
        w.await?;
    }
    for d in &diff_ids {
        if !store.has_snapshot(d) {
            bail!("layer {d} was not unpacked");
        }
    }
    let img = svc
        .commit_image(
            &m.config.digest,
            config,
            diff_ids,
            &mdigest,
            m.layers.clone(),
            r.tagged().into_iter().collect(),
            vec![format!("{}@{top_digest}", r.name())],
            m.config.size,
        )
        .await?;
    log::info!(
        "pulled {r} ({}) in {:.1}s, {:.1} MiB",
        img.id,
        start.elapsed().as_secs_f64(),
        mib(prog.total)
    );
    Ok(img)
}

/// Is this error a broken or stalled stream worth resuming?
fn broken_stream(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::InvalidData
            )
        })
    })
}

/// Streams one blob into the store, resuming with `Range` after a broken
/// stream (and after a previous process died mid-download).
async fn download(
    reg: &Registry,
    store: &Store,
    d: &Descriptor,
    prog: &mut Progress,
    retry: registry::RetryPolicy,
) -> Result<()> {
    let Some(mut ing) = store.ingest(&d.digest, d.size).await? else {
        prog.done += d.size;
        return Ok(());
    };
    if ing.offset > 0 {
        log::info!(
            "{}: resuming {} at {} bytes",
            prog.name,
            d.digest,
            ing.offset
        );
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut attempt = 0;
    loop {
        attempt += 1;
        let res: Result<()> = async {
            let (mut resp, start) = reg.blob(&d.digest, ing.offset).await?;
            if start != ing.offset {
                ing.reset().await?;
            }
            loop {
                let k = resp.body.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                ing.write(&buf[..k]).await?;
                prog.add(k);
            }
            if ing.offset < ing.size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended at {} of {} bytes", ing.offset, ing.size),
                )
                .into());
            }
            Ok(())
        }
        .await;
        match res {
            Ok(()) => return ing.commit().await,
            Err(e) if broken_stream(&e) && attempt < retry.attempts => {
                ing.flush().await?;
                let wait = registry::backoff(attempt, retry.base, None);
                log::warn!(
                    "{}: {}: {e:#}; resuming at {} bytes in {wait:?}",
                    prog.name,
                    d.digest,
                    ing.offset
                );
                async_io::Timer::after(wait).await;
            }
            Err(e) => {
                let _ = ing.flush().await;
                return Err(e);
            }
        }
    }
}
