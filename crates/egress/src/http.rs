//! The HTTP/1.1 the gateway speaks: message heads read strictly (one parse, bounded
//! size), message framing decided once per message with every ambiguity refused (the
//! request smuggling rules of RFC 9112 section 6.3), and bodies copied without buffering
//! them whole.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest request or response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (size, extensions) and trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Anything the gateway reads and writes: TCP, TLS, test pipes.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn malformed(what: impl Into<String>) -> HttpError {
    HttpError::Malformed(what.into())
}

/// A header as received; names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// A request line and its headers.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

/// A status line and its headers.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

/// How the body of a message ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the connection closes.
    UntilClose,
}

/// Reads bytes up to and including the blank line that ends a head. `Ok(None)` on a
/// clean end of stream before the first byte.
async fn read_head_bytes<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Result<Option<Vec<u8>>, HttpError> {
    let mut head = Vec::with_capacity(512);
    loop {
        let before = head.len();
        let read = (&mut *reader)
            .take((MAX_HEAD_BYTES + 1 - head.len()) as u64)
            .read_until(b'\n', &mut head)
            .await?;
        if read == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(malformed("the stream ended inside a message head"));
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(malformed("message head larger than 64 KiB"));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // Tolerate one empty line before a request (RFC 9112 section 2.2).
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
    }
}

fn collect_headers(parsed: &[httparse::Header<'_>]) -> Result<Vec<Header>, HttpError> {
    parsed
        .iter()
        .map(|h| {
            if h.value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(malformed(format!(
                    "header `{}` holds a control byte",
                    h.name
                )));
            }
            Ok(Header {
                name: h.name.to_ascii_lowercase(),
                value: h.value.to_vec(),
            })
        })
        .collect()
}

/// Reads one request head; `Ok(None)` if the client closed the connection between
/// requests.
pub async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Result<Option<RequestHead>, HttpError> {
    let Some(bytes) = read_head_bytes(reader).await? else {
        return Ok(None);
    };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut storage);
    match request.parse(&bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete request head")),
        Err(e) => return Err(malformed(format!("request head: {e}"))),
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(malformed("incomplete request line"));
    };
    Ok(Some(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        headers: collect_headers(request.headers)?,
    }))
}

/// Reads one response head.
pub async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Result<ResponseHead, HttpError> {
    let bytes = read_head_bytes(reader)
        .await?
        .ok_or_else(|| malformed("the upstream closed the connection before responding"))?;
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    match response.parse(&bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete response head")),
        Err(e) => return Err(malformed(format!("response head: {e}"))),
    }
    let (Some(status), Some(minor_version)) = (response.code, response.version) else {
        return Err(malformed("incomplete status line"));
    };
    Ok(ResponseHead {
        status,
        reason: response.reason.unwrap_or("").to_owned(),
        minor_version,
        headers: collect_headers(response.headers)?,
    })
}

pub fn header<'h>(headers: &'h [Header], name: &str) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name == name)
        .map(|h| h.value.as_slice())
}

fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    header(headers, name).any(|value| {
        value
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The body framing a request declares. Refuses everything RFC 9112 lets a server
/// reject and that a chain of parsers could read two ways: both `Content-Length` and
/// `Transfer-Encoding`, a transfer coding other than exactly `chunked`, several or
/// non-numeric lengths, `Transfer-Encoding` on HTTP/1.0.
pub fn request_framing(head: &RequestHead) -> Result<Framing, HttpError> {
    let te: Vec<&[u8]> = header(&head.headers, "transfer-encoding").collect();
    let cl: Vec<&[u8]> = header(&head.headers, "content-length").collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(malformed("both Content-Length and Transfer-Encoding"));
        }
        if head.minor_version == 0 {
            return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if te.len() != 1 || !te[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(malformed(
                "a Transfer-Encoding other than exactly `chunked`",
            ));
        }
        return Ok(Framing::Chunked);
    }
    match cl.as_slice() {
        [] => Ok(Framing::None),
        [value] => parse_length(value).map(|n| {
            if n == 0 {
                Framing::None
            } else {
                Framing::Length(n)
            }
        }),
        _ => Err(malformed("more than one Content-Length")),
    }
}

fn parse_length(value: &[u8]) -> Result<u64, HttpError> {
    let valid = !value.is_empty() && value.len() <= 18 && value.iter().all(u8::is_ascii_digit);
    if !valid {
        return Err(malformed("Content-Length is not a decimal number"));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("Content-Length is not a decimal number"))
}

/// The body framing of a response to a request with `method`.
pub fn response_framing(method: &str, head: &ResponseHead) -> Result<Framing, HttpError> {
    if method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(Framing::None);
    }
    let te: Vec<&[u8]> = header(&head.headers, "transfer-encoding").collect();
    if !te.is_empty() {
        if header(&head.headers, "content-length").next().is_some() {
            return Err(malformed(
                "response with both Content-Length and Transfer-Encoding",
            ));
        }
        let last = te
            .last()
            .and_then(|v| v.split(|&b| b == b',').next_back())
            .map(<[u8]>::trim_ascii)
            .unwrap_or_default();
        return Ok(if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let lengths: Vec<&[u8]> = header(&head.headers, "content-length").collect();
    match lengths.as_slice() {
        [] => Ok(Framing::UntilClose),
        [value] => parse_length(value).map(Framing::Length),
        _ => Err(malformed("response with more than one Content-Length")),
    }
}

/// Whether the sender asked to close the connection after this message.
pub fn wants_close(minor_version: u8, headers: &[Header]) -> bool {
    if minor_version == 0 {
        !has_token(headers, "connection", "keep-alive")
    } else {
        has_token(headers, "connection", "close")
    }
}

/// Headers that describe one hop, never forwarded: the fixed list plus any header the
/// `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut Vec<Header>) {
    const FIXED: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "upgrade",
    ];
    let named: Vec<String> = header(headers, "connection")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive")
        // A Connection header cannot strip the framing headers.
        .filter(|t| t != "content-length" && t != "transfer-encoding" && t != "host")
        .collect();
    headers.retain(|h| !FIXED.contains(&h.name.as_str()) && !named.contains(&h.name));
}

pub fn encode_request(method: &str, target: &str, headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    encode_headers(&mut out, headers);
    out
}

pub fn encode_response(status: u16, reason: &str, headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("HTTP/1.1 {status} ").as_bytes());
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    encode_headers(&mut out, headers);
    out
}

fn encode_headers(out: &mut Vec<u8>, headers: &[Header]) {
    for h in headers {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `head` and then the body framed by `framing` from `reader` to `writer`.
/// Returns the body bytes copied. A body already in `reader`'s buffer goes out in the
/// same write as the head.
pub async fn send_message<R, W>(
    head: Vec<u8>,
    framing: Framing,
    reader: &mut BufReader<R>,
    writer: &mut W,
) -> Result<u64, HttpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head = head;
    if let Framing::Length(n) = framing
        && reader.buffer().len() as u64 >= n
    {
        let n = n as usize;
        head.extend_from_slice(&reader.buffer()[..n]);
        reader.consume(n);
        writer.write_all(&head).await?;
        writer.flush().await?;
        return Ok(n as u64);
    }
    writer.write_all(&head).await?;
    let copied = copy_body(framing, reader, writer).await?;
    writer.flush().await?;
    Ok(copied)
}

async fn copy_body<R, W>(
    framing: Framing,
    reader: &mut BufReader<R>,
    writer: &mut W,
) -> Result<u64, HttpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match framing {
        Framing::None => Ok(0),
        Framing::Length(n) => {
            let copied = tokio::io::copy_buf(&mut (&mut *reader).take(n), writer).await?;
            if copied != n {
                return Err(HttpError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body ended before its Content-Length",
                )));
            }
            Ok(copied)
        }
        Framing::UntilClose => Ok(tokio::io::copy_buf(reader, writer).await?),
        Framing::Chunked => copy_chunked(reader, writer).await,
    }
}

