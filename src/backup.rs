//! Backups: one tar archive holding a consistent snapshot of the database (taken
//! with SQLite's online backup API, so a running server keeps serving), every
//! stored attachment file, and a `manifest.json` describing them (versions, sizes,
//! SHA-256). Restoring unpacks an archive into an empty data directory after
//! checking all of it. Everything here is blocking file work: async callers run
//! it on `spawn_blocking`.
//!
//! Archive layout:
//! ```text
//! lanchat.db            the database (rollback-journal mode, self-contained)
//! files/ab/cdef...      attachment files, as stored under <data_dir>/files
//! manifest.json         written last: it lists what was actually archived
//! ```
//! tls/ca.key, ca.crt   the local certificate authority (HTTPS), when there is one:
//!                       a restored server keeps it, so devices stay trusted
//! The JWT signing secret is deliberately not included: a restored server makes a
//! new one (outstanding access tokens lapse; sessions continue by refresh).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{DB_FILE, migrations, now_ms};
use crate::error::AppError;

pub const MANIFEST_FILE: &str = "manifest.json";
/// The archive format this binary writes and reads.
pub const FORMAT: u32 = 1;
const FILES_DIR: &str = "files";
/// The local certificate authority, archived so a restore keeps devices trusting
/// the server.
const CA_FILES: [&str; 2] = ["tls/ca.key", "tls/ca.crt"];
/// Directories under `files/` that hold work in progress or caches, never content.
const SKIPPED_DIRS: &[&str] = &["tmp", "temp", "thumbs", "thumbnails", "cache"];
/// Prefix of temporary files a backup leaves in the data directory while it runs.
const TEMP_PREFIX: &str = ".backup-";
/// Prefix of the archives scheduled backups write.
pub const ARCHIVE_PREFIX: &str = "lanchat-backup-";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("database error during backup: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("another backup is running; try again when it has finished")]
    Busy,
}

impl From<BackupError> for AppError {
    fn from(err: BackupError) -> Self {
        match err {
            BackupError::Busy => AppError::Conflict {
                code: "backup_running",
                message: err.to_string().into(),
            },
            other => AppError::internal(other),
        }
    }
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// What an archive holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub lanchat_version: String,
    /// The newest migration applied to the archived database.
    pub schema_version: i64,
    pub created_at: i64,
    pub database: FileEntry,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// The path inside the archive (and inside the data directory).
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// How many attachment files the archive holds (the CA files aside).
    pub fn attachment_count(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.path.starts_with(&format!("{FILES_DIR}/")))
            .count()
    }
}

/// One backup at a time per process: each needs a full copy's worth of disk.
static RUNNING: Mutex<()> = Mutex::new(());

fn exclusive() -> Result<std::sync::MutexGuard<'static, ()>, BackupError> {
    match RUNNING.try_lock() {
        Ok(guard) => Ok(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(BackupError::Busy),
    }
}

/// A file removed when dropped (temporary snapshots and archives).
#[derive(Debug)]
pub struct TempPath(Option<PathBuf>);

impl TempPath {
    pub fn new(path: PathBuf) -> TempPath {
        TempPath(Some(path))
    }

    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Keeps the file: it is no longer removed on drop.
    pub fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(&path);
            // SQLite's rollback journal, should a snapshot have been interrupted.
            let mut journal = path.into_os_string();
            journal.push("-journal");
            let _ = fs::remove_file(journal);
        }
    }
}

fn temp_name(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let mut random = [0u8; 8];
    rand::fill(&mut random[..]);
    dir.join(format!("{prefix}{}{suffix}", hex::encode(random)))
}

/// Removes temporary files an interrupted backup left in `dir` (at start-up).
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = name.starts_with(TEMP_PREFIX)
            || (name.starts_with(&format!(".{ARCHIVE_PREFIX}")) && name.ends_with(".part"));
        if stale && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            if let Err(err) = fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %err, "cannot remove a stale backup file");
            } else {
                tracing::info!(path = %entry.path().display(), "removed a stale backup file");
            }
        }
    }
}

