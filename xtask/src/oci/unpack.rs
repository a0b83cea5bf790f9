//! Unpacking an image's layers into a root file system, safely and as a stream.
//!
//! Each layer is read once: verified against its descriptor (size, digest) and its config's
//! diff_id while it is decompressed and applied. Whiteouts remove what lower layers put there.
//! An entry that would land outside the root (an absolute path, `..`, a relative symlink that
//! climbs out, a hard link to outside) or a device node fails the whole unpack, naming the layer
//! and entry. Every path is resolved inside the root, following the image's own symlinks as the
//! container would (an absolute symlink target means the image's root, never this machine's),
//! so nothing is ever written through a symlink to the host. The result goes to a cache keyed by
//! the manifest digest, staged and renamed into place only when complete.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{sha256_hex, Compression, HashingReader, Image, Layout};

const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
const MAX_SYMLINKS: usize = 40;

/// Unpacks `image` under `cache` (`<cache>/<manifest hex>/rootfs`) unless it is there already.
pub fn unpack_cached(layout: &Layout, image: &Image, cache: &Path) -> Result<PathBuf> {
    let hex = sha256_hex(image.digest())?;
    let done = cache.join(hex);
    let rootfs = done.join("rootfs");
    if done.join("complete").exists() {
        return Ok(rootfs);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let staging = cache.join(format!(".{hex}.staging-{}", std::process::id()));
    let _ = remove_tree(&staging);
    let result = (|| {
        std::fs::create_dir_all(staging.join("rootfs"))?;
        unpack(layout, image, &staging.join("rootfs"))?;
        std::fs::write(staging.join("complete"), image.digest().to_string())?;
        if done.join("complete").exists() {
            // Another run finished the same image meanwhile; it may be probing in it already.
            return remove_tree(&staging).context("removing a duplicate unpack");
        }
        let _ = remove_tree(&done); // an incomplete leftover
        std::fs::rename(&staging, &done)
            .with_context(|| format!("cannot move the unpacked image to {}", done.display()))
    })();
    if result.is_err() {
        let _ = remove_tree(&staging);
    }
    result.map(|()| rootfs)
}

/// Unpacks `image` into the new directory `destination` (`cargo xtask image unpack`); nothing is
/// left behind when it fails.
pub fn unpack_to(layout: &Layout, image: &Image, destination: &Path) -> Result<()> {
    if destination.symlink_metadata().is_ok() {
        bail!("{} already exists; remove it or choose another output directory", destination.display());
    }
    let name = destination.file_name().context("the output needs a directory name")?.to_string_lossy();
    let staging = destination.with_file_name(format!(".{name}.staging-{}", std::process::id()));
    let _ = remove_tree(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let result = unpack(layout, image, &staging).and_then(|()| {
        std::fs::rename(&staging, destination).with_context(|| format!("cannot create {}", destination.display()))
    });
    if result.is_err() {
        let _ = remove_tree(&staging);
    }
    result
}

/// Applies every layer of `image`, in order, to the empty directory `root`.
pub fn unpack(layout: &Layout, image: &Image, root: &Path) -> Result<()> {
    let layers = image.manifest.layers();
    for (index, (layer, diff_id)) in layers.iter().zip(image.config.rootfs().diff_ids()).enumerate() {
        let what = format!("layer {} of {} ({})", index + 1, layers.len(), layer.digest());
        eprintln!("unpacking {what}, {} bytes", layer.size());
        let compression = Compression::of_layer(layer.media_type())?;
        let mut verified = layout.open_blob(layer, "layer")?;
        let decompressed: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(BufReader::new(&mut verified)),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(BufReader::new(&mut verified))),
        };
        let mut uncompressed = HashingReader::new(decompressed);
        let applied = apply_layer(&mut uncompressed, root).and_then(|()| Ok(uncompressed.finish()?));
        // A corrupt blob often shows first as a broken tar or gzip stream; name the cause.
        let integrity = verified.finish();
        let actual = match (applied, integrity) {
            (_, Err(corrupt)) => return Err(corrupt.context(format!("unpacking {what}"))),
            (Err(err), Ok(())) => return Err(err.context(format!("unpacking {what}"))),
            (Ok(actual), Ok(())) => actual,
        };
        if actual.as_ref() != diff_id.as_str() {
            bail!("{what} decompresses to {actual}, but the config's diff_id is {diff_id}");
        }
    }
    Ok(())
}

