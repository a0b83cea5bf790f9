//! OCI images without a container engine: read an image layout (or a `docker save` archive,
//! converted to a layout first) with every blob's digest and size verified as it is read, write
//! layouts reproducibly and atomically, turn a directory into a layer (`pack`), unpack an image
//! safely (`unpack`) and wrap a toolchain image as a NativeLink worker (`wrap`).

pub mod docker_archive;
pub mod layer;
pub mod pack;
pub mod unpack;
pub mod wrap;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Manifests, indexes and configs larger than this are refused before they are read.
const MAX_METADATA_BYTES: u64 = 16 << 20;
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    pub fn of_layer(media_type: &MediaType) -> Result<Compression> {
        match media_type {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Ok(Compression::None),
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Ok(Compression::Gzip),
            MediaType::Other(other) if other == DOCKER_LAYER_TAR => Ok(Compression::None),
            MediaType::Other(other) if other == DOCKER_LAYER_GZIP => Ok(Compression::Gzip),
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
                bail!("layer media type {media_type} (zstd) is not supported; convert the image with `skopeo copy --dest-compress-format gzip`")
            }
            other => bail!("unknown layer media type {other}; expected an OCI or Docker tar or tar+gzip layer"),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    digest_of_hex(&hex(&Sha256::digest(bytes)))
}

fn digest_of_hex(hex: &str) -> Digest {
    Digest::from_str(&format!("sha256:{hex}")).expect("a sha256 hex string is a valid digest")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex part of a sha256 digest; other algorithms are refused.
pub fn sha256_hex(digest: &Digest) -> Result<&str> {
    match digest.as_ref().strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
            Ok(hex)
        }
        _ => bail!("digest {digest} is not a sha256 digest (the only algorithm this tool reads)"),
    }
}

/// JSON with sorted keys (oci-spec keeps maps in `HashMap`s, whose order changes per run), so the
/// same image gives the same bytes and digests every time.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value).context("serialising OCI metadata")?;
    Ok(serde_json::to_vec(&value).expect("a JSON value serialises"))
}