/// Copies a chunked body as it is (sizes, data, trailers), checking every size line.
async fn copy_chunked<R, W>(reader: &mut BufReader<R>, writer: &mut W) -> Result<u64, HttpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        read_line(reader, &mut line).await?;
        let size_text = line
            .split(|&b| b == b';')
            .next()
            .map(<[u8]>::trim_ascii)
            .unwrap_or_default();
        let valid = !size_text.is_empty()
            && size_text.len() <= 15
            && size_text.iter().all(u8::is_ascii_hexdigit);
        if !valid {
            return Err(malformed("bad chunk size line"));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| malformed("bad chunk size"))?;
        writer.write_all(&line).await?;
        total += line.len() as u64;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                line.clear();
                read_line(reader, &mut line).await?;
                writer.write_all(&line).await?;
                total += line.len() as u64;
                if line == b"\r\n" || line == b"\n" {
                    return Ok(total);
                }
            }
        }
        let copied = tokio::io::copy_buf(&mut (&mut *reader).take(size), writer).await?;
        if copied != size {
            return Err(malformed("the body ended inside a chunk"));
        }
        total += size;
        line.clear();
        read_line(reader, &mut line).await?;
        if line != b"\r\n" && line != b"\n" {
            return Err(malformed("chunk data not followed by a line break"));
        }
        writer.write_all(&line).await?;
        total += line.len() as u64;
    }
}

async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> Result<(), HttpError> {
    let read = (&mut *reader)
        .take(MAX_CHUNK_LINE as u64)
        .read_until(b'\n', line)
        .await?;
    if read == 0 || !line.ends_with(b"\n") {
        return Err(malformed(
            "the body ended inside a chunk line, or the line is too long",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(text: &str) -> Result<Option<RequestHead>, HttpError> {
        let mut reader = BufReader::new(text.as_bytes());
        read_request(&mut reader).await
    }

    #[tokio::test]
    async fn refuses_ambiguous_framing() {
        let cases = [
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST http://a/ HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for case in cases {
            let head = request(case).await.unwrap().unwrap();
            assert!(request_framing(&head).is_err(), "{case}");
        }
        // Header syntax the parser itself refuses: whitespace before the colon, folding.
        for case in [
            "GET http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        ] {
            assert!(request(case).await.is_err(), "{case}");
        }
        let ok = request("POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(request_framing(&ok).unwrap(), Framing::Length(12));
    }

    #[tokio::test]
    async fn copies_chunked_bodies_exactly() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut reader = BufReader::new(&body[..]);
        let mut out = Vec::new();
        let n = send_message(Vec::new(), Framing::Chunked, &mut reader, &mut out)
            .await
            .unwrap();
        assert_eq!(&out[..], &body[..body.len() - 4]);
        assert_eq!(n as usize, body.len() - 4);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"NEXT");

        for bad in [&b"zz\r\n"[..], b"4\r\nwikiX\r\n", b"4\r\nwi"] {
            let mut reader = BufReader::new(bad);
            assert!(
                send_message(Vec::new(), Framing::Chunked, &mut reader, &mut Vec::new())
                    .await
                    .is_err()
            );
        }
    }

    #[test]
    fn strips_hop_by_hop_and_named_headers() {
        let mut headers = vec![
            Header {
                name: "connection".into(),
                value: b"close, x-secret, content-length".to_vec(),
            },
            Header {
                name: "x-secret".into(),
                value: b"1".to_vec(),
            },
            Header {
                name: "proxy-authorization".into(),
                value: b"Basic x".to_vec(),
            },
            Header {
                name: "content-length".into(),
                value: b"0".to_vec(),
            },
            Header {
                name: "accept".into(),
                value: b"*/*".to_vec(),
            },
        ];
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["content-length", "accept"]);
    }
}
