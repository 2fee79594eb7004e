//! The data directory: created owner-only, locked against a second server, and
//! holding the database, the generated JWT secret and attachments.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

const LOCK_FILE: &str = "lanchat.lock";
const SECRET_FILE: &str = "jwt.secret";
const SECRET_BYTES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot use data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another lanchat server{holder} is already using the data directory {path}; \
         stop it first or choose another --data-dir"
    )]
    Locked { path: PathBuf, holder: String },
    #[error("the JWT secret file {path} is damaged (expected {SECRET_BYTES} bytes of hex)")]
    BadSecret { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An opened data directory. While it lives, it holds the lock.
#[derive(Debug)]
pub struct DataDir {
    pub root: PathBuf,
    _lock: Option<File>,
}

impl DataDir {
    /// Creates the directory if missing (mode 0700) without locking it: for
    /// commands that may run beside a live server (SQLite arbitrates those).
    pub fn open_unlocked(root: &Path) -> Result<DataDir, DataDirError> {
        create_private_dir(root)?;
        Ok(DataDir {
            root: root.to_owned(),
            _lock: None,
        })
    }

    /// Creates and locks the directory: only one server may use it at a time.
    pub fn open_locked(root: &Path) -> Result<DataDir, DataDirError> {
        create_private_dir(root)?;
        let lock_path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(DataDirError::Locked {
                    path: root.to_owned(),
                    holder: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" ({holder})")
                    },
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(DataDirError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        // Name ourselves for whoever finds the lock taken.
        let write = (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "pid {}", std::process::id())?;
            file.flush()
        })();
        write.map_err(io_err(&lock_path))?;
        Ok(DataDir {
            root: root.to_owned(),
            _lock: Some(file),
        })
    }

    pub fn database_path(&self) -> PathBuf {
        self.root.join(crate::db::DB_FILE)
    }

    pub fn files_dir(&self) -> PathBuf {
        self.root.join("files")
    }

    /// The JWT signing secret: generated on first use, kept owner-only.
    pub fn jwt_secret(&self) -> Result<Vec<u8>, DataDirError> {
        let path = self.root.join(SECRET_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|_| DataDirError::BadSecret { path: path.clone() })?;
                if bytes.len() != SECRET_BYTES {
                    return Err(DataDirError::BadSecret { path });
                }
                Ok(bytes)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = vec![0u8; SECRET_BYTES];
                rand::fill(&mut secret[..]);
                write_private_file(&path, hex::encode(&secret).as_bytes())?;
                Ok(secret)
            }
            Err(source) => Err(DataDirError::Io { path, source }),
        }
    }
}

fn create_private_dir(path: &Path) -> Result<(), DataDirError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(path).map_err(io_err(path))?;
    #[cfg(unix)]
    {
        // An existing directory keeps its mode unless we tighten it.
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_err(path))?;
        }
    }
    Ok(())
}

/// Writes a new owner-only file atomically: a temporary file, fsync, rename.
fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_secret_is_stable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("data");
        let first = DataDir::open_locked(&root).expect("first lock");
        let err = DataDir::open_locked(&root).expect_err("second lock");
        assert!(err.to_string().contains("already using"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        let secret = first.jwt_secret().expect("secret");
        assert_eq!(secret, first.jwt_secret().expect("secret again"));
        #[cfg(unix)]
        {
            let mode = fs::metadata(root.join(SECRET_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(&root).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        drop(first);
        DataDir::open_locked(&root).expect("lock after release");
    }
}
