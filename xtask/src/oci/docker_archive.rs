//! `docker save` archives as input: extracted into a temporary directory and, for the legacy
//! format (`manifest.json` with `Config` and `Layers`), converted to an OCI layout. Archives from
//! Docker 25 and later already hold an OCI layout and are used as they are. Either way, every
//! blob is then verified as the layout is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use super::{canonical_json, sha256_hex, HashingReader, REF_NAME};

/// A temporary layout made from an archive (`<root>/layout`); all of `<root>` is removed on drop.
pub struct Converted {
    root: PathBuf,
    layout: PathBuf,
}

impl Converted {
    pub fn dir(&self) -> &Path {
        &self.layout
    }
}

impl Drop for Converted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacyManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub fn convert(archive: &Path) -> Result<Converted> {
    let root = std::env::temp_dir().join(format!("lre-docker-archive-{}-{}", std::process::id(), unique()));
    let converted = Converted { layout: root.join("layout"), root };
    let extracted = converted.root.join("archive");
    std::fs::create_dir_all(&extracted).with_context(|| format!("cannot create {}", extracted.display()))?;
    extract(archive, &extracted).with_context(|| format!("reading the docker archive {}", archive.display()))?;
    if extracted.join("oci-layout").exists() {
        std::fs::rename(&extracted, &converted.layout)?;
    } else {
        to_layout(&extracted, &converted.layout)
            .with_context(|| format!("converting the docker archive {}", archive.display()))?;
    }
    Ok(converted)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The archive's member name as a safe relative path (absolute names and `..` are refused).
fn member_path(raw: &Path) -> Result<PathBuf> {
    super::unpack::entry_path(raw).with_context(|| format!("archive member {}", raw.display()))
}

fn extract(archive: &Path, into: &Path) -> Result<()> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    let mut links = Vec::new();
    for entry in tar.entries().context("not a tar archive")? {
        let mut entry = entry.context("reading a member")?;
        let raw = entry.path().context("a member name")?.into_owned();
        let relative = member_path(&raw)?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let destination = into.join(&relative);
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&destination)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = destination.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut out = File::create(&destination)?;
                io::copy(&mut entry, &mut out).with_context(|| format!("extracting {}", raw.display()))?;
            }
            // `docker save` shares a layer between images with a relative symlink.
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name()?.context("a link without a target")?.into_owned();
                let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                    relative.parent().unwrap_or(Path::new("")).join(&target)
                } else {
                    target.clone()
                };
                links.push((relative, base));
            }
            other => bail!("archive member {} has unexpected type {other:?}", raw.display()),
        }
    }
    for (link, target) in links {
        let target =
            member_path(&super::unpack::lexical(&target)).with_context(|| format!("link {}", link.display()))?;
        if let Some(parent) = into.join(&link).parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::hard_link(into.join(&target), into.join(&link)).with_context(|| {
            format!("link {} to {}: the target is not in the archive", link.display(), target.display())
        })?;
    }
    Ok(())
}

fn to_layout(extracted: &Path, layout: &Path) -> Result<()> {
    let manifest_path = extracted.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path)
        .context("neither an OCI layout nor a legacy docker archive (no manifest.json)")?;
    let images: Vec<LegacyManifest> =
        serde_json::from_str(&text).context("manifest.json is not a docker save manifest")?;
    let [image] = images.as_slice() else {
        bail!("the archive holds {} images; save exactly one (`docker save IMAGE:TAG`)", images.len());
    };
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let add = |member: &str, media_type: MediaType| -> Result<Descriptor> {
        let path = extracted.join(member_path(Path::new(member))?);
        let file = File::open(&path).with_context(|| format!("{member} is named in manifest.json but missing"))?;
        let size = file.metadata()?.len();
        let mut magic = [0u8; 2];
        let gzip = File::open(&path)?.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
        let digest = HashingReader::new(io::BufReader::new(file)).finish()?;
        let blob = blobs.join(sha256_hex(&digest)?);
        if std::fs::rename(&path, &blob).is_err() {
            std::fs::copy(&path, &blob).with_context(|| format!("storing {member}"))?;
        }
        let media_type = match (media_type, gzip) {
            (MediaType::ImageLayer, true) => MediaType::ImageLayerGzip,
            (other, _) => other,
        };
        Ok(Descriptor::new(media_type, size, digest))
    };
    let config = add(&image.config, MediaType::ImageConfig)?;
    let mut layers = Vec::new();
    let mut seen = BTreeMap::new();
    for member in &image.layers {
        if let Some(descriptor) = seen.get(member) {
            layers.push(Descriptor::clone(descriptor));
            continue;
        }
        let descriptor = add(member, MediaType::ImageLayer)?;
        seen.insert(member.clone(), descriptor.clone());
        layers.push(descriptor);
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .context("building the manifest")?;
    let bytes = canonical_json(&manifest)?;
    let digest = super::sha256_digest(&bytes);
    std::fs::write(blobs.join(sha256_hex(&digest)?), &bytes)?;
    let mut descriptor = Descriptor::new(MediaType::ImageManifest, bytes.len() as u64, digest);
    if let Some(tag) = image.repo_tags.as_ref().and_then(|tags| tags.first()) {
        descriptor
            .set_annotations(Some([(REF_NAME.to_owned(), tag.rsplit(':').next().unwrap_or(tag).to_owned())].into()));
    }
    super::write_index(layout, descriptor)
}
