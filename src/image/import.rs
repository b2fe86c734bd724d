//! Air-gapped import: OCI image-layout tarballs (`index.json`, names from
//! `io.containerd.image.name` or `org.opencontainers.image.ref.name`) and
//! `docker save` archives (`manifest.json` with `RepoTags`), optionally
//! gzip/zstd-compressed. The tarball streams once: every file lands in the
//! blob store by its sha256 (nothing held in memory but the small JSON
//! documents); then the images are resolved, unpacked and recorded.
//!
//! A bare `ref.name` without `/` or `:` (e.g. `busybox`) is read as an image
//! name, so it becomes `docker.io/library/busybox:latest`.

use super::reference::Reference;
use super::registry::{self, choose_platform, host_platform, Descriptor, Parsed};
use super::store::{self, hex};
use super::unpack::{self, Compression};
use super::{parse_config, Image, ImageService};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Default)]
struct Scan {
    /// Archive path -> (digest, size) of the file now in the blob store.
    files: HashMap<String, (String, u64)>,
    /// Symlinks in the archive (old `docker save` links duplicate layers).
    links: HashMap<String, String>,
    index_json: Option<Vec<u8>>,
    manifest_json: Option<Vec<u8>>,
    /// Blobs this import added (removed again when no image uses them).
    new_blobs: Vec<String>,
}

impl Scan {
    fn file(&self, p: &str) -> Result<&(String, u64)> {
        let mut p = clean(p);
        for _ in 0..8 {
            if let Some(f) = self.files.get(&p) {
                return Ok(f);
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        bail!("{p:?} is not in the archive")
    }
}

fn clean(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// Resolves a symlink target relative to the link's directory.
fn link_target(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn scan(path: &Path, store_root: &Path) -> Result<Scan> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut br = BufReader::with_capacity(64 << 10, f);
    let head = br
        .fill_buf()
        .with_context(|| format!("read {}", path.display()))?;
    let r: Box<dyn Read> = match unpack::sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(unpack::ZstdReader::new(br)),
        Compression::None => Box::new(br),
    };
    let mut ar = tar::Archive::new(r);
    let mut s = Scan::default();
    let ingest = store_root.join("ingest");
    let blobs = store_root.join("blobs/sha256");
    let mut buf = vec![0u8; 64 << 10];
    for (n, e) in ar.entries().context("read archive")?.enumerate() {
        let mut e = e.context("read archive entry")?;
        let name = clean(&e.path().context("entry path")?.to_string_lossy());
        match e.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Some(t) = e.link_name().ok().flatten() {
                    let t = t.to_string_lossy();
                    let t = if e.header().entry_type() == tar::EntryType::Link {
                        clean(&t)
                    } else {
                        link_target(&name, &t)
                    };
                    s.links.insert(name, t);
                }
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            _ => continue,
        }
        match name.as_str() {
            "index.json" | "manifest.json" => {
                let mut v = Vec::new();
                e.by_ref()
                    .take(registry::MAX_DOC as u64 + 1)
                    .read_to_end(&mut v)
                    .with_context(|| format!("read {name}"))?;
                if v.len() > registry::MAX_DOC {
                    bail!("{name} is too large");
                }
                if name == "index.json" {
                    s.index_json = Some(v);
                } else {
                    s.manifest_json = Some(v);
                }
                continue;
            }
            "oci-layout" | "repositories" => continue,
            _ => {}
        }
        // Any other file goes to the blob store under its own digest.
        let tmp = ingest.join(format!(".import-{}-{n}", std::process::id()));
        let res = (|| -> Result<(String, u64)> {
            let mut out =
                File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut size = 0u64;
            loop {
                let k = e.read(&mut buf).with_context(|| format!("read {name}"))?;
                if k == 0 {
                    break;
                }
                ctx.update(&buf[..k]);
                out.write_all(&buf[..k])
                    .map_err(|err| store::io_err(err, format!("write {}", tmp.display())))?;
                size += k as u64;
            }
            let h = hex(ctx.finish().as_ref());
            if let Some(want) = name.strip_prefix("blobs/sha256/") {
                if want != h {
                    bail!("{name}: content does not match its digest (sha256:{h})");
                }
            }
            let dst = blobs.join(&h);
            if dst.exists() {
                let _ = fs::remove_file(&tmp);
            } else {
                out.sync_all()
                    .map_err(|err| store::io_err(err, format!("fsync {}", tmp.display())))?;
                fs::rename(&tmp, &dst).with_context(|| format!("rename to {}", dst.display()))?;
                s.new_blobs.push(format!("sha256:{h}"));
            }
            Ok((format!("sha256:{h}"), size))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        s.files.insert(name, res?);
    }
    if !s.new_blobs.is_empty() {
        crate::util::fs::sync_dir(&blobs)?;
    }
    Ok(s)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// One image found in the archive, ready to unpack and record.
struct Found {
    config_digest: String,
    config_size: u64,
    manifest_digest: String,
    layers: Vec<Descriptor>,
    names: Vec<Reference>,
}

pub(super) async fn import(svc: &ImageService, path: &Path) -> Result<Vec<Image>> {
    let _shared = svc.store.lock_store(false).await?;
    let (p, root) = (path.to_path_buf(), svc.store.root.clone());
    let s = crate::rt::unblock(move || scan(&p, &root)).await?;
    let res = resolve_and_commit(svc, &s).await;
    // Files of the archive no image uses (docker's json/VERSION...) go again.
    let used: HashSet<String> = svc
        .store
        .records()?
        .iter()
        .flat_map(|r| r.blobs().map(String::from).collect::<Vec<_>>())
        .collect();
    for b in &s.new_blobs {
        if !used.contains(b) {
            let _ = fs::remove_file(svc.store.blob_path(b)?);
        }
    }
    res
}

async fn resolve_and_commit(svc: &ImageService, s: &Scan) -> Result<Vec<Image>> {
    let found = if let Some(m) = &s.manifest_json {
        docker_images(svc, s, m)?
    } else if let Some(ix) = &s.index_json {
        oci_images(svc, ix)?
    } else {
        bail!("neither index.json (OCI layout) nor manifest.json (docker save) found");
    };
    if found.is_empty() {
        bail!("the archive holds no image");
    }
    let mut out = Vec::new();
    for f in found {
        out.push(commit(svc, f).await?);
    }
    Ok(out)
}

fn docker_images(svc: &ImageService, s: &Scan, m: &[u8]) -> Result<Vec<Found>> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(m).context("invalid manifest.json")?;
    let mut out = Vec::new();
    for e in entries {
        let (cd, cs) = s.file(&e.config).context("manifest.json Config")?.clone();
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, size) = s
                .file(l)
                .with_context(|| format!("manifest.json layer {l}"))?
                .clone();
            let head = svc.store.read_blob_head(&d)?;
            let media_type = match unpack::sniff(&head) {
                Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            };
            layers.push(Descriptor {
                media_type: media_type.into(),
                digest: d,
                size,
                ..Default::default()
            });
        }
        let mut names = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            match Reference::parse(&t) {
                Ok(r) => names.push(r),
                Err(err) => log::warn!("manifest.json RepoTags {t:?}: {err:#}; ignored"),
            }
        }
        out.push(Found {
            config_digest: cd,
            config_size: cs,
            manifest_digest: String::new(),
            layers,
            names,
        });
    }
    Ok(out)
}