/// Copies the database at `source` into a new file `dest` with the online backup
/// API, in one step: one read transaction, so the copy is the state of one
/// commit, while the server's writer goes on (WAL readers never block writers).
/// Returns the snapshot's schema version.
pub fn snapshot_database(source: &Path, dest: &Path) -> Result<i64, BackupError> {
    if !source.is_file() {
        return Err(BackupError::Invalid(format!(
            "there is no database at {}",
            source.display()
        )));
    }
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(5))?;
    let mut dst = Connection::open(dest)?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        let mut attempts = 0;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => continue,
                _ => {
                    attempts += 1;
                    if attempts > 100 {
                        return Err(BackupError::Invalid(
                            "the database stayed locked; backup abandoned".into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    // The copy carries the source's WAL flag; a rollback journal makes the file
    // complete on its own. The server switches it back to WAL when it opens it.
    let _: String = dst.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))?;
    let schema_version = schema_version(&dst)?;
    dst.close().map_err(|(_, err)| BackupError::Db(err))?;
    drop(src);
    Ok(schema_version)
}

fn schema_version(conn: &Connection) -> Result<i64, BackupError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?)
}

/// The newest schema version this binary knows.
pub fn binary_schema_version() -> Result<i64, BackupError> {
    let migrations = migrations::embedded().map_err(|err| BackupError::Invalid(err.to_string()))?;
    Ok(migrations.last().map(|m| m.version).unwrap_or(0))
}

/// A reader that hashes what passes and fails if the source ends early (a file
/// that shrank while being archived would otherwise corrupt the archive).
struct Hashing<R> {
    inner: R,
    remaining: u64,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file changed while it was being read",
            ));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    source: &Path,
    archive_path: &str,
    mtime: u64,
) -> Result<Option<FileEntry>, BackupError> {
    let file = match File::open(source) {
        Ok(file) => file,
        // Removed since it was listed (an orphaned upload cleaned up): skip it.
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_ctx(format!("cannot read {}", source.display()))(err)),
    };
    let size = file
        .metadata()
        .map_err(io_ctx(format!("cannot read {}", source.display())))?
        .len();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    let mut reader = Hashing {
        inner: BufReader::with_capacity(256 * 1024, file),
        remaining: size,
        hasher: Sha256::new(),
    };
    builder
        .append_data(&mut header, archive_path, &mut reader)
        .map_err(io_ctx(format!("cannot archive {}", source.display())))?;
    Ok(Some(FileEntry {
        path: archive_path.to_owned(),
        size,
        sha256: hex::encode(reader.hasher.finalize()),
    }))
}

