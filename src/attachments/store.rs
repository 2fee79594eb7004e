//! Attachment files on disk. Everything here blocks (call it from
//! `spawn_blocking`), except [`UploadWriter`], which hands its disk work to
//! short blocking tasks itself.
//!
//! Layout under the data directory:
//! - `files/ab/cdef…` — the content, named by its SHA-256 hex (split after 2 chars);
//! - `files/ab/cdef….thumb.jpg` — the cached preview of an image;
//! - `files/ab/cdef….nothumb` — the mark of an image that has none (see
//!   [`ensure_thumbnail`]);
//! - `files/tmp/` — uploads being received and previews being written; renamed
//!   into place when complete, so a crash never leaves a half file under a name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::media::SNIFF_BYTES;

/// Longest side of a preview, in pixels.
pub const THUMB_MAX: u32 = 320;
const THUMB_SUFFIX: &str = ".thumb.jpg";
/// An empty file saying that this content has no preview: it could not be
/// decoded, or is larger than the preview limit. Decoding is not tried again.
const NO_THUMB_SUFFIX: &str = ".nothumb";
const THUMB_QUALITY: u8 = 80;

pub fn files_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("files")
}

pub fn tmp_dir(files_dir: &Path) -> PathBuf {
    files_dir.join("tmp")
}

/// Exactly 64 lower-case hex digits. Paths are only ever built from these
/// (read back from the database), never from anything in a request.
pub fn is_sha256_hex(sha: &str) -> bool {
    sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `files/ab/cdef…` for a SHA-256, or `None` if it is not one.
pub fn blob_path(files_dir: &Path, sha: &str) -> Option<PathBuf> {
    is_sha256_hex(sha).then(|| files_dir.join(&sha[..2]).join(&sha[2..]))
}

pub fn thumb_path(files_dir: &Path, sha: &str) -> Option<PathBuf> {
    derived_path(files_dir, sha, THUMB_SUFFIX)
}

fn no_thumb_path(files_dir: &Path, sha: &str) -> Option<PathBuf> {
    derived_path(files_dir, sha, NO_THUMB_SUFFIX)
}

fn derived_path(files_dir: &Path, sha: &str, suffix: &str) -> Option<PathBuf> {
    is_sha256_hex(sha).then(|| {
        files_dir
            .join(&sha[..2])
            .join(format!("{}{suffix}", &sha[2..]))
    })
}

/// A file under `files/tmp` that is removed when dropped unless it was kept.
#[derive(Debug)]
pub struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// A fresh, unused name in `tmp` (the file is created by whoever writes it).
    pub fn new_name(tmp: &Path, suffix: &str) -> TempFile {
        let name = format!("{}{suffix}", crate::auth::tokens::random_hex(16));
        TempFile {
            path: Some(tmp.join(name)),
        }
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The file was renamed away or removed: nothing left to clean up.
    pub fn disarm(&mut self) {
        self.path = None;
    }

    /// Removes the file now.
    pub fn remove(&mut self) {
        if let Some(path) = self.path.take() {
            remove_if_exists(&path);
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // A cancelled request (client went away) ends here: one unlink.
        if let Some(path) = self.path.take() {
            remove_if_exists(&path);
        }
    }
}

fn remove_if_exists(path: &Path) {
    if let Err(err) = fs::remove_file(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "could not remove a file");
    }
}

/// What was written of an upload.
#[derive(Debug)]
pub struct Written {
    pub sha256: String,
    pub size: u64,
    /// The first bytes, for type sniffing.
    pub head: Vec<u8>,
}

/// Writes an upload to a file while hashing it, without holding a blocking
/// thread while the client sends: the async side collects chunks, and each
/// [`FLUSH_BYTES`] goes to a short blocking task that hashes and writes it while
/// the next chunks arrive (at most one write in flight, so at most two buffers
/// per upload are in memory).
pub struct UploadWriter {
    stage: Option<Stage>,
    buffer: Vec<Bytes>,
    buffered: usize,
}

/// Chunks are written to disk in batches of this many bytes.
pub const FLUSH_BYTES: usize = 128 * 1024;

enum Stage {
    Idle(Box<OpenUpload>),
    Writing(tokio::task::JoinHandle<io::Result<Box<OpenUpload>>>),
}

struct OpenUpload {
    file: File,
    hasher: Sha256,
    head: Vec<u8>,
    size: u64,
}

impl OpenUpload {
    fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        for chunk in chunks {
            self.hasher.update(chunk);
            if self.head.len() < SNIFF_BYTES {
                let take = (SNIFF_BYTES - self.head.len()).min(chunk.len());
                self.head.extend_from_slice(&chunk[..take]);
            }
            self.file.write_all(chunk)?;
            self.size += chunk.len() as u64;
        }
        Ok(())
    }
}

