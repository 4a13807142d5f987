//! Turns Nagle's algorithm off on the pool's connections.
//!
//! sqlx 0.9.0 connects without `TCP_NODELAY` (sqlx issue #4335, fixed upstream after
//! that release). A query whose message leaves the client in two writes (anything
//! over one 16 KiB TLS record, or over one segment without TLS) then waits for the
//! server's delayed ACK before its tail is sent: about 40 ms a statement on Linux.
//! Batched inserts hit it every time: evidence appends over TLS on loopback ran at
//! 690 entries/s with 92 ms a batch.
//!
//! sqlx gives no access to its socket, so after each connect this finds the process's
//! TCP sockets whose peer port is the server's and sets the option on them. Setting it
//! twice, or on a second pool's connection to the same port, is harmless. Remove this
//! module once the workspace is on a sqlx release that sets the option itself.

use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use socket2::{SockRef, Type};

/// Sets `TCP_NODELAY` on every open TCP socket of this process connected to `port`.
/// Returns how many sockets it set (for tests).
pub(crate) fn set_on_sockets_to(port: u16) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str().as_bytes().starts_with(b"socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` was open a moment ago and the borrow never closes it. Another
        // thread may close it (and the number be reused) before the calls below; they
        // then fail with EBADF or ENOTSOCK, or act on another socket, where only a TCP
        // stream to `port` (another connection to the same server) is changed, and
        // turning Nagle off there is what this function is for. No memory is involved.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = SockRef::from(&borrowed);
        let to_server = socket
            .peer_addr()
            .ok()
            .and_then(|peer| peer.as_socket())
            .is_some_and(|peer| peer.port() == port);
        if to_server
            && socket.r#type().is_ok_and(|kind| kind == Type::STREAM)
            && socket.set_tcp_nodelay(true).is_ok()
        {
            set += 1;
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_option_on_streams_to_the_port_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let other_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpStream::connect(other_listener.local_addr().unwrap()).unwrap();
        assert!(!client.nodelay().unwrap());
        assert!(set_on_sockets_to(port) >= 1);
        assert!(client.nodelay().unwrap());
        // The accepted end's peer is the client's ephemeral port, not `port`.
        assert!(!accepted.nodelay().unwrap());
        assert!(!other.nodelay().unwrap());
    }
}