/// Hashes and counts what passes through; [`VerifyingReader::finish`] compares both with the
/// descriptor. Reading past the descriptor's size is an error at once.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    expected_size: u64,
    expected_hex: String,
    what: String,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected_size: u64, expected_hex: &str, what: String) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
            expected_size,
            expected_hex: expected_hex.to_owned(),
            what,
        }
    }

    /// Reads whatever is left, then checks size and digest.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).with_context(|| format!("reading {}", self.what))?;
        if self.read != self.expected_size {
            bail!("{} is truncated: {} bytes, its descriptor says {}", self.what, self.read, self.expected_size);
        }
        let actual = hex(&self.hasher.finalize());
        if actual != self.expected_hex {
            bail!("{} has digest sha256:{actual}, its descriptor says sha256:{}", self.what, self.expected_hex);
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.expected_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is longer than the {} bytes its descriptor says", self.what, self.expected_size),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// An image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
pub struct Layout {
    pub dir: PathBuf,
}

/// One image of a layout: its manifest (verified) and config (verified).
pub struct Image {
    pub manifest_descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    /// The config as JSON, with fields oci-spec does not model kept.
    pub config_json: serde_json::Value,
}

impl Image {
    /// `sha256:<hex>` of the manifest: the image's identity.
    pub fn digest(&self) -> &Digest {
        self.manifest_descriptor.digest()
    }

    /// The config's `Env` as a map (later entries win, as for a container runtime).
    pub fn env(&self) -> Vec<(String, String)> {
        let entries = self.config.config().as_ref().and_then(|c| c.env().clone()).unwrap_or_default();
        let mut env: Vec<(String, String)> = Vec::new();
        for entry in entries {
            let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
            env.retain(|(n, _)| n != name);
            env.push((name.to_owned(), value.to_owned()));
        }
        env
    }
}

impl Layout {
    pub fn open(dir: &Path) -> Result<Layout> {
        let marker = dir.join("oci-layout");
        let text = std::fs::read_to_string(&marker)
            .with_context(|| format!("{} is not an OCI image layout (no readable oci-layout file)", dir.display()))?;
        let version: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", marker.display()))?;
        if version["imageLayoutVersion"] != "1.0.0" {
            bail!("{} says imageLayoutVersion {}, expected \"1.0.0\"", marker.display(), version["imageLayoutVersion"]);
        }
        Ok(Layout { dir: dir.to_owned() })
    }

    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self.dir.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    /// A blob as a stream whose size and digest are checked by [`VerifyingReader::finish`].
    pub fn open_blob(&self, descriptor: &Descriptor, what: &str) -> Result<VerifyingReader<File>> {
        let path = self.blob_path(descriptor.digest())?;
        let file = File::open(&path)
            .with_context(|| format!("{what} {} is missing from {}", descriptor.digest(), self.dir.display()))?;
        let hex = sha256_hex(descriptor.digest())?;
        Ok(VerifyingReader::new(file, descriptor.size(), hex, format!("{what} {}", descriptor.digest())))
    }

    /// A small blob (manifest, index, config), read whole and verified.
    pub fn read_blob(&self, descriptor: &Descriptor, what: &str) -> Result<Vec<u8>> {
        if descriptor.size() > MAX_METADATA_BYTES {
            bail!(
                "{what} {} claims {} bytes; refusing more than {MAX_METADATA_BYTES}",
                descriptor.digest(),
                descriptor.size()
            );
        }
        let mut reader = self.open_blob(descriptor, what)?;
        let mut bytes = Vec::with_capacity(descriptor.size() as usize);
        reader.by_ref().take(descriptor.size()).read_to_end(&mut bytes).with_context(|| format!("reading {what}"))?;
        reader.finish()?;
        Ok(bytes)
    }

    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.dir.join("index.json");
        let file = File::open(&path).with_context(|| format!("{} has no index.json", self.dir.display()))?;
        ImageIndex::from_reader(file).with_context(|| format!("{} is not a valid OCI image index", path.display()))
    }

    /// The image named `tag` (`org.opencontainers.image.ref.name`), or the only one.
    pub fn image(&self, tag: Option<&str>) -> Result<Image> {
        let index = self.index()?;
        let manifests = index.manifests();
        let chosen: Vec<&Descriptor> = match tag {
            Some(tag) => manifests.iter().filter(|d| ref_name(d) == Some(tag)).collect(),
            None => manifests.iter().collect(),
        };
        let descriptor = match chosen.as_slice() {
            [one] => (*one).clone(),
            [] => bail!(
                "{} has no image{}; it has: {}",
                self.dir.display(),
                tag.map(|t| format!(" tagged {t:?}")).unwrap_or_default(),
                describe_manifests(manifests)
            ),
            _ => bail!(
                "{} holds several images ({}); name one as oci:{}:<tag>",
                self.dir.display(),
                describe_manifests(manifests),
                self.dir.display()
            ),
        };
        match descriptor.media_type() {
            MediaType::ImageManifest => {}
            MediaType::Other(other) if other == DOCKER_MANIFEST => {}
            MediaType::ImageIndex => bail!(
                "{} points at a nested index (a multi-platform image); copy the linux/amd64 image out first: \
                 `skopeo copy --override-arch amd64 oci:… oci:…`",
                self.dir.display()
            ),
            other => bail!("unknown manifest media type {other} in {}/index.json", self.dir.display()),
        }
        let bytes = self.read_blob(&descriptor, "manifest")?;
        let manifest = ImageManifest::from_reader(bytes.as_slice())
            .with_context(|| format!("manifest {} is not a valid OCI image manifest", descriptor.digest()))?;
        match manifest.config().media_type() {
            MediaType::ImageConfig => {}
            MediaType::Other(other) if other == DOCKER_CONFIG => {}
            other => bail!("unknown config media type {other} in manifest {}", descriptor.digest()),
        }
        for layer in manifest.layers() {
            Compression::of_layer(layer.media_type())
                .with_context(|| format!("layer {} of manifest {}", layer.digest(), descriptor.digest()))?;
        }
        let bytes = self.read_blob(manifest.config(), "config")?;
        let config = ImageConfiguration::from_reader(bytes.as_slice())
            .with_context(|| format!("config {} is not a valid OCI image configuration", manifest.config().digest()))?;
        let config_json = serde_json::from_slice(&bytes).expect("a valid configuration is JSON");
        if config.rootfs().diff_ids().len() != manifest.layers().len() {
            bail!(
                "manifest {} has {} layers but its config lists {} diff_ids",
                descriptor.digest(),
                manifest.layers().len(),
                config.rootfs().diff_ids().len()
            );
        }
        Ok(Image { manifest_descriptor: descriptor, manifest, config, config_json })
    }
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor.annotations().as_ref().and_then(|a| a.get(REF_NAME)).map(String::as_str)
}

