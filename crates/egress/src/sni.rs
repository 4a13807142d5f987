//! The server name (SNI) from a TLS ClientHello: the first bytes a client sends on a
//! tunnel, read without terminating TLS.

use std::fmt;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// The largest plaintext TLS record payload (2^14 bytes).
const MAX_RECORD_LEN: usize = 16 * 1024;
/// The largest ClientHello accepted (16 KiB of handshake body).
const MAX_HANDSHAKE_LEN: usize = 16 * 1024;
const MAX_HOST_NAME_LEN: usize = 253;

/// Why no server name could be read from the bytes a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHelloError {
    /// The bytes end before the ClientHello does: read more and retry.
    Incomplete,
    /// Not TLS: the first byte is not a handshake record (22), or the version major is not 3.
    NotTls,
    /// The records or the ClientHello are malformed.
    Malformed,
    /// The handshake message is longer than 16 KiB.
    TooLarge,
}

impl fmt::Display for ClientHelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientHelloError::Incomplete => "TLS ClientHello is incomplete",
            ClientHelloError::NotTls => "not a TLS handshake",
            ClientHelloError::Malformed => "malformed TLS ClientHello",
            ClientHelloError::TooLarge => "TLS ClientHello is too large",
        })
    }
}

impl std::error::Error for ClientHelloError {}

/// Parses the first TLS handshake record(s) in `buf` (the bytes a client sent first on a
/// tunnel) and returns the SNI host_name, lower-cased and without a trailing dot, or
/// `Ok(None)` when the ClientHello has no server_name extension.
///
/// The ClientHello may span several TLS records: handshake fragments are reassembled
/// across consecutive handshake (type 22) records. Returns
/// [`ClientHelloError::Incomplete`] when `buf` ends before the ClientHello does. Bytes
/// after the ClientHello are ignored. An SNI list with more than one host_name, or a
/// host name that is empty or contains bytes outside visible ASCII (`0x21..=0x7e`), is
/// [`ClientHelloError::Malformed`].
pub fn server_name(buf: &[u8]) -> Result<Option<String>, ClientHelloError> {
    let hello = reassemble_client_hello(buf)?;
    parse_client_hello(&hello)
}

/// Collects the ClientHello body (without its 4-byte handshake header) from the
/// handshake records at the start of `buf`.
fn reassemble_client_hello(buf: &[u8]) -> Result<Vec<u8>, ClientHelloError> {
    let mut handshake: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        // Record header, checked byte by byte so that a short prefix of non-TLS input
        // is rejected as early as possible.
        let rest = &buf[pos..];
        match rest.first() {
            None => return Err(ClientHelloError::Incomplete),
            Some(&CONTENT_HANDSHAKE) => {}
            Some(_) if pos == 0 => return Err(ClientHelloError::NotTls),
            Some(_) => return Err(ClientHelloError::Malformed),
        }
        match rest.get(1) {
            None => return Err(ClientHelloError::Incomplete),
            Some(3) => {}
            Some(_) if pos == 0 => return Err(ClientHelloError::NotTls),
            Some(_) => return Err(ClientHelloError::Malformed),
        }
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            return Err(ClientHelloError::Incomplete);
        };
        let record_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if record_len == 0 || record_len > MAX_RECORD_LEN {
            return Err(ClientHelloError::Malformed);
        }
        let available = &rest[RECORD_HEADER_LEN..];
        let fragment = &available[..record_len.min(available.len())];
        handshake.extend_from_slice(fragment);

        if handshake.len() >= HANDSHAKE_HEADER_LEN {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(ClientHelloError::Malformed);
            }
            let body_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if body_len > MAX_HANDSHAKE_LEN {
                return Err(ClientHelloError::TooLarge);
            }
            let total = HANDSHAKE_HEADER_LEN + body_len;
            if handshake.len() >= total {
                handshake.truncate(total);
                handshake.drain(..HANDSHAKE_HEADER_LEN);
                return Ok(handshake);
            }
        } else if let Some(&msg_type) = handshake.first()
            && msg_type != HANDSHAKE_CLIENT_HELLO
        {
            return Err(ClientHelloError::Malformed);
        }

        if fragment.len() < record_len {
            return Err(ClientHelloError::Incomplete);
        }
        pos += RECORD_HEADER_LEN + record_len;
    }
}

/// A bounds-checked reader over a byte slice; every read failure is `Malformed`.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ClientHelloError> {
        if n > self.bytes.len() {
            return Err(ClientHelloError::Malformed);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ClientHelloError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ClientHelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Result<&'a [u8], ClientHelloError> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Result<&'a [u8], ClientHelloError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

fn parse_client_hello(body: &[u8]) -> Result<Option<String>, ClientHelloError> {
    let mut r = Reader::new(body);
    let _legacy_version = r.take(2)?;
    let _random = r.take(32)?;
    let session_id = r.vec8()?;
    if session_id.len() > 32 {
        return Err(ClientHelloError::Malformed);
    }
    let cipher_suites = r.vec16()?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return Err(ClientHelloError::Malformed);
    }
    let compression = r.vec8()?;
    if compression.is_empty() {
        return Err(ClientHelloError::Malformed);
    }
    if r.is_empty() {
        // A ClientHello without extensions.
        return Ok(None);
    }
    let extensions = r.vec16()?;
    if !r.is_empty() {
        return Err(ClientHelloError::Malformed);
    }

    let mut exts = Reader::new(extensions);
    let mut name = None;
    let mut seen_server_name = false;
    while !exts.is_empty() {
        let ext_type = exts.u16()?;
        let data = exts.vec16()?;
        if ext_type == EXT_SERVER_NAME {
            if seen_server_name {
                return Err(ClientHelloError::Malformed);
            }
            seen_server_name = true;
            name = parse_server_name_extension(data)?;
        }
    }
    Ok(name)
}