/// The attachment files under `files_dir`, as (path on disk, path in the
/// archive), sorted; temporary files, caches, hidden files and symlinks are left
/// out.
fn list_files(files_dir: &Path) -> Result<Vec<(PathBuf, String)>, BackupError> {
    let mut out = Vec::new();
    if !files_dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![(files_dir.to_owned(), FILES_DIR.to_owned(), true)];
    while let Some((dir, prefix, top)) = stack.pop() {
        let entries =
            fs::read_dir(&dir).map_err(io_ctx(format!("cannot list {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_ctx(format!("cannot list {}", dir.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %entry.path().display(), "backup skips a file whose name is not UTF-8");
                continue;
            };
            if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
                continue;
            }
            let file_type = entry
                .file_type()
                .map_err(io_ctx(format!("cannot read {}", entry.path().display())))?;
            let archive_path = format!("{prefix}/{name}");
            if file_type.is_dir() {
                if top && SKIPPED_DIRS.contains(&name.as_str()) {
                    continue;
                }
                stack.push((entry.path(), archive_path, false));
            } else if file_type.is_file() {
                out.push((entry.path(), archive_path));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Writes a complete archive of the data directory to `out`. The database
/// snapshot is staged in `temp_dir` (and removed afterwards).
pub fn write_archive<W: Write>(
    data_dir: &Path,
    temp_dir: &Path,
    out: W,
) -> Result<Manifest, BackupError> {
    let _running = exclusive()?;
    let created_at = now_ms();
    let mtime = u64::try_from(created_at / 1000).unwrap_or(0);
    let snapshot = TempPath::new(temp_name(temp_dir, TEMP_PREFIX, ".db"));
    let schema_version = snapshot_database(&data_dir.join(DB_FILE), snapshot.path())?;

    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    let database = append_file(&mut builder, snapshot.path(), DB_FILE, mtime)?
        .ok_or_else(|| BackupError::Invalid("the database snapshot vanished".into()))?;
    drop(snapshot);

    // Listed after the snapshot: every file the snapshot refers to exists already
    // (files are written before their records and never change afterwards).
    let mut files = Vec::new();
    for (path, archive_path) in list_files(&data_dir.join(FILES_DIR))? {
        if let Some(entry) = append_file(&mut builder, &path, &archive_path, mtime)? {
            files.push(entry);
        }
    }
    for archive_path in CA_FILES {
        if let Some(entry) = append_file(
            &mut builder,
            &data_dir.join(archive_path),
            archive_path,
            mtime,
        )? {
            files.push(entry);
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        lanchat_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        created_at,
        database,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|err| BackupError::Invalid(err.to_string()))?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    builder
        .append_data(&mut header, MANIFEST_FILE, json.as_slice())
        .map_err(io_ctx("cannot write the archive"))?;
    let mut out = builder
        .into_inner()
        .map_err(io_ctx("cannot write the archive"))?;
    out.flush().map_err(io_ctx("cannot write the archive"))?;
    Ok(manifest)
}

/// Writes an archive to a temporary file in `temp_dir` for streaming; the file is
/// removed when the returned guard is dropped.
pub fn archive_to_temp_file(
    data_dir: &Path,
    temp_dir: &Path,
) -> Result<(TempPath, Manifest), BackupError> {
    let temp = TempPath::new(temp_name(temp_dir, TEMP_PREFIX, ".tar"));
    let file = create_private(temp.path())?;
    let mut writer = BufWriter::with_capacity(256 * 1024, file);
    let manifest = write_archive(data_dir, temp_dir, &mut writer)?;
    writer.flush().map_err(io_ctx("cannot write the archive"))?;
    Ok((temp, manifest))
}

/// Writes an archive to `dest` atomically: a hidden `.part` file beside it,
/// fsynced, then renamed. Refuses to overwrite an existing file.
pub fn archive_to_file(data_dir: &Path, dest: &Path) -> Result<Manifest, BackupError> {
    let (part, manifest) = archive_to_part(data_dir, dest)?;
    publish(part, dest)?;
    Ok(manifest)
}

/// The first half of [`archive_to_file`]: the complete, fsynced archive in a
/// hidden `.part` file beside `dest` (removed if dropped).
fn archive_to_part(data_dir: &Path, dest: &Path) -> Result<(TempPath, Manifest), BackupError> {
    if dest.exists() {
        return Err(BackupError::Invalid(format!(
            "{} already exists; choose another file name",
            dest.display()
        )));
    }
    let dir = parent_dir(dest);
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BackupError::Invalid(format!("{} is not a file name", dest.display())))?;
    let part = TempPath::new(dir.join(format!(".{name}.part")));
    let file = create_private(part.path())?;
    let mut writer = BufWriter::with_capacity(256 * 1024, file);
    let manifest = write_archive(data_dir, &dir, &mut writer)?;
    let file = writer
        .into_inner()
        .map_err(|err| io_ctx("cannot write the archive")(err.into_error()))?;
    file.sync_all()
        .map_err(io_ctx(format!("cannot write {}", dest.display())))?;
    Ok((part, manifest))
}

/// The second half: renames the finished `.part` file to `dest`.
fn publish(part: TempPath, dest: &Path) -> Result<(), BackupError> {
    fs::rename(part.path(), dest).map_err(io_ctx(format!("cannot write {}", dest.display())))?;
    part.keep();
    sync_dir(&parent_dir(dest));
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn create_private(path: &Path) -> Result<File, BackupError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map_err(io_ctx(format!("cannot create {}", path.display())))
}

fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The manifest of an archive (first pass of a restore), checked against what
/// this binary can restore.
pub fn read_manifest(archive: &mut File) -> Result<Manifest, BackupError> {
    archive
        .seek(SeekFrom::Start(0))
        .map_err(io_ctx("cannot read the archive"))?;
    let mut tar = tar::Archive::new(BufReader::new(&mut *archive));
    let not_backup = |err: io::Error| {
        BackupError::Invalid(format!("this is not a lanchat backup archive: {err}"))
    };
    let mut manifest = None;
    for entry in tar.entries().map_err(not_backup)? {
        let mut entry = entry.map_err(not_backup)?;
        let is_manifest = entry
            .path()
            .map(|p| p.as_ref() == Path::new(MANIFEST_FILE))
            .unwrap_or(false);
        if !is_manifest {
            continue;
        }
        if entry.size() > 64 * 1024 * 1024 {
            return Err(BackupError::Invalid(
                "the manifest is implausibly large".into(),
            ));
        }
        let mut text = Vec::new();
        entry.read_to_end(&mut text).map_err(not_backup)?;
        let parsed: Manifest = serde_json::from_slice(&text)
            .map_err(|err| BackupError::Invalid(format!("the manifest is damaged: {err}")))?;
        manifest = Some(parsed);
    }
    let manifest = manifest.ok_or_else(|| {
        BackupError::Invalid("this is not a lanchat backup archive: it has no manifest.json".into())
    })?;
    if manifest.format != FORMAT {
        return Err(BackupError::Invalid(format!(
            "this backup has archive format {}, this lanchat reads format {FORMAT}",
            manifest.format
        )));
    }
    let known = binary_schema_version()?;
    if manifest.schema_version > known {
        return Err(BackupError::Invalid(format!(
            "this backup was made by lanchat {} with database schema {}, newer than this \
             lanchat knows ({known}); restore it with that version or a newer one",
            manifest.lanchat_version, manifest.schema_version
        )));
    }
    if manifest.database.path != DB_FILE {
        return Err(BackupError::Invalid(
            "the manifest names no database".into(),
        ));
    }
    Ok(manifest)
}

/// Checks that an archive path is one a backup writes: `lanchat.db` or
/// `files/...` made only of plain names (no `..`, no root, no drive).
fn safe_relative_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            _ => return None,
        }
    }
    let joined = parts.join("/");
    let ok = joined == DB_FILE
        || CA_FILES.contains(&joined.as_str())
        || (parts.len() >= 2 && parts[0] == FILES_DIR);
    ok.then_some(joined)
}

/// Whether `dir` is missing or an empty directory.
pub fn is_empty_or_missing(dir: &Path) -> Result<bool, BackupError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(err) => Err(io_ctx(format!("cannot read {}", dir.display()))(err)),
    }
}

