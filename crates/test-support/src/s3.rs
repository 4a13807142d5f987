//! A local S3-compatible server for blob store tests: `moto_server` (from
//! `pip install 'moto[server]'`, which `.ci/run` installs) on a free loopback port.
//! Tests that need it fail, never skip, when it is missing.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A running `moto_server` with one bucket, killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: std::process::Child,
    port: u16,
}

impl S3Server {
    /// Starts the server and creates `bucket`. Panics, saying what to install, if
    /// `moto_server` cannot be started, or if it does not answer within 30 s.
    pub fn start(bucket: &str) -> S3Server {
        let port = match std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
        {
            Ok(address) => address.port(),
            Err(e) => panic!("no free loopback port: {e}"),
        };
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "moto_server could not be started ({e}); install it with `pip install 'moto[server]'`"
                )
            });
        let server = S3Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(answer) = server.request("PUT", &format!("/{bucket}")) {
                assert!(
                    answer.starts_with("HTTP/1.1 200"),
                    "creating the bucket: {answer}"
                );
                return server;
            }
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain, unsigned HTTP/1.1 request (moto accepts those); the whole answer, or
    /// `None` if the connection failed.
    pub fn request(&self, method: &str, path: &str) -> Option<String> {
        let port = self.port;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