fn parse_server_name_extension(data: &[u8]) -> Result<Option<String>, ClientHelloError> {
    let mut r = Reader::new(data);
    let list = r.vec16()?;
    if !r.is_empty() || list.is_empty() {
        return Err(ClientHelloError::Malformed);
    }
    let mut entries = Reader::new(list);
    let mut host = None;
    while !entries.is_empty() {
        let name_type = entries.u8()?;
        let name = entries.vec16()?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err(ClientHelloError::Malformed);
        }
        host = Some(normalise_host_name(name)?);
    }
    Ok(host)
}

fn normalise_host_name(name: &[u8]) -> Result<String, ClientHelloError> {
    if name.iter().any(|b| !(0x21..=0x7e).contains(b)) {
        return Err(ClientHelloError::Malformed);
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST_NAME_LEN {
        return Err(ClientHelloError::Malformed);
    }
    Ok(name
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16be(v: usize) -> [u8; 2] {
        (v as u16).to_be_bytes()
    }

    fn extension(ext_type: u16, data: &[u8]) -> Vec<u8> {
        let mut e = ext_type.to_be_bytes().to_vec();
        e.extend_from_slice(&u16be(data.len()));
        e.extend_from_slice(data);
        e
    }

    /// A server_name extension with the given (name_type, name) entries.
    fn sni_extension(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (t, n) in entries {
            list.push(*t);
            list.extend_from_slice(&u16be(n.len()));
            list.extend_from_slice(n);
        }
        let mut data = u16be(list.len()).to_vec();
        data.extend_from_slice(&list);
        extension(0, &data)
    }

    /// A ClientHello handshake message (header included) with the given extensions;
    /// `None` omits the extensions block entirely.
    fn client_hello(extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(32);
        body.extend_from_slice(&[0x11; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        if let Some(exts) = extensions {
            let all: Vec<u8> = exts.concat();
            body.extend_from_slice(&u16be(all.len()));
            body.extend_from_slice(&all);
        }
        let mut msg = vec![
            1,
            (body.len() >> 16) as u8,
            (body.len() >> 8) as u8,
            body.len() as u8,
        ];
        msg.extend_from_slice(&body);
        msg
    }

    /// Wraps handshake bytes in TLS records, splitting at the given offsets.
    fn records(handshake: &[u8], splits: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&handshake.len())) {
            let chunk = &handshake[start..end];
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&u16be(chunk.len()));
            out.extend_from_slice(chunk);
            start = end;
        }
        out
    }

    fn typical(name: &[u8]) -> Vec<u8> {
        client_hello(Some(&[
            extension(0xff01, &[0]),
            sni_extension(&[(0, name)]),
            extension(10, &[0, 4, 0, 0x1d, 0, 0x17]),
            extension(16, &[0, 3, 2, b'h', b'2']),
        ]))
    }

    #[test]
    fn reads_the_server_name() {
        let buf = records(&typical(b"API.Example.COM."), &[]);
        assert_eq!(server_name(&buf), Ok(Some("api.example.com".to_string())));
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let mut buf = records(&typical(b"example.com"), &[]);
        buf.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(server_name(&buf), Ok(Some("example.com".to_string())));
    }

    #[test]
    fn split_across_records() {
        let hs = typical(b"split.example");
        for splits in [
            vec![2],
            vec![4],
            vec![40],
            vec![hs.len() - 1],
            vec![1, 3, 50, 90],
        ] {
            let buf = records(&hs, &splits);
            assert_eq!(
                server_name(&buf),
                Ok(Some("split.example".to_string())),
                "splits {splits:?}"
            );
        }
        // One record per byte.
        let every: Vec<usize> = (1..hs.len()).collect();
        assert_eq!(
            server_name(&records(&hs, &every)),
            Ok(Some("split.example".to_string()))
        );
    }

    #[test]
    fn truncated_is_incomplete() {
        for splits in [vec![], vec![30], vec![1, 2, 3]] {
            let buf = records(&typical(b"example.com"), &splits);
            for len in 0..buf.len() {
                assert_eq!(
                    server_name(&buf[..len]),
                    Err(ClientHelloError::Incomplete),
                    "len {len} splits {splits:?}"
                );
            }
            assert!(server_name(&buf).is_ok());
        }
    }

    #[test]
    fn without_sni() {
        let buf = records(&client_hello(Some(&[extension(10, &[0, 2, 0, 0x1d])])), &[]);
        assert_eq!(server_name(&buf), Ok(None));
        let buf = records(&client_hello(Some(&[])), &[]);
        assert_eq!(server_name(&buf), Ok(None));
        let buf = records(&client_hello(None), &[]);
        assert_eq!(server_name(&buf), Ok(None));
        // Only a non-host_name entry.
        let buf = records(&client_hello(Some(&[sni_extension(&[(1, b"x")])])), &[]);
        assert_eq!(server_name(&buf), Ok(None));
    }

    #[test]
    fn not_tls() {
        assert_eq!(
            server_name(b"GET / HTTP/1.1\r\n\r\n"),
            Err(ClientHelloError::NotTls)
        );
        assert_eq!(server_name(b"G"), Err(ClientHelloError::NotTls));
        assert_eq!(
            server_name(&[22, 2, 0, 0, 1]),
            Err(ClientHelloError::NotTls)
        );
        assert_eq!(server_name(&[22, 2]), Err(ClientHelloError::NotTls));
        assert_eq!(
            server_name(&[0x80, 0x2e, 1, 3, 1]),
            Err(ClientHelloError::NotTls)
        );
        assert_eq!(server_name(&[22]), Err(ClientHelloError::Incomplete));
        assert_eq!(server_name(&[]), Err(ClientHelloError::Incomplete));
    }

    #[test]
    fn too_large() {
        let buf = [22, 3, 1, 0, 4, 1, 0, 0x40, 0x01];
        assert_eq!(server_name(&buf), Err(ClientHelloError::TooLarge));
        let buf = [22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff];
        assert_eq!(server_name(&buf), Err(ClientHelloError::TooLarge));
        // Exactly 16 KiB is allowed (and incomplete here).
        let buf = [22, 3, 1, 0, 4, 1, 0, 0x40, 0x00];
        assert_eq!(server_name(&buf), Err(ClientHelloError::Incomplete));
    }

    #[test]
    fn malformed() {
        let bad = |hs: Vec<u8>| server_name(&records(&hs, &[]));
        // Two host_name entries.
        assert_eq!(
            bad(client_hello(Some(&[sni_extension(&[
                (0, b"a.com"),
                (0, b"b.com")
            ])]))),
            Err(ClientHelloError::Malformed)
        );
        // Two server_name extensions.
        assert_eq!(
            bad(client_hello(Some(&[
                sni_extension(&[(0, b"a.com")]),
                sni_extension(&[(0, b"a.com")]),
            ]))),
            Err(ClientHelloError::Malformed)
        );
        // Bad bytes, empty names.
        for name in [
            &b"a b.com"[..],
            b"a\x00b",
            b"\x7f",
            b"caf\xc3\xa9.com",
            b"",
            b".",
        ] {
            assert_eq!(
                bad(typical(name)),
                Err(ClientHelloError::Malformed),
                "{name:?}"
            );
        }
        // Empty server_name list.
        assert_eq!(
            bad(client_hello(Some(&[extension(0, &[0, 0])]))),
            Err(ClientHelloError::Malformed)
        );
        // Extension length runs past the block.
        let mut hs = typical(b"example.com");
        let n = hs.len();
        hs[n - 7] = 0xff;
        assert_eq!(bad(hs), Err(ClientHelloError::Malformed));
        // Not a ClientHello (ServerHello).
        let mut hs = typical(b"example.com");
        hs[0] = 2;
        assert_eq!(bad(hs.clone()), Err(ClientHelloError::Malformed));
        assert_eq!(
            server_name(&records(&hs, &[])[..6]),
            Err(ClientHelloError::Malformed)
        );
        // A non-handshake record in the middle.
        let hs = typical(b"example.com");
        let mut buf = records(&hs, &[10]);
        buf[5 + 10] = 21;
        assert_eq!(server_name(&buf), Err(ClientHelloError::Malformed));
        // Zero-length record.
        assert_eq!(
            server_name(&[22, 3, 1, 0, 0]),
            Err(ClientHelloError::Malformed)
        );
        // Handshake body shorter than its fixed fields.
        assert_eq!(
            server_name(&records(&[1, 0, 0, 2, 3, 3], &[])),
            Err(ClientHelloError::Malformed)
        );
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 300) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards plausible headers so the parser gets past the first bytes.
            if rng.next().is_multiple_of(2) && buf.len() >= 6 {
                buf[0] = 22;
                buf[1] = 3;
                buf[5] = 1;
            }
            let _ = server_name(&buf);
        }
        // Mutations of a valid ClientHello.
        let valid = records(&typical(b"fuzz.example.com"), &[20, 60]);
        for _ in 0..20_000 {
            let mut buf = valid.clone();
            let flips = 1 + rng.next() % 4;
            for _ in 0..flips {
                let i = (rng.next() as usize) % buf.len();
                buf[i] = rng.next() as u8;
            }
            let cut = (rng.next() as usize) % (buf.len() + 1);
            let _ = server_name(&buf[..cut]);
            let _ = server_name(&buf);
        }
    }
}