/// Restores an archive into `target`, which must be missing or empty. Everything
/// is verified (manifest, paths, sizes, SHA-256, database integrity); on any
/// failure what was unpacked is removed again.
pub fn restore(archive_path: &Path, target: &Path) -> Result<Manifest, BackupError> {
    if target.exists() && !target.is_dir() {
        return Err(BackupError::Invalid(format!(
            "{} exists and is not a directory",
            target.display()
        )));
    }
    if !is_empty_or_missing(target)? {
        return Err(BackupError::Invalid(format!(
            "the data directory {} is not empty: restore only into a new or empty directory \
             (move the current one aside first)",
            target.display()
        )));
    }
    let mut archive = File::open(archive_path)
        .map_err(io_ctx(format!("cannot open {}", archive_path.display())))?;
    let manifest = read_manifest(&mut archive)?;
    let existed = target.exists();
    let result = (|| {
        let data_dir = crate::datadir::DataDir::open_locked(target)
            .map_err(|err| BackupError::Invalid(err.to_string()))?;
        unpack(&mut archive, &data_dir.root, &manifest)?;
        check_database(&data_dir.database_path())?;
        Ok(())
    })();
    if let Err(err) = result {
        // Leave the directory as it was: missing, or empty.
        if existed {
            if let Ok(entries) = fs::read_dir(target) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                }
            }
        } else {
            let _ = fs::remove_dir_all(target);
        }
        return Err(err);
    }
    Ok(manifest)
}