/// Applies one layer (an uncompressed tar stream) to `root`.
pub fn apply_layer(stream: &mut dyn Read, root: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(stream);
    let mut created_here: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().context("not a tar stream")? {
        let mut entry = entry.context("reading a tar entry")?;
        let raw = entry.path().context("an entry name")?.into_owned();
        let path = entry_path(&raw).with_context(|| format!("entry {}", raw.display()))?;
        let Some(name) = path.file_name().map(OsStr::to_owned) else {
            continue; // the root itself
        };
        let parent_in_image = path.parent().unwrap_or(Path::new("")).to_owned();
        let parent = ensure_dir(root, &parent_in_image).with_context(|| format!("entry {}", raw.display()))?;
        let name = name.to_string_lossy().into_owned();
        if name == OPAQUE {
            clear_lower(&parent, &parent_in_image, &created_here)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if matches!(hidden, "" | "." | "..") {
                bail!("entry {} is a whiteout of {hidden:?}, which names no file in its directory", raw.display());
            }
            remove_tree(&parent.join(hidden)).with_context(|| format!("whiteout {}", raw.display()))?;
            continue;
        }
        let target = parent.join(&name);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                if !target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    remove_tree(&target)?;
                    std::fs::create_dir(&target).with_context(|| format!("creating {}", raw.display()))?;
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o700))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_tree(&target)?;
                let mut file = File::create(&target).with_context(|| format!("creating {}", raw.display()))?;
                io::copy(&mut entry, &mut file).with_context(|| format!("writing {}", raw.display()))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name()?.context("a symlink without a target")?.into_owned();
                if link.is_relative() && escapes(&parent_in_image.join(&link)) {
                    bail!(
                        "entry {} is a symlink to {} which points outside the image's root",
                        raw.display(),
                        link.display()
                    );
                }
                remove_tree(&target)?;
                symlink(&link, &target).with_context(|| format!("creating symlink {}", raw.display()))?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name()?.context("a hard link without a target")?.into_owned();
                let linked = entry_path(&link).with_context(|| {
                    format!("entry {} is a hard link to {} outside the image's root", raw.display(), link.display())
                })?;
                let source = resolve_in_root(root, &linked, false)
                    .with_context(|| format!("entry {} is a hard link to {}", raw.display(), link.display()))?;
                if !source.symlink_metadata().is_ok_and(|m| m.is_file()) {
                    bail!(
                        "entry {} is a hard link to {}, which is not a file unpacked before it",
                        raw.display(),
                        link.display()
                    );
                }
                remove_tree(&target)?;
                std::fs::hard_link(&source, &target)
                    .with_context(|| format!("creating hard link {}", raw.display()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                bail!("entry {} is a device node; toolchain images must not carry devices", raw.display())
            }
            tar::EntryType::Fifo => {
                eprintln!("note: skipping the named pipe {} (not needed to probe a toolchain)", raw.display());
                continue;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => bail!("entry {} has a tar type ({other:?}) this unpacker does not handle", raw.display()),
        }
        created_here.insert(path);
    }
    Ok(())
}

/// A tar entry name as a path relative to the image's root; absolute paths and `..` are refused.
pub(crate) fn entry_path(raw: &Path) -> Result<PathBuf> {
    let mut path = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("absolute path {} (entries must be relative to the root)", raw.display())
            }
            Component::ParentDir => bail!("path {} climbs out with `..`", raw.display()),
        }
    }
    Ok(path)
}

/// Whether a relative path (from the image's root) climbs above it, read lexically.
fn escapes(path: &Path) -> bool {
    let mut depth: isize = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Removes `.` and resolves `name/..` without touching the file system (a leading `..` stays).
pub fn lexical(path: &Path) -> PathBuf {
    crate::probe::normalize(path)
}

/// The host path of `path` (an image path, absolute or relative to the image's root) inside
/// `root`, following the image's symlinks as the container would: absolute targets start again
/// at `root`, and `..` never climbs above it. With `follow_last`, a final symlink is followed too.
pub fn resolve_in_root(root: &Path, path: &Path, follow_last: bool) -> Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<PathBuf> = path.components().rev().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut symlinks = 0;
    while let Some(component) = pending.pop() {
        match component.components().next() {
            None | Some(Component::RootDir) | Some(Component::CurDir) | Some(Component::Prefix(_)) => {}
            Some(Component::ParentDir) => {
                resolved.pop();
            }
            Some(Component::Normal(part)) => {
                let candidate = resolved.join(part);
                let host = root.join(&candidate);
                let is_last = pending.is_empty();
                match host.symlink_metadata() {
                    Ok(meta) if meta.file_type().is_symlink() && (!is_last || follow_last) => {
                        symlinks += 1;
                        if symlinks > MAX_SYMLINKS {
                            bail!("too many symlinks resolving {} in the image", path.display());
                        }
                        let target = std::fs::read_link(&host)?;
                        if target.is_absolute() {
                            resolved = PathBuf::new();
                        }
                        pending.extend(target.components().rev().map(|c| PathBuf::from(c.as_os_str())));
                    }
                    _ => resolved = candidate,
                }
            }
        }
    }
    Ok(root.join(resolved))
}

/// The directory `dir_in_image` inside `root` (resolved in the root), created if missing.
fn ensure_dir(root: &Path, dir_in_image: &Path) -> Result<PathBuf> {
    let mut current = PathBuf::new();
    for component in dir_in_image.components() {
        current.push(component);
        let host = resolve_in_root(root, &current, true)?;
        match host.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&host)?;
                std::fs::create_dir(&host)?;
            }
            // Resolution already walked every component above `host` inside the root.
            Err(_) => std::fs::create_dir_all(&host).with_context(|| format!("creating {}", current.display()))?,
        }
    }
    resolve_in_root(root, dir_in_image, true)
}

