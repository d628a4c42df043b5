//! One instance per spool: an exclusive lock (`flock`) on a file of the directory, held
//! for the life of the process. The file holds the holder's PID, so a second instance
//! can name the first. The kernel releases the lock when the process dies, however it
//! dies: a stale file never blocks a start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file the agent takes in its spool directory.
pub const SPOOL_LOCK: &str = "agent.lock";

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{what} {dir} is in use by another process (PID {pid}, holding {path}); stop it first, or give this one its own directory"
    )]
    Held {
        what: &'static str,
        dir: PathBuf,
        path: PathBuf,
        pid: String,
    },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock `name` in `dir` (created if needed), for `what` (e.g. "the push
    /// spool"), without waiting.
    pub fn acquire(dir: &Path, name: &str, what: &'static str) -> Result<DirLock, LockError> {
        let path = dir.join(name);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    what,
                    dir: dir.to_path_buf(),
                    path: path.clone(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_string()
                    },
                });
            }
            return Err(io(e.into()));
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(DirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), SPOOL_LOCK, "the push spool").unwrap();
        // flock locks belong to an open file: a second open, even in this process,
        // conflicts.
        let err = DirLock::acquire(dir.path(), SPOOL_LOCK, "the push spool").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("the push spool"), "{text}");
        drop(first);
        DirLock::acquire(dir.path(), SPOOL_LOCK, "the push spool").unwrap();
    }
}