fn unpack(archive: &mut File, root: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    archive
        .seek(SeekFrom::Start(0))
        .map_err(io_ctx("cannot read the archive"))?;
    let mut expected: HashMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .chain(std::iter::once(&manifest.database))
        .map(|entry| (entry.path.as_str(), entry))
        .collect();
    let damaged = |err: io::Error| BackupError::Invalid(format!("the archive is damaged: {err}"));
    let mut tar = tar::Archive::new(BufReader::new(&mut *archive));
    for entry in tar.entries().map_err(damaged)? {
        let entry = entry.map_err(damaged)?;
        let raw_path = entry.path().map_err(damaged)?.into_owned();
        if raw_path == Path::new(MANIFEST_FILE) {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let Some(path) = safe_relative_path(&raw_path) else {
            return Err(BackupError::Invalid(format!(
                "the archive holds an unsafe or unexpected path: {}",
                raw_path.display()
            )));
        };
        if !kind.is_file() {
            return Err(BackupError::Invalid(format!(
                "the archive entry {path} is not a regular file"
            )));
        }
        let Some(want) = expected.remove(path.as_str()) else {
            return Err(BackupError::Invalid(format!(
                "the archive entry {path} is not in the manifest (or appears twice)"
            )));
        };
        let dest = root.join(&path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(io_ctx(format!("cannot create {}", parent.display())))?;
        }
        let mut file = create_private(&dest)?;
        let mut reader = Hashing {
            inner: entry,
            remaining: want.size,
            hasher: Sha256::new(),
        };
        io::copy(&mut reader, &mut file).map_err(damaged)?;
        let mut rest = [0u8; 1];
        if reader.inner.read(&mut rest).map_err(damaged)? != 0 {
            return Err(BackupError::Invalid(format!(
                "{path} is larger in the archive than the manifest says"
            )));
        }
        if hex::encode(reader.hasher.finalize()) != want.sha256 {
            return Err(BackupError::Invalid(format!(
                "{path} does not match its checksum: the archive is damaged"
            )));
        }
        file.sync_all()
            .map_err(io_ctx(format!("cannot write {}", dest.display())))?;
    }
    if let Some(missing) = expected.keys().next() {
        return Err(BackupError::Invalid(format!(
            "the archive lacks {missing}, which its manifest lists"
        )));
    }
    sync_dir(root);
    Ok(())
}

fn check_database(path: &Path) -> Result<(), BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if verdict != "ok" {
        return Err(BackupError::Invalid(format!(
            "the restored database fails its integrity check: {verdict}"
        )));
    }
    let version = schema_version(&conn)?;
    let known = binary_schema_version()?;
    if version > known {
        return Err(BackupError::Invalid(format!(
            "the backup's database has schema {version}, newer than this lanchat knows ({known})"
        )));
    }
    Ok(())
}

/// `lanchat-backup-YYYYMMDDTHHMMSSZ.tar` for a time in milliseconds.
pub fn archive_name(at_ms: i64) -> String {
    format!("{ARCHIVE_PREFIX}{}.tar", utc_stamp(at_ms))
}

/// `YYYYMMDDTHHMMSSZ` (UTC).
pub fn utc_stamp(at_ms: i64) -> String {
    let secs = at_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The archives scheduled backups wrote in `dir`, oldest first.
pub fn scheduled_archives(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(ARCHIVE_PREFIX)
                && name.ends_with(".tar")
                && entry.file_type().map(|t| t.is_file()).unwrap_or(false)
        })
        .map(|entry| entry.path())
        .collect();
    // The names hold UTC timestamps of fixed width: name order is time order.
    found.sort();
    found
}

/// Deletes the oldest scheduled archives beyond the newest `keep`.
pub fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let archives = scheduled_archives(dir);
    let excess = archives.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for path in archives.into_iter().take(excess) {
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove an old backup")
            }
        }
    }
    removed
}

/// When the newest scheduled archive in `dir` was written.
pub fn newest_archive_time(dir: &Path) -> Option<SystemTime> {
    scheduled_archives(dir)
        .last()
        .and_then(|path| fs::metadata(path).ok())
        .and_then(|meta| meta.modified().ok())
}

/// Where scheduled backups go: `backup.dir`, or `<data_dir>/backups`.
pub fn backup_dir(config: &crate::config::Config, data_dir: &Path) -> PathBuf {
    let dir = config.backup.dir.trim();
    if dir.is_empty() {
        data_dir.join("backups")
    } else {
        PathBuf::from(dir)
    }
}