fn task_failed(err: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("upload writer: {err}"))
}

impl UploadWriter {
    /// Creates the file at `path` (a fresh name in `files/tmp`).
    pub async fn create(path: PathBuf) -> io::Result<UploadWriter> {
        let open = tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            Ok::<_, io::Error>(Box::new(OpenUpload {
                file,
                hasher: Sha256::new(),
                head: Vec::with_capacity(SNIFF_BYTES),
                size: 0,
            }))
        })
        .await
        .map_err(task_failed)??;
        Ok(UploadWriter {
            stage: Some(Stage::Idle(open)),
            buffer: Vec::new(),
            buffered: 0,
        })
    }

    /// Adds a chunk; writes the buffer once it holds [`FLUSH_BYTES`].
    pub async fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        self.buffered += chunk.len();
        self.buffer.push(chunk);
        if self.buffered >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Waits for the write in flight, if any, and hands back the file.
    async fn ready(&mut self) -> io::Result<Box<OpenUpload>> {
        match self.stage.take() {
            Some(Stage::Idle(open)) => Ok(open),
            Some(Stage::Writing(task)) => task.await.map_err(task_failed)?,
            None => Err(io::Error::other("an earlier write of this upload failed")),
        }
    }

    /// Starts writing the buffer (after the previous write has finished).
    async fn flush(&mut self) -> io::Result<()> {
        let mut open = self.ready().await?;
        let chunks = std::mem::take(&mut self.buffer);
        self.buffered = 0;
        self.stage = Some(Stage::Writing(tokio::task::spawn_blocking(move || {
            open.write(&chunks)?;
            Ok(open)
        })));
        Ok(())
    }

    /// Writes what is left and fsyncs the file: the content must be on disk
    /// before a rename can make it visible.
    pub async fn finish(mut self) -> io::Result<Written> {
        let mut open = self.ready().await?;
        let chunks = std::mem::take(&mut self.buffer);
        tokio::task::spawn_blocking(move || {
            open.write(&chunks)?;
            open.file.sync_all()?;
            Ok(Written {
                sha256: hex::encode(open.hasher.finalize()),
                size: open.size,
                head: open.head,
            })
        })
        .await
        .map_err(task_failed)?
    }

    /// Waits for the write in flight and closes the file, which the caller then
    /// removes.
    pub async fn abandon(mut self) {
        let _ = self.ready().await;
    }
}

