//! Blind tunnels without copying through user space: bytes move socket -> pipe ->
//! socket with splice(2), both directions at once, each ending with a half-close.

#![allow(
    unsafe_code,
    reason = "splice(2) and pipe2(2) have no safe wrapper here; each call says why it is sound"
)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Largest pipe the tunnel asks for; the kernel may give less.
const PIPE_BYTES: i32 = 1 << 20;

/// Moves bytes both ways until both directions ended. Returns (client to upstream,
/// upstream to client) byte counts.
pub async fn tunnel(client: &TcpStream, upstream: &TcpStream) -> io::Result<(u64, u64)> {
    let (up, down) = tokio::join!(one_way(client, upstream), one_way(upstream, client));
    Ok((up?, down?))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ takes an int; failure only leaves the default size.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
    Ok((read, write))
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (their owners
    // outlive it) and no offsets are passed.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One direction: fills the pipe from `from` while it has room and drains it into `to`
/// while `to` takes bytes, whichever is ready first, so neither side waits for the
/// other's whole chunk.
async fn one_way(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let (pipe_read, pipe_write) = pipe()?;
    // SAFETY: F_GETPIPE_SZ only reads the pipe's capacity.
    let capacity = match unsafe { libc::fcntl(pipe_write.as_raw_fd(), libc::F_GETPIPE_SZ) } {
        n if n > 0 => usize::try_from(n).unwrap_or(1 << 16),
        _ => 1 << 16,
    };
    let mut in_pipe = 0usize;
    let mut total = 0u64;
    let mut ended = false;
    loop {
        if ended && in_pipe == 0 {
            // The sender finished and everything went on: pass the end along and keep
            // the other direction open.
            // SAFETY: shutdown on an open socket descriptor.
            unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
            return Ok(total);
        }
        let can_fill = !ended && in_pipe < capacity;
        tokio::select! {
            ready = from.readable(), if can_fill => {
                ready?;
                match from.try_io(Interest::READABLE, || {
                    splice(from.as_raw_fd(), pipe_write.as_raw_fd(), capacity - in_pipe)
                }) {
                    Ok(0) => ended = true,
                    Ok(n) => in_pipe += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            ready = to.writable(), if in_pipe > 0 => {
                ready?;
                match to.try_io(Interest::WRITABLE, || {
                    splice(pipe_read.as_raw_fd(), to.as_raw_fd(), in_pipe)
                }) {
                    Ok(n) => {
                        in_pipe -= n;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
