//! `cargo xtask image wrap`: createWorker without Nix. A toolchain image and a `nativelink`
//! binary become a NativeLink worker image: the base's layers, referenced by digest (hard-linked,
//! never decompressed or recompressed), plus one layer with the binary in /usr/local/bin, a
//! non-root user `nativelink` (1000:1000) with its home, and /tmp with mode 1777. The config
//! gets User, WorkingDir, Entrypoint and OCI labels. The same inputs give the same digests.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, MediaType};
use serde_json::{json, Value};

use super::layer::{add_layer, Owner};
use super::{canonical_json, ImageRef, LayoutWriter, REF_NAME};

pub const USER: &str = "nativelink";
pub const UID: u64 = 1000;
pub const HOME: &str = "/home/nativelink";
pub const BINARY: &str = "/usr/local/bin/nativelink";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapOptions {
    pub base: ImageRef,
    pub nativelink: PathBuf,
    pub output: PathBuf,
    /// The output's tag; default: the base's tag, else `latest`.
    pub tag: Option<String>,
    /// The image title label, e.g. `nativelink-worker-lre-cc`.
    pub title: String,
    pub source: Option<String>,
    pub revision: Option<String>,
    /// A static `env` to install as /usr/bin/env, for bases without one.
    pub env_program: Option<PathBuf>,
    /// Where `generate` keeps unpacked images: when the base is there, wrap can tell (without
    /// reading the base) whether it lacks /usr/bin/env.
    pub unpacked_images: Option<PathBuf>,
}

pub fn wrap(options: &WrapOptions) -> Result<Descriptor> {
    let binary = File::open(&options.nativelink)
        .with_context(|| format!("cannot read the nativelink binary {}", options.nativelink.display()))?;
    let binary_meta = binary.metadata()?;
    if !binary_meta.is_file() {
        bail!("--nativelink {} is not a file", options.nativelink.display());
    }
    let binary_size = binary_meta.len();
    let env_program = match &options.env_program {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some((file.metadata()?.len(), file))
        }
        None => None,
    };
    let opened = super::open(&options.base)?;
    let (layout, base) = (&opened.layout, &opened.image);
    let tag = match &options.tag {
        Some(tag) => tag.clone(),
        None => base_tag(&base.manifest_descriptor).unwrap_or("latest").to_owned(),
    };
    if options.env_program.is_none() && lacks_env(options.unpacked_images.as_deref(), base.digest()) == Some(true) {
        eprintln!(
            "warning: the base has no /usr/bin/env, so `#!/usr/bin/env` scripts will not run on this worker; \
             pass --env-program FILE (a static env) to add one"
        );
    }
    let writer = LayoutWriter::create(&options.output)?;

    let mut layers = Vec::new();
    for layer in base.manifest.layers() {
        writer.add_existing(layout, layer).with_context(|| format!("taking the base's layer {}", layer.digest()))?;
        let mut layer = layer.clone();
        layer.set_media_type(oci_layer_type(layer.media_type())?);
        layers.push(layer);
    }

    let (added, diff_id) = add_layer(&writer, |layer| {
        let dir = Owner::root(0o755);
        let user = Owner { uid: UID, gid: UID, mode: 0o755 };
        layer.dir("etc", dir)?;
        let group = format!("root:x:0:\n{USER}:x:{UID}:\n");
        layer.file("etc/group", Owner::root(0o644), group.len() as u64, group.as_bytes())?;
        let passwd = format!("root:x:0:0:root:/root:/bin/sh\n{USER}:x:{UID}:{UID}:NativeLink worker:{HOME}:/bin/sh\n");
        layer.file("etc/passwd", Owner::root(0o644), passwd.len() as u64, passwd.as_bytes())?;
        layer.dir("home", dir)?;
        layer.dir(&HOME[1..], user)?;
        layer.dir("tmp", Owner::root(0o1777))?;
        layer.dir("usr", dir)?;
        if let Some((size, file)) = env_program {
            layer.dir("usr/bin", dir)?;
            layer.file("usr/bin/env", Owner::root(0o755), size, file)?;
        }
        layer.dir("usr/local", dir)?;
        layer.dir("usr/local/bin", dir)?;
        layer.file(&BINARY[1..], Owner::root(0o755), binary_size, binary)
    })
    .context("writing the worker layer")?;
    layers.push(added);

    let config = worker_config(base.config_json.clone(), diff_id.as_ref(), options)?;
    let config = writer.add_bytes(MediaType::ImageConfig, &canonical_json(&config)?)?;
    let mut manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .context("building the worker manifest")?;
    manifest
        .set_annotations(Some([("org.opencontainers.image.base.digest".to_owned(), base.digest().to_string())].into()));
    let descriptor = writer.add_json(MediaType::ImageManifest, &manifest)?;
    writer.finish(descriptor.clone(), &tag)?;
    eprintln!(
        "wrote {}:{tag} ({}), {} on top of {}",
        options.output.display(),
        descriptor.digest(),
        USER,
        base.digest()
    );
    Ok(descriptor)
}

