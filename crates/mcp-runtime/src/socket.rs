//! Binding Unix domain sockets safely: permissions set before the path exists, stale sockets
//! replaced, live ones and non-socket files left alone, abstract names refused, paths checked
//! against the platform limit, and on shutdown only the file this process bound removed.
//!
//! # Ownership of a path
//!
//! A socket file belongs to the process whose listening socket it names. Two rules keep a
//! restart that overlaps the old runtime's drain from breaking the new runtime:
//!
//! - **A socket whose owner still runs is not stale.** The owner keeps its listening socket
//!   open until it exits ([`SocketFile`] holds a second descriptor of it), also while it drains
//!   and its adapters no longer accept; from the moment shutdown starts,
//!   [`SocketFile::close_new_connections`] accepts each new connection and closes it at once.
//!   So another process's probe `connect()` succeeds for as long as the owner lives, and
//!   [`bind`] refuses the path with [`SocketError::InUse`]. Only a socket whose `connect()` is
//!   refused (no process listens on it any more) is replaced.
//! - **A process removes only the file it bound.** [`bind`] records the device and inode of the
//!   file it created; on drop, [`SocketFile`] unlinks the path only if it still has them. A
//!   file deleted under a running runtime and bound again by another process keeps working
//!   when the first one exits.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// Longest socket path in bytes: `sun_path` is 108 bytes on Linux (unix(7)), one of which is
/// the terminating NUL.
pub const MAX_PATH_BYTES: usize = 107;

/// Why a socket could not be bound. Each is a startup error with a clear message; the binary
/// exits with status 2 on any of them.
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
    /// The path names an abstract socket (`@name`), which would otherwise become an ordinary
    /// file named `@name` in the working directory.
    #[error(
        "socket path {0} starts with `@`: abstract socket names are not supported (an abstract \
         socket has no file, so no file mode or owner protects it: any process in the network \
         namespace could connect); give a file path, e.g. /run/mcp/runtime.sock"
    )]
    Abstract(String),
    /// Another process serves on the path (also while it drains).
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

/// A bound socket whose file is removed when its [`SocketFile`] is dropped.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listener, for an adapter to serve.
    pub listener: UnixListener,
    /// The file and the hold on the listening socket; keep it until the process exits.
    pub guard: SocketFile,
}

/// The socket file this process bound, and a second descriptor of its listening socket.
///
/// While this lives the socket keeps listening even after the adapter serving it dropped its
/// listener, so a draining runtime is still seen as the path's owner. On drop the path is
/// unlinked only if it still names the file that [`bind`] created (same device and inode),
/// then the listening socket is closed. Between the check and the unlink there is a window of
/// two system calls in which a file deleted and recreated by someone else at that instant
/// could still be removed; closing it would need an unlink-by-inode that POSIX does not have.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    hold: std::os::unix::net::UnixListener,
    closer: Option<JoinHandle<()>>,
}

impl SocketFile {
    /// The path of the file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now until drop, accepts each new connection and closes it at once: for a runtime
    /// that stopped serving (draining). A connecting client sees its connection closed instead
    /// of waiting in the backlog until the process exits, and another runtime's probe still
    /// finds the path owned. Call it only once the adapter stopped accepting, or right before
    /// (a connection the adapter still takes is served as usual). Needs a tokio runtime; a
    /// failure is logged, and clients then wait in the backlog instead.
    pub fn close_new_connections(&mut self) {
        if self.closer.is_some() {
            return;
        }
        let listener = self.hold.try_clone().and_then(UnixListener::from_std);
        match listener {
            Ok(listener) => {
                let path = self.path.display().to_string();
                self.closer = Some(tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((conn, _)) => drop(conn),
                            Err(e) => {
                                tracing::debug!(%path, error = %e, "accept while draining failed");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        }
                    }
                }));
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot close new connections while draining; they wait until exit");
            }
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino => {
                let _ = std::fs::remove_file(&self.path);
            }
            Ok(_) => {
                tracing::info!(path = %self.path.display(), "the file at the socket path is not the one this process bound; left in place");
            }
            Err(_) => {}
        }
        if let Some(closer) = self.closer.take() {
            closer.abort();
        }
        // `hold` closes after this: the path is gone before the socket stops listening.
    }
}

/// Checks what can be known of `path` without touching it: length, not an abstract name.
///
/// # Errors
///
/// [`SocketError::TooLong`], [`SocketError::Abstract`].
pub fn check_path(path: &Path) -> Result<(), SocketError> {
    let shown = path.display().to_string();
    if path.as_os_str().as_encoded_bytes().first() == Some(&b'@') {
        return Err(SocketError::Abstract(shown));
    }
    let len = path.as_os_str().len();
    if len > MAX_PATH_BYTES {
        return Err(SocketError::TooLong { path: shown, len });
    }
    Ok(())
}

/// Checks before start-up work that `path` could be bound: [`check_path`], and no live socket
/// or non-socket file at the path. Nothing is created or removed; [`bind`] checks again.
///
/// # Errors
///
/// [`SocketError`]: as [`check_path`], [`SocketError::InUse`], [`SocketError::NotASocket`], I/O.
pub fn preflight(path: &Path) -> Result<(), SocketError> {
    check_path(path)?;
    existing(path).map(|_| ())
}

