//! Binding Unix domain sockets safely: permissions set before the path exists, stale sockets
//! replaced, live ones and non-socket files left alone, paths checked against the platform
//! limit, files removed on shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Longest socket path in bytes: `sun_path` is 108 bytes on Linux (unix(7)), one of which is
/// the terminating NUL.
pub const MAX_PATH_BYTES: usize = 107;

/// Why a socket could not be bound. Each is a startup error with a clear message.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The path does not fit in `sockaddr_un`.
    #[error("socket path {path} is {len} bytes; the platform limit is {MAX_PATH_BYTES}")]
    TooLong {
        /// The path.
        path: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Another process serves on the path.
    #[error("socket {0} is in use by a running process; stop it or choose another path")]
    InUse(String),
    /// Something other than a socket is at the path.
    #[error("{0} exists and is not a socket; refusing to delete it")]
    NotASocket(String),
    /// Any other I/O failure.
    #[error("cannot bind socket {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

/// A bound socket whose file is removed when this is dropped.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listener.
    pub listener: UnixListener,
    /// Removes the file on drop.
    pub guard: SocketFile,
}

/// Owns a socket file path; removes it on drop.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.0).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Binds `path` with permission bits `mode` (e.g. `0o600`).
///
/// The socket is bound in a fresh private directory beside `path`, given its mode, and renamed
/// into place, so it never exists at `path` with looser permissions than asked for. The parent
/// directory is created if missing.
///
/// # Errors
///
/// [`SocketError`]: path too long, a live socket or a non-socket file at the path, I/O.
pub fn bind(path: &Path, mode: u32) -> Result<BoundSocket, SocketError> {
    let shown = path.display().to_string();
    let io = |source| SocketError::Io {
        path: shown.clone(),
        source,
    };
    let len = path.as_os_str().len();
    if len > MAX_PATH_BYTES {
        return Err(SocketError::TooLong { path: shown, len });
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(shown)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::warn!(path = %shown, "replacing stale socket from an earlier run");
                    std::fs::remove_file(path).map_err(io)?;
                }
                Err(e) => return Err(io(e)),
            }
        }
        Ok(_) => return Err(SocketError::NotASocket(shown)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let staging = tempdir_in(&parent).map_err(io)?;
    let mut tmp = staging.join("s");
    if tmp.as_os_str().len() > MAX_PATH_BYTES {
        // The staging path does not fit where the final one does: bind in place and narrow
        // the mode right after (the window is the time of one chmod).
        tmp = path.to_path_buf();
    }
    let listener = UnixListener::bind(&tmp);
    let result = listener.and_then(|l| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        if tmp != path {
            std::fs::rename(&tmp, path)?;
        }
        Ok(l)
    });
    if tmp != path {
        let _ = std::fs::remove_file(&tmp);
    }
    let _ = std::fs::remove_dir(&staging);
    let listener = result.map_err(io)?;
    Ok(BoundSocket {
        listener,
        guard: SocketFile(path.to_path_buf()),
    })
}

fn tempdir_in(parent: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    for attempt in 0..100u32 {
        let dir = parent.join(format!(".b{:x}{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot create a staging directory"))
}