/// Starts scheduled backups when `backup.every` is set: an archive
/// `lanchat-backup-<UTC timestamp>.tar` in the backup directory every period
/// (the first one when the newest existing archive is a period old, or shortly
/// after start-up if there is none), keeping the newest `backup.keep`.
pub fn spawn_scheduled_backups(
    state: crate::state::SharedState,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = state.config.backup.every.trim().to_owned();
    if every.is_empty() {
        return None;
    }
    let period = match crate::config::parse_duration(&every) {
        Ok(secs) => Duration::from_secs(secs),
        Err(err) => {
            tracing::warn!(error = %err, "backup.every is not valid; scheduled backups are off");
            return None;
        }
    };
    let dir = backup_dir(&state.config, &state.data_dir);
    let keep = state.config.backup.keep as usize;
    tracing::info!(dir = %dir.display(), every = %every, keep, "scheduled backups are on");
    Some(tokio::spawn(async move {
        let prepare_dir = dir.clone();
        let ready = tokio::task::spawn_blocking(move || {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.create(&prepare_dir)?;
            remove_stale_temp_files(&prepare_dir);
            Ok::<_, io::Error>(first_delay(&prepare_dir, period))
        })
        .await;
        let first = match ready {
            Ok(Ok(delay)) => delay,
            Ok(Err(err)) => {
                tracing::error!(dir = %dir.display(), error = %err, "cannot create the backup directory; scheduled backups are off");
                return;
            }
            Err(_) => return,
        };
        tokio::time::sleep(first).await;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            run_scheduled(&state, &dir, keep).await;
        }
    }))
}

fn first_delay(dir: &Path, period: Duration) -> Duration {
    let soon = period.min(Duration::from_secs(30));
    match newest_archive_time(dir) {
        Some(written) => match (written + period).duration_since(SystemTime::now()) {
            Ok(wait) => wait,
            Err(_) => soon,
        },
        None => soon,
    }
}

