//! `cargo xtask image pack`: a root file system directory (from mmdebstrap, debootstrap, or any
//! build) → a one-layer OCI image with the given environment. Reproducible: entries are sorted,
//! times are zero, owners and modes come from the files, hard links stay hard links. Device
//! nodes, sockets and pipes are left out (a container runtime provides `/dev`).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::image::MediaType;
use serde_json::json;

use super::layer::{add_layer, LayerWriter, Owner};
use super::{canonical_json, LayoutWriter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackOptions {
    pub rootfs: PathBuf,
    pub output: PathBuf,
    pub tag: String,
    /// `NAME=value` entries for the config's `Env`.
    pub env: Vec<String>,
}

pub fn pack(options: &PackOptions) -> Result<()> {
    if !options.rootfs.is_dir() {
        bail!("{} is not a directory", options.rootfs.display());
    }
    for entry in &options.env {
        if entry.split_once('=').is_none_or(|(name, _)| name.is_empty()) {
            bail!("--env {entry:?}: write NAME=value");
        }
    }
    let writer = LayoutWriter::create(&options.output)?;
    let mut skipped = 0usize;
    let (layer, diff_id) = add_layer(&writer, |layer| {
        let mut links = HashMap::new();
        walk(&options.rootfs, Path::new(""), layer, &mut links, &mut skipped)
    })
    .with_context(|| format!("packing {}", options.rootfs.display()))?;
    if skipped > 0 {
        eprintln!("left out {skipped} device nodes, sockets and pipes");
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": { "Env": options.env },
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "cargo xtask image pack" }],
    });
    let config = writer.add_bytes(MediaType::ImageConfig, &canonical_json(&config)?)?;
    let manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .build()
        .context("building the manifest")?;
    let manifest = writer.add_json(MediaType::ImageManifest, &manifest)?;
    let digest = manifest.digest().to_string();
    let written = writer.finish(manifest, &options.tag)?;
    eprintln!("wrote {}:{} ({digest})", written.display(), options.tag);
    Ok(())
}

fn walk(
    root: &Path,
    relative: &Path,
    layer: &mut LayerWriter<'_>,
    links: &mut HashMap<(u64, u64), String>,
    skipped: &mut usize,
) -> Result<()> {
    let dir = root.join(relative);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let path = relative.join(&name);
        let host = root.join(&path);
        let text = path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))?.to_owned();
        let meta = host.symlink_metadata().with_context(|| format!("cannot stat {}", host.display()))?;
        let owner = Owner { uid: u64::from(meta.uid()), gid: u64::from(meta.gid()), mode: meta.mode() & 0o7777 };
        let kind = meta.file_type();
        if kind.is_dir() {
            layer.dir(&text, owner)?;
            walk(root, &path, layer, links, skipped)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&host)?;
            layer.symlink(&text, target.to_str().context("a symlink target is not UTF-8")?, owner)?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    layer.hard_link(&text, first, owner)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), text.clone());
            }
            let file = File::open(&host).with_context(|| format!("cannot read {}", host.display()))?;
            layer.file(&text, owner, meta.len(), file)?;
        } else {
            *skipped += 1;
        }
    }
    Ok(())
}