/// Moves a complete, fsynced temp file to its content address, or drops it when
/// that content is already stored (deduplication). The directory entry is
/// fsynced too, so the rename survives a power loss. Returns the blob's path.
pub fn place_blob(
    files_dir: &Path,
    temp: &mut TempFile,
    sha: &str,
    size: u64,
) -> io::Result<PathBuf> {
    let dest = blob_path(files_dir, sha)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a sha256"))?;
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent"))?
        .to_owned();
    if let Ok(existing) = fs::metadata(&dest)
        && existing.is_file()
        && existing.len() == size
    {
        temp.remove();
        return Ok(dest);
    }
    let created_dir = !dir.exists();
    fs::create_dir_all(&dir)?;
    if created_dir {
        sync_dir(files_dir)?;
    }
    fs::rename(temp.path(), &dest)?;
    temp.disarm();
    sync_dir(&dir)?;
    Ok(dest)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Width and height of a stored image as displayed (EXIF rotation applied, as
/// browsers do), read from its header only.
pub fn image_dimensions(path: &Path) -> Option<(u32, u32)> {
    use image::ImageDecoder;
    let mut reader = image::ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?;
    reader.limits(decode_limits());
    let mut decoder = reader.into_decoder().ok()?;
    let (width, height) = decoder.dimensions();
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    Some(if swaps_sides(orientation) {
        (height, width)
    } else {
        (width, height)
    })
}

fn swaps_sides(orientation: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation::*;
    matches!(
        orientation,
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH
    )
}

/// Decoding limits: a small file that claims to be 100,000 pixels square must
/// not take the server's memory.
fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(256 * 1024 * 1024);
    limits
}

/// Why an image has no preview.
#[derive(Debug, thiserror::Error)]
pub enum NoThumbnail {
    #[error("the image has {pixels} pixels, over the preview limit of {max}")]
    TooManyPixels { pixels: u64, max: u64 },
    #[error("the image cannot be decoded: {0}")]
    Undecodable(String),
    #[error("an earlier attempt found no preview")]
    Remembered,
    #[error("{0}")]
    Io(String),
}

/// The cached preview of an image (at most [`THUMB_MAX`] px on its longest
/// side, JPEG), made on first use from an image of at most `max_pixels` pixels
/// (checked from its header before anything is decoded). Written to `tmp` and
/// renamed, so concurrent requests never see a partial file. An image that has
/// no preview is marked so, and never decoded again.
pub fn ensure_thumbnail(
    files_dir: &Path,
    sha: &str,
    max_pixels: u64,
) -> Result<PathBuf, NoThumbnail> {
    let not_sha = || NoThumbnail::Io("not a sha256".into());
    let thumb = thumb_path(files_dir, sha).ok_or_else(not_sha)?;
    if thumb.is_file() {
        return Ok(thumb);
    }
    let mark = no_thumb_path(files_dir, sha).ok_or_else(not_sha)?;
    if mark.exists() {
        return Err(NoThumbnail::Remembered);
    }
    let source = blob_path(files_dir, sha).ok_or_else(not_sha)?;
    let small = match decode_small(&source, max_pixels) {
        Ok(small) => small,
        Err(err) => {
            if let Err(io) = File::create(&mark) {
                tracing::warn!(path = %mark.display(), error = %io, "cannot mark an image without preview");
            }
            return Err(err);
        }
    };
    let rgb = flatten_on_white(&small);
    let io = |e: io::Error| NoThumbnail::Io(e.to_string());
    let tmp = tmp_dir(files_dir);
    fs::create_dir_all(&tmp).map_err(io)?;
    let mut temp = TempFile::new_name(&tmp, ".thumb");
    {
        let file = File::create(temp.path()).map_err(io)?;
        let mut out = io::BufWriter::new(file);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, THUMB_QUALITY)
            .encode_image(&rgb)
            .map_err(|e| NoThumbnail::Io(e.to_string()))?;
        let file = out
            .into_inner()
            .map_err(|e| NoThumbnail::Io(e.to_string()))?;
        file.sync_all().map_err(io)?;
    }
    fs::rename(temp.path(), &thumb).map_err(io)?;
    temp.disarm();
    Ok(thumb)
}