/// What is at the path now.
enum Existing {
    Nothing,
    /// A socket file no process listens on.
    Stale,
}

/// Classifies what is at `path`: nothing, a stale socket, or an error for a live socket or a
/// file that is not a socket.
fn existing(path: &Path) -> Result<Existing, SocketError> {
    let shown = || path.display().to_string();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match probe(path) {
            Ok(true) => Err(SocketError::InUse(shown())),
            Ok(false) => Ok(Existing::Stale),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
            Err(source) => Err(SocketError::Io {
                path: shown(),
                source,
            }),
        },
        Ok(_) => Err(SocketError::NotASocket(shown())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(source) => Err(SocketError::Io {
            path: shown(),
            source,
        }),
    }
}

/// Whether a process listens on the socket at `path`. The connect does not block: a full
/// backlog (`EAGAIN`) also means a listener, and only a refused connection means none.
fn probe(path: &Path) -> io::Result<bool> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e) => Err(e),
    }
}

/// Binds `path` with permission bits `mode` (e.g. `0o600`).
///
/// The socket is bound in a fresh private directory beside `path`, given its mode, and renamed
/// into place, so it never exists at `path` with looser permissions than asked for. A missing
/// parent directory (and each missing ancestor) is created with [`directory_mode`] of `mode`
/// (`0o700` for the default `0o600`); an existing one is left as it is. A socket at `path` is replaced only if no process listens
/// on it (see the module doc); the returned [`SocketFile`] removes only this file.
///
/// # Errors
///
/// [`SocketError`]: path too long or abstract, a live socket or a non-socket file at the path,
/// I/O.
pub fn bind(path: &Path, mode: u32) -> Result<BoundSocket, SocketError> {
    let shown = path.display().to_string();
    let io = |source| SocketError::Io {
        path: shown.clone(),
        source,
    };
    check_path(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(directory_mode(mode))
        .create(&parent)
        .map_err(io)?;
    if let Existing::Stale = existing(path)? {
        tracing::warn!(path = %shown, "replacing stale socket from an earlier run");
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
    }
    let staging = tempdir_in(&parent).map_err(io)?;
    let mut tmp = staging.join("s");
    if tmp.as_os_str().len() > MAX_PATH_BYTES {
        // The staging path does not fit where the final one does: bind in place and narrow
        // the mode right after (the window is the time of one chmod).
        tmp = path.to_path_buf();
    }
    let result = std::os::unix::net::UnixListener::bind(&tmp).and_then(|l| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        // The inode is the file's identity; a rename keeps it.
        let meta = std::fs::symlink_metadata(&tmp)?;
        if tmp != path {
            std::fs::rename(&tmp, path)?;
        }
        Ok((l, meta))
    });
    if tmp != path {
        let _ = std::fs::remove_file(&tmp);
    }
    let _ = std::fs::remove_dir(&staging);
    let (std_listener, meta) = result.map_err(io)?;
    let guard = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
        hold: std_listener.try_clone().map_err(io)?,
        closer: None,
    };
    // Non-blocking is a flag of the open socket, shared by both descriptors (tokio needs it).
    std_listener.set_nonblocking(true).map_err(io)?;
    let listener = UnixListener::from_std(std_listener).map_err(io)?;
    Ok(BoundSocket { listener, guard })
}

/// The mode of a directory the runtime creates for a socket of mode `socket_mode`: the owner may
/// do everything; the group and others may reach the socket (read and search) only when the
/// socket's mode gives them any access, so 600 gives 700, 660 gives 750 and 666 gives 755.
#[must_use]
pub fn directory_mode(socket_mode: u32) -> u32 {
    let mut mode = 0o700;
    if socket_mode & 0o070 != 0 {
        mode |= 0o050;
    }
    if socket_mode & 0o007 != 0 {
        mode |= 0o005;
    }
    mode
}

fn tempdir_in(parent: &Path) -> io::Result<PathBuf> {
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

/// Binds the public TCP listener of edge mode (`--public-listen ADDR:PORT`; port 0 picks a free
/// one, see [`tokio::net::TcpListener::local_addr`]).
///
/// # Errors
///
/// [`SocketError::Io`] naming the address when it cannot be bound (in use, not local, no
/// permission).
pub fn bind_tcp(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, SocketError> {
    let io = |source| SocketError::Io {
        path: addr.to_string(),
        source,
    };
    let listener = bind_tcp_std(addr).map_err(io)?;
    tokio::net::TcpListener::from_std(listener).map_err(io)
}

/// Binds a non-blocking TCP listener on `addr` outside an async runtime (the metrics listener,
/// bound before anything else starts; hand it to `tokio::net::TcpListener::from_std`).
///
/// # Errors
///
/// The I/O error of `bind` (address in use, not local, no permission).
pub fn bind_tcp_std(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::directory_mode;

    #[test]
    fn a_created_directory_lets_in_whom_the_socket_lets_in() {
        assert_eq!(directory_mode(0o600), 0o700);
        assert_eq!(directory_mode(0o660), 0o750);
        assert_eq!(directory_mode(0o620), 0o750);
        assert_eq!(directory_mode(0o666), 0o755);
        assert_eq!(directory_mode(0o000), 0o700);
    }
}