fn oci_images(svc: &ImageService, ix: &[u8]) -> Result<Vec<Found>> {
    let index = match registry::parse_manifest(registry::MT_OCI_INDEX, ix).context("index.json")? {
        Parsed::Index(i) => i,
        Parsed::Manifest(_) => bail!("index.json is not an index"),
    };
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for d in &index.manifests {
        let name = d
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| d.annotations.get("org.opencontainers.image.ref.name"));
        let names: Vec<Reference> = match name.map(|n| Reference::parse(n)) {
            Some(Ok(r)) => vec![r],
            Some(Err(e)) => {
                log::warn!("index.json name {:?}: {e:#}; imported without a name", name);
                vec![]
            }
            None => vec![],
        };
        let mut desc = d.clone();
        let mut body = svc
            .store
            .read_blob(&desc.digest, registry::MAX_DOC as u64)
            .with_context(|| format!("manifest {} missing from the archive", desc.digest))?;
        let mut parsed = registry::parse_manifest(&desc.media_type, &body)?;
        if let Parsed::Index(i) = &parsed {
            let Some(k) = choose_platform(&i.manifests, &host_platform()) else {
                // A multi-image archive may carry images for other machines
                // (one tarball for a mixed fleet): skip those, keep the rest.
                let e = no_platform_error(&desc.digest, name, &i.manifests);
                log::warn!("{e}; skipped");
                skipped.push(e);
                continue;
            };
            desc = i.manifests[k].clone();
            body = svc
                .store
                .read_blob(&desc.digest, registry::MAX_DOC as u64)
                .with_context(|| format!("manifest {} missing from the archive", desc.digest))?;
            parsed = registry::parse_manifest(&desc.media_type, &body)?;
        }
        let Parsed::Manifest(m) = parsed else {
            bail!("{}: nested image indexes are not supported", desc.digest);
        };
        out.push(Found {
            config_digest: m.config.digest.clone(),
            config_size: m.config.size,
            manifest_digest: desc.digest.clone(),
            layers: m.layers,
            names: names
                .into_iter()
                .map(|mut r| {
                    if r.digest.is_none() {
                        r.digest = Some(d.digest.clone());
                    }
                    r
                })
                .collect(),
        });
    }
    if out.is_empty() && !skipped.is_empty() {
        bail!("{}", skipped.join("; "));
    }
    Ok(out)
}