fn describe_manifests(manifests: &[Descriptor]) -> String {
    if manifests.is_empty() {
        return "no images".to_owned();
    }
    manifests
        .iter()
        .map(|d| ref_name(d).map_or_else(|| d.digest().to_string(), str::to_owned))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `oci:DIR[:TAG]` (as skopeo writes it) or `docker-archive:FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Layout { dir: PathBuf, tag: Option<String> },
    DockerArchive(PathBuf),
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef> {
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => (dir, Some(tag.to_owned())),
                _ => (rest, None),
            };
            if dir.is_empty() {
                bail!("{text:?}: write oci:DIR or oci:DIR:TAG");
            }
            Ok(ImageRef::Layout { dir: PathBuf::from(dir), tag })
        } else if let Some(file) = text.strip_prefix("docker-archive:") {
            if file.is_empty() {
                bail!("{text:?}: write docker-archive:FILE");
            }
            Ok(ImageRef::DockerArchive(PathBuf::from(file)))
        } else {
            bail!("{text:?} is not an image reference; write oci:DIR[:TAG] or docker-archive:FILE")
        }
    }

    /// Relative paths are taken from `base`.
    pub fn relative_to(self, base: &Path) -> ImageRef {
        match self {
            ImageRef::Layout { dir, tag } => ImageRef::Layout { dir: base.join(dir), tag },
            ImageRef::DockerArchive(file) => ImageRef::DockerArchive(base.join(file)),
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Layout { dir, tag: Some(tag) } => write!(f, "oci:{}:{tag}", dir.display()),
            ImageRef::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::DockerArchive(file) => write!(f, "docker-archive:{}", file.display()),
        }
    }
}

/// An opened image and the layout holding it (a converted docker archive lives in a temporary
/// layout that is removed on drop).
pub struct Opened {
    pub layout: Layout,
    pub image: Image,
    _converted: Option<docker_archive::Converted>,
}

pub fn open(reference: &ImageRef) -> Result<Opened> {
    match reference {
        ImageRef::Layout { dir, tag } => {
            let layout = Layout::open(dir)?;
            let image = layout.image(tag.as_deref()).with_context(|| format!("reading {reference}"))?;
            Ok(Opened { layout, image, _converted: None })
        }
        ImageRef::DockerArchive(file) => {
            let converted = docker_archive::convert(file)?;
            let layout = Layout::open(converted.dir())?;
            let image = layout.image(None).with_context(|| format!("reading {reference}"))?;
            Ok(Opened { layout, image, _converted: Some(converted) })
        }
    }
}

/// Writes a layout into a staging directory next to its destination and moves it into place
/// only when complete, so a failure leaves the destination as it was.
pub struct LayoutWriter {
    destination: PathBuf,
    staging: PathBuf,
}

impl LayoutWriter {
    /// Refuses a destination that exists: nothing of the user's is replaced.
    pub fn create(destination: &Path) -> Result<LayoutWriter> {
        if destination.symlink_metadata().is_ok() {
            bail!("{} already exists; remove it or choose another output directory", destination.display());
        }
        let name = destination.file_name().context("the output needs a directory name")?.to_string_lossy();
        let parent = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(staging.join("blobs/sha256"))
            .with_context(|| format!("cannot create {}", staging.display()))?;
        Ok(LayoutWriter { destination: destination.to_owned(), staging })
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.staging.join("blobs/sha256").join(hex)
    }

    pub fn add_bytes(&self, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor> {
        let digest = sha256_digest(bytes);
        let path = self.blob_path(sha256_hex(&digest)?);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Descriptor::new(media_type, bytes.len() as u64, digest))
    }

    pub fn add_json<T: Serialize>(&self, media_type: MediaType, value: &T) -> Result<Descriptor> {
        self.add_bytes(media_type, &canonical_json(value)?)
    }

    /// A blob written by `write` to a file; hashed as it is written.
    pub fn add_streamed(
        &self,
        media_type: MediaType,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<Descriptor> {
        let temporary = self.staging.join(format!("blob-{}.partial", std::process::id()));
        let file = File::create(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
        let mut hashing = HashingWriter::new(io::BufWriter::new(file));
        write(&mut hashing)?;
        let (mut file, digest, size) = hashing.finish();
        file.flush().context("writing a blob")?;
        std::fs::rename(&temporary, self.blob_path(sha256_hex(&digest)?)).context("storing a blob")?;
        Ok(Descriptor::new(media_type, size, digest))
    }

    /// A blob of another layout, hard-linked when both are on one file system (else copied),
    /// never read: its size is checked, its digest is the file's name in a verified manifest.
    pub fn add_existing(&self, from: &Layout, descriptor: &Descriptor) -> Result<()> {
        let source = from.blob_path(descriptor.digest())?;
        let size = source
            .metadata()
            .with_context(|| format!("blob {} is missing from {}", descriptor.digest(), from.dir.display()))?
            .len();
        if size != descriptor.size() {
            bail!("blob {} is {size} bytes, its descriptor says {}", descriptor.digest(), descriptor.size());
        }
        let target = self.blob_path(sha256_hex(descriptor.digest())?);
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target)
                .with_context(|| format!("cannot copy {} to {}", source.display(), target.display()))?;
        }
        Ok(())
    }

    /// Writes `oci-layout` and an index of `manifest` tagged `tag`, then moves the layout into place.
    pub fn finish(self, manifest: Descriptor, tag: &str) -> Result<PathBuf> {
        let mut manifest = manifest;
        manifest.set_annotations(Some([(REF_NAME.to_owned(), tag.to_owned())].into()));
        write_index(&self.staging, manifest)?;
        std::fs::rename(&self.staging, &self.destination)
            .with_context(|| format!("cannot move the finished layout to {}", self.destination.display()))?;
        Ok(self.destination.clone())
    }
}

/// Writes `index.json` (naming `manifest`) and `oci-layout` into `dir`.
fn write_index(dir: &Path, manifest: Descriptor) -> Result<()> {
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()
        .context("building the image index")?;
    std::fs::write(dir.join("index.json"), canonical_json(&index)?).context("writing index.json")?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).context("writing oci-layout")
}

impl Drop for LayoutWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// Hashes and counts what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> HashingWriter<W> {
        HashingWriter { inner, hasher: Sha256::new(), written: 0 }
    }

    /// The writer, the digest and the size of what was written.
    fn finish(self) -> (W, Digest, u64) {
        (self.inner, digest_of_hex(&hex(&self.hasher.finalize())), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what passes through without checking it (a layer's uncompressed bytes: its diff_id).
pub struct HashingReader<R> {
    pub inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// Reads what is left and returns the digest of everything read.
    pub fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(digest_of_hex(&hex(&self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_parsed_as_skopeo_writes_them() {
        assert_eq!(
            ImageRef::parse("oci:/images/debian:bookworm").unwrap(),
            ImageRef::Layout { dir: "/images/debian".into(), tag: Some("bookworm".into()) }
        );
        assert_eq!(
            ImageRef::parse("oci:images/debian").unwrap(),
            ImageRef::Layout { dir: "images/debian".into(), tag: None }
        );
        assert_eq!(ImageRef::parse("docker-archive:/tmp/x.tar").unwrap(), ImageRef::DockerArchive("/tmp/x.tar".into()));
        assert!(ImageRef::parse("docker://debian").unwrap_err().to_string().contains("oci:DIR[:TAG]"));
        assert!(ImageRef::parse("oci:").is_err());
    }

    #[test]
    fn a_verifying_reader_catches_truncation_extension_and_a_wrong_digest() {
        let bytes = b"layer bytes";
        let hex = sha256_hex(&sha256_digest(bytes)).unwrap().to_owned();
        VerifyingReader::new(&bytes[..], 11, &hex, "blob".into()).finish().unwrap();
        let err = VerifyingReader::new(&bytes[..5], 11, &hex, "blob".into()).finish().unwrap_err();
        assert!(err.to_string().contains("truncated: 5 bytes, its descriptor says 11"), "{err}");
        let err =
            format!("{:#}", VerifyingReader::new(&b"layer bytes!"[..], 11, &hex, "blob".into()).finish().unwrap_err());
        assert!(err.contains("longer than the 11 bytes"), "{err}");
        let err = VerifyingReader::new(&b"LAYER BYTES"[..], 11, &hex, "blob".into()).finish().unwrap_err();
        assert!(err.to_string().contains("its descriptor says sha256:"), "{err}");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let map: std::collections::HashMap<&str, u8> = [("b", 1), ("a", 2), ("c", 3)].into();
        assert_eq!(canonical_json(&map).unwrap(), br#"{"a":2,"b":1,"c":3}"#);
    }

    #[test]
    fn only_sha256_digests_are_read() {
        let digest = Digest::from_str(&format!("sha512:{}", "a".repeat(128))).unwrap();
        assert!(sha256_hex(&digest).is_err());
    }
}
