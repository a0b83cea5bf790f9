//! Writing a layer: a reproducible tar (entries in the order given, mtime 0, no user or group
//! names), gzip-compressed, with its diff_id (the uncompressed digest) computed on the way.

use std::io::{self, Read, Write};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression as Level;
use oci_spec::image::{Descriptor, Digest, MediaType};

use super::{HashingWriter, LayoutWriter};

/// Who owns an entry and its permission bits.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
}

impl Owner {
    pub const fn root(mode: u32) -> Owner {
        Owner { uid: 0, gid: 0, mode }
    }
}

pub struct LayerWriter<'w> {
    tar: tar::Builder<HashingWriter<GzEncoder<&'w mut dyn Write>>>,
}

impl<'w> LayerWriter<'w> {
    pub fn new(out: &'w mut dyn Write) -> LayerWriter<'w> {
        let gzip = GzEncoder::new(out, Level::fast());
        let mut tar = tar::Builder::new(HashingWriter::new(gzip));
        tar.mode(tar::HeaderMode::Deterministic);
        LayerWriter { tar }
    }

    fn header(kind: tar::EntryType, owner: Owner, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_uid(owner.uid);
        header.set_gid(owner.gid);
        header.set_mode(owner.mode);
        header.set_mtime(0);
        header.set_size(size);
        header
    }

    pub fn dir(&mut self, path: &str, owner: Owner) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, owner, 0);
        self.tar
            .append_data(&mut header, format!("{}/", path.trim_end_matches('/')), io::empty())
            .context(path.to_owned())
    }

    pub fn file(&mut self, path: &str, owner: Owner, size: u64, contents: impl Read) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, owner, size);
        self.tar.append_data(&mut header, path, contents).with_context(|| path.to_owned())
    }

    pub fn symlink(&mut self, path: &str, target: &str, owner: Owner) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, owner, 0);
        self.tar.append_link(&mut header, path, target).with_context(|| path.to_owned())
    }

    pub fn hard_link(&mut self, path: &str, target: &str, owner: Owner) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Link, owner, 0);
        self.tar.append_link(&mut header, path, target).with_context(|| path.to_owned())
    }

    /// Ends the tar and the gzip stream; returns the diff_id.
    pub fn finish(self) -> Result<Digest> {
        let (gzip, diff_id, _) = self.tar.into_inner().context("ending the layer's tar stream")?.finish();
        gzip.finish().context("ending the layer's gzip stream")?.flush()?;
        Ok(diff_id)
    }
}

/// Writes one gzip layer into `writer`'s layout with `fill`; returns its descriptor and diff_id.
pub fn add_layer(
    writer: &LayoutWriter,
    fill: impl FnOnce(&mut LayerWriter<'_>) -> Result<()>,
) -> Result<(Descriptor, Digest)> {
    let mut diff_id = None;
    let descriptor = writer.add_streamed(MediaType::ImageLayerGzip, |out| {
        let mut layer = LayerWriter::new(out);
        fill(&mut layer)?;
        diff_id = Some(layer.finish()?);
        Ok(())
    })?;
    Ok((descriptor, diff_id.expect("set when the layer was written")))
}