/// "index sha256:.. (name): no manifest for linux/arm64/v8 (has linux/amd64)".
fn no_platform_error(digest: &str, name: Option<&String>, entries: &[Descriptor]) -> String {
    let fmt = |p: &registry::Platform| {
        let mut s = format!("{}/{}", p.os, p.architecture);
        if !p.variant.is_empty() {
            s = format!("{s}/{}", p.variant);
        }
        s
    };
    let has: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(fmt)
        .collect();
    let name = name.map(|n| format!(" ({n})")).unwrap_or_default();
    format!(
        "index {digest}{name}: no manifest for {} (has {})",
        fmt(&host_platform()),
        if has.is_empty() {
            "none with a platform".to_string()
        } else {
            has.join(", ")
        }
    )
}

async fn commit(svc: &ImageService, f: Found) -> Result<Image> {
    let store = &svc.store;
    let cfg = store
        .read_blob(&f.config_digest, registry::MAX_DOC as u64)
        .with_context(|| format!("image config {} missing from the archive", f.config_digest))?;
    let (config, diff_ids) = parse_config(&cfg)?;
    if diff_ids.len() != f.layers.len() {
        bail!(
            "image {}: config lists {} diff_ids but there are {} layers",
            f.config_digest,
            diff_ids.len(),
            f.layers.len()
        );
    }
    for (l, diff) in f.layers.iter().zip(&diff_ids) {
        if store.has_snapshot(diff) {
            continue;
        }
        unpack::check_layer_media_type(&l.media_type)?;
        let blob = store.blob_path(&l.digest)?;
        if !blob.is_file() {
            bail!("layer {} missing from the archive", l.digest);
        }
        let (diff, snaps) = (diff.clone(), store.root.join("snapshots"));
        crate::rt::unblock(move || unpack::unpack_layer(&blob, &diff, &snaps)).await?;
    }
    let tags: Vec<String> = f.names.iter().filter_map(|r| r.tagged()).collect();
    let digests: Vec<String> = if f.manifest_digest.is_empty() {
        vec![]
    } else {
        f.names
            .iter()
            .filter_map(|r| r.digest.as_ref().map(|d| format!("{}@{d}", r.name())))
            .collect()
    };
    let img = svc
        .commit_image(
            &f.config_digest,
            config,
            diff_ids,
            &f.manifest_digest,
            f.layers,
            tags,
            digests,
            f.config_size,
        )
        .await?;
    log::info!("imported {} {:?}", img.id, img.repo_tags);
    Ok(img)
}

/// Imports new or changed tarballs of `dir`, remembering what was imported
/// in `<images>/import-state.json` (name -> size:mtime).
pub(super) async fn import_dir(svc: &ImageService, dir: &Path) -> Result<Vec<Image>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let state_path = svc.store.root.join("import-state.json");
    let mut state: BTreeMap<String, String> = match crate::util::fs::read_optional(&state_path)? {
        Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            p.is_file()
                && [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]
                    .iter()
                    .any(|x| n.ends_with(x))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = match fs::metadata(&p) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                format!("{}:{}", m.len(), m.mtime())
            }
            Err(_) => continue,
        };
        if state.get(&name) == Some(&stamp) {
            continue;
        }
        match svc.import(&p).await {
            Ok(imgs) => {
                out.extend(imgs);
                state.insert(name, stamp);
                let b = serde_json::to_vec_pretty(&state).context("encode import state")?;
                crate::util::fs::write_atomic(&state_path, &b)?;
            }
            Err(e) => log::error!("{e:#}"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_in_archive() {
        assert_eq!(
            link_target("abc/layer.tar", "../def/layer.tar"),
            "def/layer.tar"
        );
        assert_eq!(link_target("x", "y"), "y");
        assert_eq!(clean("./blobs/sha256/a"), "blobs/sha256/a");
    }
}