/// An opaque whiteout: everything lower layers put in the directory goes.
fn clear_lower(dir: &Path, dir_in_image: &Path, created_here: &HashSet<PathBuf>) -> Result<()> {
    for child in std::fs::read_dir(dir)? {
        let child = child?;
        if !created_here.contains(&dir_in_image.join(child.file_name())) {
            remove_tree(&child.path())?;
        }
    }
    Ok(())
}

/// Removes a file, symlink or directory tree; a missing path is fine. Never follows symlinks.
fn remove_tree(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => {
            // Directories the image made unwritable still have to go.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            std::fs::remove_dir_all(path)
        }
        Ok(_) => std::fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Path, type, and contents (or link target).
    type Entry<'a> = (&'a str, tar::EntryType, &'a str);

    fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data_or_link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    header.set_size(0);
                    header.set_link_name_literal(data_or_link).unwrap();
                    header.set_path_literal(path);
                    builder.append(&header, io::empty()).unwrap();
                }
                _ => {
                    header.set_size(data_or_link.len() as u64);
                    header.set_path_literal(path);
                    builder.append(&header, data_or_link.as_bytes()).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    trait Literal {
        fn set_path_literal(&mut self, path: &str);
    }

    // tar::Header::set_path refuses `..` and absolute paths; malicious layers need them raw.
    impl Literal for tar::Header {
        fn set_path_literal(&mut self, path: &str) {
            let name = &mut self.as_old_mut().name;
            name.fill(0);
            name[..path.len()].copy_from_slice(path.as_bytes());
            self.set_cksum();
        }
    }

    fn root(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lre-unpack-test-{label}-{}", std::process::id()));
        let _ = remove_tree(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn apply(root: &Path, entries: &[Entry<'_>]) -> Result<()> {
        apply_layer(&mut layer(entries).as_slice(), root)
    }

    use tar::EntryType::{Block, Char, Directory as Dir, Link, Regular as File_, Symlink};

    #[test]
    fn whiteouts_remove_what_lower_layers_put_there() {
        let root = root("whiteouts");
        apply(&root, &[("etc/", Dir, ""), ("etc/a", File_, "a"), ("etc/b", File_, "b"), ("opt/x/y", File_, "y")])
            .unwrap();
        apply(&root, &[("etc/.wh.a", File_, ""), ("opt/x/new", File_, "n"), ("opt/x/.wh..wh..opq", File_, "")])
            .unwrap();
        assert!(!root.join("etc/a").exists() && root.join("etc/b").exists());
        assert!(!root.join("opt/x/y").exists(), "the opaque directory hides lower entries");
        assert_eq!(std::fs::read_to_string(root.join("opt/x/new")).unwrap(), "n", "but keeps this layer's own");
        assert!(!root.join("etc/.wh.a").exists() && !root.join("opt/x/.wh..wh..opq").exists());
        remove_tree(&root).unwrap();
    }

    #[test]
    fn writes_go_through_the_images_own_symlinks_never_the_hosts() {
        let root = root("symlinks");
        // Debian's `bin -> usr/bin`, and an absolute link that means the image's /etc.
        apply(&root, &[("usr/bin/", Dir, ""), ("bin", Symlink, "usr/bin"), ("conf", Symlink, "/etc")]).unwrap();
        apply(&root, &[("bin/tool", File_, "t"), ("conf/passwd", File_, "image")]).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("usr/bin/tool")).unwrap(), "t");
        assert_eq!(std::fs::read_to_string(root.join("etc/passwd")).unwrap(), "image");
        assert_eq!(
            resolve_in_root(&root, Path::new("/conf/../../../bin/tool"), true).unwrap(),
            root.join("usr/bin/tool")
        );
        remove_tree(&root).unwrap();
    }

    #[test]
    fn escaping_entries_and_devices_are_refused() {
        let cases: [(&[Entry<'_>], &str); 9] = [
            (&[(".wh...", File_, "")], "a whiteout of \"..\""),
            (&[("etc/.wh..", File_, "")], "a whiteout of \".\""),
            (&[("etc/.wh.", File_, "")], "a whiteout of \"\""),
            (&[("../evil", File_, "x")], "climbs out with `..`"),
            (&[("/etc/evil", File_, "x")], "absolute path /etc/evil"),
            (&[("lib/x", Symlink, "../../../etc/shadow")], "points outside the image's root"),
            (&[("a", File_, "a"), ("b", Link, "../../etc/passwd")], "hard link to ../../etc/passwd outside"),
            (&[("dev/null", Char, "")], "is a device node"),
            (&[("dev/sda", Block, "")], "is a device node"),
        ];
        for (entries, expected) in cases {
            let root = root("escape");
            let err = format!("{:#}", apply(&root, entries).unwrap_err());
            assert!(err.contains(expected), "{entries:?}: {err}");
            remove_tree(&root).unwrap();
        }
    }
}