/// Whether the base, if `generate` unpacked it already, lacks /usr/bin/env (`None`: unknown).
fn lacks_env(unpacked_images: Option<&Path>, digest: &oci_spec::image::Digest) -> Option<bool> {
    let unpacked = unpacked_images?.join(super::sha256_hex(digest).ok()?);
    if !unpacked.join("complete").exists() {
        return None;
    }
    let env = super::unpack::resolve_in_root(&unpacked.join("rootfs"), Path::new("/usr/bin/env"), true).ok()?;
    Some(!env.exists())
}

fn base_tag(descriptor: &Descriptor) -> Option<&str> {
    descriptor.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

/// The OCI media type for a base layer's bytes (Docker's types name the same formats).
fn oci_layer_type(media_type: &MediaType) -> Result<MediaType> {
    Ok(match super::Compression::of_layer(media_type)? {
        super::Compression::None => MediaType::ImageLayer,
        super::Compression::Gzip => MediaType::ImageLayerGzip,
    })
}

/// The base's config (every field kept) with the worker's user, directory, entrypoint, PATH,
/// labels, the added layer's diff_id and a history entry.
pub fn worker_config(mut config: Value, diff_id: &str, options: &WrapOptions) -> Result<Value> {
    let Some(object) = config.as_object_mut() else { bail!("the base's config is not a JSON object") };
    let settings = object.entry("config").or_insert_with(|| json!({}));
    let Some(settings) = settings.as_object_mut() else { bail!("the base's config.config is not an object") };
    settings.insert("User".into(), json!(format!("{UID}:{UID}")));
    settings.insert("WorkingDir".into(), json!(HOME));
    settings.insert("Entrypoint".into(), json!([BINARY]));
    settings.remove("Cmd");
    let mut env: Vec<String> =
        settings.get("Env").and_then(|e| serde_json::from_value(e.clone()).ok()).unwrap_or_default();
    match env.iter_mut().find(|e| e.starts_with("PATH=")) {
        Some(path) if path["PATH=".len()..].split(':').any(|dir| dir == "/usr/local/bin") => {}
        Some(path) => *path = format!("PATH=/usr/local/bin:{}", &path["PATH=".len()..]),
        None => env.push("PATH=/usr/local/bin:/usr/bin:/bin".to_owned()),
    }
    settings.insert("Env".into(), json!(env));
    let labels = settings.entry("Labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    let labels = labels.as_object_mut().expect("made an object above");
    labels.insert("org.opencontainers.image.title".into(), json!(options.title));
    labels.insert(
        "org.opencontainers.image.description".into(),
        json!(format!("NativeLink worker on {} (made by cargo xtask image wrap)", options.base)),
    );
    for (key, value) in [("source", &options.source), ("revision", &options.revision)] {
        if let Some(value) = value {
            labels.insert(format!("org.opencontainers.image.{key}"), json!(value));
        }
    }
    let rootfs = object.entry("rootfs").or_insert_with(|| json!({ "type": "layers", "diff_ids": [] }));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(ids) => ids.push(json!(diff_id)),
        None => bail!("the base's config has no rootfs.diff_ids"),
    }
    let history = object.entry("history").or_insert_with(|| json!([]));
    if let Some(history) = history.as_array_mut() {
        history.push(json!({
            "created": "1970-01-01T00:00:00Z",
            "created_by": "cargo xtask image wrap",
            "comment": format!("nativelink in {BINARY}, user {USER} ({UID}:{UID}), /tmp 1777"),
        }));
    }
    Ok(config)
}

/// The default labels: this checkout's revision and origin, when git can tell.
pub fn git_labels(root: &Path) -> (Option<String>, Option<String>) {
    let read = |args: &[&str]| -> Option<String> {
        let sh = xshell::Shell::new().ok()?;
        sh.change_dir(root);
        let text = xshell::cmd!(sh, "git {args...}").quiet().ignore_stderr().read().ok()?;
        (!text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    (read(&["remote", "get-url", "origin"]), read(&["rev-parse", "HEAD"]))
}