/// Decodes an image of at most `max_pixels` and shrinks it to preview size,
/// turned as displayed (after shrinking, which is cheaper).
fn decode_small(source: &Path, max_pixels: u64) -> Result<image::DynamicImage, NoThumbnail> {
    use image::ImageDecoder;
    let undecodable = |e: image::ImageError| NoThumbnail::Undecodable(e.to_string());
    let mut reader = image::ImageReader::open(source)
        .map_err(|e| NoThumbnail::Io(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| NoThumbnail::Io(e.to_string()))?;
    reader.limits(decode_limits());
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(NoThumbnail::TooManyPixels {
            pixels,
            max: max_pixels,
        });
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let image = image::DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    let mut small = image.thumbnail(THUMB_MAX, THUMB_MAX);
    drop(image);
    small.apply_orientation(orientation);
    Ok(small)
}

/// JPEG has no alpha: transparent pixels become white, not black.
fn flatten_on_white(image: &image::DynamicImage) -> image::RgbImage {
    let rgba = image.to_rgba8();
    let mut out = image::RgbImage::new(rgba.width(), rgba.height());
    for (x, y, pixel) in rgba.enumerate_pixels() {
        let [r, g, b, a] = pixel.0;
        let blend = |c: u8| ((c as u32 * a as u32 + 255 * (255 - a as u32)) / 255) as u8;
        out.put_pixel(x, y, image::Rgb([blend(r), blend(g), blend(b)]));
    }
    out
}

/// Removes a blob and its preview (or its mark of having none).
pub fn remove_blob(files_dir: &Path, sha: &str) {
    for path in [
        blob_path(files_dir, sha),
        thumb_path(files_dir, sha),
        no_thumb_path(files_dir, sha),
    ]
    .into_iter()
    .flatten()
    {
        remove_if_exists(&path);
    }
}

/// Removes temp files not written to for `max_age` (left by a crash or a
/// killed request). Returns how many.
pub fn sweep_tmp(files_dir: &Path, max_age: Duration) -> usize {
    let Ok(entries) = fs::read_dir(tmp_dir(files_dir)) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= max_age);
        if stale {
            remove_if_exists(&entry.path());
            removed += 1;
        }
    }
    removed
}