async fn run_scheduled(state: &crate::state::SharedState, dir: &Path, keep: usize) {
    let data_dir = state.data_dir.clone();
    let dir = dir.to_owned();
    let started = std::time::Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        let dest = dir.join(archive_name(now_ms()));
        if dest.exists() {
            return Ok(None);
        }
        let (part, manifest) = archive_to_part(&data_dir, &dest)?;
        // Make room first, so that no more than `keep` archives ever exist; the
        // new one is complete on disk already, only its rename is left.
        // (`backup.keep = 0` keeps everything.)
        let removed = match keep {
            0 => Vec::new(),
            n => prune(&dir, n - 1),
        };
        publish(part, &dest)?;
        let size = fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        Ok::<_, BackupError>(Some((dest, manifest, size, removed)))
    })
    .await;
    match outcome {
        Ok(Ok(Some((dest, manifest, size, removed)))) => tracing::info!(
            path = %dest.display(),
            bytes = size,
            files = manifest.attachment_count(),
            pruned = removed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scheduled backup written"
        ),
        Ok(Ok(None)) => {}
        Ok(Err(err)) => tracing::error!(error = %err, "scheduled backup failed"),
        Err(err) => tracing::error!(error = %err, "scheduled backup task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_in_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2024-02-29 23:59:59 UTC
        assert_eq!(utc_stamp(1_709_251_199_000), "20240229T235959Z");
        assert_eq!(
            archive_name(1_735_689_600_000),
            "lanchat-backup-20250101T000000Z.tar"
        );
    }

    #[test]
    fn only_plain_paths_are_accepted() {
        assert_eq!(
            safe_relative_path(Path::new("lanchat.db")).as_deref(),
            Some("lanchat.db")
        );
        assert_eq!(
            safe_relative_path(Path::new("files/ab/cd")).as_deref(),
            Some("files/ab/cd")
        );
        for bad in [
            "../x",
            "/etc/passwd",
            "files/../../x",
            "files",
            "jwt.secret",
            "files/./a",
        ] {
            let accepted = safe_relative_path(Path::new(bad));
            // `files/./a` normalises to `files/a` in `components()`, which is safe.
            if bad == "files/./a" {
                assert_eq!(accepted.as_deref(), Some("files/a"));
            } else {
                assert!(accepted.is_none(), "{bad} accepted");
            }
        }
    }

    fn make_data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = crate::db::open_writer_connection(&dir.path().join(DB_FILE)).expect("open");
        migrations::migrate(&mut conn).expect("migrate");
        conn.execute(
            "INSERT INTO users (username, password_hash, created_at) VALUES ('alice', 'h', 1)",
            [],
        )
        .expect("insert");
        drop(conn);
        let files = dir.path().join("files/ab");
        fs::create_dir_all(&files).expect("mkdir");
        fs::write(files.join("cdef"), b"hello attachment").expect("write");
        fs::create_dir_all(dir.path().join("files/tmp")).expect("mkdir");
        fs::write(dir.path().join("files/tmp/upload"), b"partial").expect("write");
        fs::write(dir.path().join("files/ab/.hidden.tmp"), b"x").expect("write");
        dir
    }

    #[test]
    fn archive_round_trips_and_is_verified() {
        let data = make_data_dir();
        let out = tempfile::tempdir().expect("tempdir");
        let archive = out.path().join("b.tar");
        let manifest = archive_to_file(data.path(), &archive).expect("backup");
        assert_eq!(manifest.files.len(), 1, "{manifest:?}");
        assert_eq!(manifest.files[0].path, "files/ab/cdef");
        assert!(manifest.schema_version >= 1);
        assert!(
            archive_to_file(data.path(), &archive).is_err(),
            "no overwrite"
        );

        let target = out.path().join("restored");
        restore(&archive, &target).expect("restore");
        assert_eq!(
            fs::read(target.join("files/ab/cdef")).expect("file"),
            b"hello attachment"
        );
        assert!(!target.join("files/tmp").exists());
        let conn = Connection::open(target.join(DB_FILE)).expect("open");
        let name: String = conn
            .query_row("SELECT username FROM users", [], |row| row.get(0))
            .expect("user");
        assert_eq!(name, "alice");

        // A second restore into the now non-empty directory is refused.
        let err = restore(&archive, &target).expect_err("not empty");
        assert!(err.to_string().contains("not empty"), "{err}");

        // A corrupted archive is refused and leaves nothing behind.
        let mut bytes = fs::read(&archive).expect("read");
        let at = bytes
            .windows(16)
            .position(|w| w == b"hello attachment")
            .expect("content");
        bytes[at] = b'j';
        let broken = out.path().join("broken.tar");
        fs::write(&broken, bytes).expect("write");
        let target2 = out.path().join("restored2");
        let err = restore(&broken, &target2).expect_err("checksum");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(!target2.exists());
    }

    #[test]
    fn hostile_archives_are_refused() {
        let out = tempfile::tempdir().expect("tempdir");
        let build = |name: &str, entry_path: &[u8], schema: i64| -> PathBuf {
            let path = out.path().join(name);
            let mut builder = tar::Builder::new(File::create(&path).expect("create"));
            let body = b"evil";
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_entry_type(tar::EntryType::Regular);
            // Write the raw name, bypassing the builder's own path checks.
            header.as_old_mut().name[..entry_path.len()].copy_from_slice(entry_path);
            header.set_cksum();
            builder.append(&header, &body[..]).expect("append");
            let manifest = Manifest {
                format: FORMAT,
                lanchat_version: "9.9.9".into(),
                schema_version: schema,
                created_at: 0,
                database: FileEntry {
                    path: DB_FILE.into(),
                    size: 4,
                    sha256: String::new(),
                },
                files: vec![],
            };
            let json = serde_json::to_vec(&manifest).expect("json");
            let mut header = tar::Header::new_gnu();
            header.set_size(json.len() as u64);
            builder
                .append_data(&mut header, MANIFEST_FILE, json.as_slice())
                .expect("manifest");
            builder.finish().expect("finish");
            path
        };
        let traversal = build("t.tar", b"../../escaped", 1);
        let target = out.path().join("t");
        let err = restore(&traversal, &target).expect_err("traversal");
        assert!(err.to_string().contains("unsafe"), "{err}");
        assert!(!out.path().join("escaped").exists());
        assert!(!target.exists());

        let newer = build("n.tar", b"lanchat.db", 9999);
        let err = restore(&newer, &out.path().join("n")).expect_err("newer schema");
        assert!(err.to_string().contains("newer"), "{err}");

        let not_tar = out.path().join("x.tar");
        fs::write(&not_tar, b"definitely not a tar file").expect("write");
        assert!(restore(&not_tar, &out.path().join("x")).is_err());
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..5 {
            fs::write(dir.path().join(archive_name(i * 1000)), b"x").expect("write");
        }
        fs::write(dir.path().join("unrelated.tar"), b"x").expect("write");
        let removed = prune(dir.path(), 2);
        assert_eq!(removed.len(), 3);
        let left = scheduled_archives(dir.path());
        assert_eq!(left.len(), 2);
        assert!(left[1].ends_with(archive_name(4000)));
        assert!(dir.path().join("unrelated.tar").exists());
    }
}