/// Every content file on disk, as (sha256, `None` for the content itself or the
/// path of its preview or no-preview mark), for the sweep that removes files no
/// record refers to.
pub fn list_stored(files_dir: &Path) -> Vec<(String, Option<PathBuf>)> {
    let mut out = Vec::new();
    let Ok(dirs) = fs::read_dir(files_dir) else {
        return out;
    };
    for dir in dirs.flatten() {
        let prefix = dir.file_name().to_string_lossy().into_owned();
        if prefix.len() != 2 || !dir.path().is_dir() {
            continue;
        }
        let Ok(files) = fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let rest = name
                .strip_suffix(THUMB_SUFFIX)
                .or_else(|| name.strip_suffix(NO_THUMB_SUFFIX));
            let derived = rest.is_some().then(|| file.path());
            let sha = format!("{prefix}{}", rest.unwrap_or(&name));
            if is_sha256_hex(&sha) {
                out.push((sha, derived));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn paths_come_only_from_hashes() {
        let root = Path::new("/data/files");
        assert_eq!(
            blob_path(root, SHA),
            Some(PathBuf::from(format!("/data/files/9f/{}", &SHA[2..])))
        );
        assert!(thumb_path(root, SHA).is_some_and(|p| p.to_string_lossy().ends_with(".thumb.jpg")));
        assert_eq!(blob_path(root, "../../etc/passwd"), None);
        assert_eq!(blob_path(root, &SHA.to_uppercase()), None);
        assert_eq!(blob_path(root, &SHA[..63]), None);
    }

    #[tokio::test]
    async fn writer_hashes_and_placement_dedups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = files_dir(dir.path());
        let tmp = tmp_dir(&files);
        let mut placed = Vec::new();
        for _ in 0..2 {
            let mut temp = TempFile::new_name(&tmp, ".part");
            let mut writer = UploadWriter::create(temp.path().to_owned())
                .await
                .expect("create");
            writer.push(Bytes::from_static(b"te")).await.expect("push");
            writer.push(Bytes::from_static(b"st")).await.expect("push");
            let written = writer.finish().await.expect("write");
            assert_eq!(written.sha256, SHA);
            assert_eq!(written.size, 4);
            assert_eq!(written.head, b"test");
            let path = place_blob(&files, &mut temp, &written.sha256, written.size).expect("place");
            placed.push(path);
        }
        assert_eq!(placed[0], placed[1]);
        assert_eq!(fs::read(&placed[0]).expect("read"), b"test");
        assert_eq!(
            fs::read_dir(&tmp).expect("tmp").count(),
            0,
            "temp files left"
        );
        assert_eq!(list_stored(&files), vec![(SHA.to_owned(), None)]);
        remove_blob(&files, SHA);
        assert!(list_stored(&files).is_empty());
    }

    #[tokio::test]
    async fn the_writer_hashes_across_many_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let temp = TempFile::new_name(&tmp_dir(&files_dir(dir.path())), ".part");
        let mut writer = UploadWriter::create(temp.path().to_owned())
            .await
            .expect("create");
        let content: Vec<u8> = (0..FLUSH_BYTES * 5 + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        for chunk in content.chunks(7_000) {
            writer
                .push(Bytes::copy_from_slice(chunk))
                .await
                .expect("push");
        }
        let written = writer.finish().await.expect("finish");
        assert_eq!(written.size, content.len() as u64);
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(written.head, content[..SNIFF_BYTES]);
        assert_eq!(fs::read(temp.path()).expect("read"), content);
    }

    #[test]
    fn thumbnails_are_small_jpegs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = files_dir(dir.path());
        let image = image::RgbaImage::from_fn(800, 400, |x, y| {
            image::Rgba([
                (x % 256) as u8,
                (y % 256) as u8,
                0,
                if x < 400 { 255 } else { 0 },
            ])
        });
        let path = blob_path(&files, SHA).expect("path");
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        image
            .save_with_format(&path, image::ImageFormat::Png)
            .expect("save");
        assert_eq!(image_dimensions(&path), Some((800, 400)));
        let thumb = ensure_thumbnail(&files, SHA, 1_000_000).expect("thumb");
        let (w, h) = image_dimensions(&thumb).expect("dims");
        assert_eq!((w, h), (320, 160));
        let decoded = image::open(&thumb).expect("open").to_rgb8();
        // The transparent half is white.
        assert!(decoded.get_pixel(300, 80).0.iter().all(|&c| c > 240));
        assert_eq!(list_stored(&files).len(), 2);
        remove_blob(&files, SHA);
        assert!(list_stored(&files).is_empty());
    }

    #[test]
    fn broken_images_have_no_thumbnail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = files_dir(dir.path());
        let path = blob_path(&files, SHA).expect("path");
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, b"\x89PNG\r\n\x1a\nnot really").expect("write");
        assert!(matches!(
            ensure_thumbnail(&files, SHA, 1_000_000),
            Err(NoThumbnail::Undecodable(_))
        ));
        assert!(!thumb_path(&files, SHA).expect("p").exists());
        // Remembered: not decoded again, and swept with the content.
        assert!(matches!(
            ensure_thumbnail(&files, SHA, 1_000_000),
            Err(NoThumbnail::Remembered)
        ));
        assert_eq!(list_stored(&files).len(), 2);
        remove_blob(&files, SHA);
        assert!(list_stored(&files).is_empty());
    }

    #[test]
    fn images_over_the_pixel_limit_are_not_decoded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = files_dir(dir.path());
        let path = blob_path(&files, SHA).expect("path");
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        image::GrayImage::new(1000, 800)
            .save_with_format(&path, image::ImageFormat::Png)
            .expect("save");
        assert!(matches!(
            ensure_thumbnail(&files, SHA, 799_999),
            Err(NoThumbnail::TooManyPixels {
                pixels: 800_000,
                max: 799_999
            })
        ));
        assert!(!thumb_path(&files, SHA).expect("p").exists());
        assert!(matches!(
            ensure_thumbnail(&files, SHA, 1_000_000),
            Err(NoThumbnail::Remembered)
        ));
    }
}
