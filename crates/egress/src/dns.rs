//! The wire format of the tiny in-sandbox DNS responder (RFC 1035).
//!
//! The responder answers every A query for a valid host name with one fixed IPv4
//! address (the gateway's listener), answers AAAA and every other type with no answers
//! (NOERROR with an empty answer section, i.e. NODATA), and refuses malformed packets.

use std::fmt;
use std::net::Ipv4Addr;

/// Response code: no error.
pub const RCODE_NOERROR: u8 = 0;
/// Response code: format error (the query could not be interpreted).
pub const RCODE_FORMERR: u8 = 1;
/// Response code: server failure.
pub const RCODE_SERVFAIL: u8 = 2;
/// Response code: the name does not exist.
pub const RCODE_NXDOMAIN: u8 = 3;
/// Response code: the server refuses to answer.
pub const RCODE_REFUSED: u8 = 5;

/// Record type A (an IPv4 address).
pub const TYPE_A: u16 = 1;
/// Record type AAAA (an IPv6 address).
pub const TYPE_AAAA: u16 = 28;
/// Query type ANY (all records).
pub const TYPE_ANY: u16 = 255;

/// Class IN (the Internet).
pub const CLASS_IN: u16 = 1;
/// Query class ANY.
pub const CLASS_ANY: u16 = 255;

const HEADER_LEN: usize = 12;
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const OPCODE_MASK: u16 = 0x7800;
const MAX_LABEL_LEN: usize = 63;
const MAX_NAME_LEN: usize = 253;

/// A parsed DNS query: the header id and the single question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The transaction id, echoed in the response.
    pub id: u16,
    /// Whether the client set RD (recursion desired); copied into the response.
    pub recursion_desired: bool,
    /// The queried name: lower case, no trailing dot.
    pub name: String,
    /// The query type (e.g. [`TYPE_A`]).
    pub qtype: u16,
    /// The query class (normally [`CLASS_IN`]).
    pub qclass: u16,
}

/// Why a packet is not a query this responder can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The packet ends before the header or the question does.
    Truncated,
    /// The packet is a response (QR set), not a query.
    NotAQuery,
    /// The opcode is not QUERY, or the question count is not exactly one.
    Unsupported,
    /// The question name is invalid: a label longer than 63 bytes, a name longer than
    /// 253 characters, a compression pointer, an empty (root) name, or a byte that is
    /// not a letter, digit, `-` or `_`.
    BadName,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsError::Truncated => "DNS packet is truncated",
            DnsError::NotAQuery => "DNS packet is not a query",
            DnsError::Unsupported => "DNS query has an unsupported opcode or question count",
            DnsError::BadName => "DNS query name is invalid",
        })
    }
}

impl std::error::Error for DnsError {}

fn read_u16(packet: &[u8], at: usize) -> Option<u16> {
    let bytes = packet.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Parses a query packet: the header and its single question. Anything after the
/// question (for example an EDNS OPT record in the additional section) is ignored.
pub fn parse_query(packet: &[u8]) -> Result<Query, DnsError> {
    if packet.len() < HEADER_LEN {
        return Err(DnsError::Truncated);
    }
    let id = read_u16(packet, 0).ok_or(DnsError::Truncated)?;
    let flags = read_u16(packet, 2).ok_or(DnsError::Truncated)?;
    let qdcount = read_u16(packet, 4).ok_or(DnsError::Truncated)?;
    if flags & FLAG_QR != 0 {
        return Err(DnsError::NotAQuery);
    }
    if flags & OPCODE_MASK != 0 || qdcount != 1 {
        return Err(DnsError::Unsupported);
    }

    let mut pos = HEADER_LEN;
    let mut name = String::new();
    loop {
        let len = usize::from(*packet.get(pos).ok_or(DnsError::Truncated)?);
        pos += 1;
        if len == 0 {
            break;
        }
        // 0xC0 is a compression pointer; 0x40 and 0x80 are obsolete/extended label
        // types. None belongs in a query's question.
        if len > MAX_LABEL_LEN {
            return Err(DnsError::BadName);
        }
        let label = packet.get(pos..pos + len).ok_or(DnsError::Truncated)?;
        pos += len;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(DnsError::BadName);
            }
            name.push(char::from(b.to_ascii_lowercase()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(DnsError::BadName);
        }
    }
    if name.is_empty() {
        return Err(DnsError::BadName);
    }
    let qtype = read_u16(packet, pos).ok_or(DnsError::Truncated)?;
    let qclass = read_u16(packet, pos + 2).ok_or(DnsError::Truncated)?;
    Ok(Query {
        id,
        recursion_desired: flags & FLAG_RD != 0,
        name,
        qtype,
        qclass,
    })
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = label.as_bytes();
        let len = bytes.len().min(MAX_LABEL_LEN);
        // `len` is at most 63, so it fits in a byte.
        out.push(len as u8);
        out.extend_from_slice(&bytes[..len]);
    }
    out.push(0);
}

/// Builds the response to `query`: copies the id and RD, sets QR, AA and RA and the
/// given `rcode`, echoes the question (re-encoded from the lower-case name), and adds
/// one A record (TTL `ttl`, owner name a compression pointer to the question) when
/// `answer` is `Some`, the query type is A or ANY and the class is IN or ANY.
pub fn response(query: &Query, answer: Option<Ipv4Addr>, ttl: u32, rcode: u8) -> Vec<u8> {
    let answer = answer.filter(|_| {
        matches!(query.qtype, TYPE_A | TYPE_ANY) && matches!(query.qclass, CLASS_IN | CLASS_ANY)
    });
    let mut flags = FLAG_QR | FLAG_AA | FLAG_RA | u16::from(rcode & 0x0f);
    if query.recursion_desired {
        flags |= FLAG_RD;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + query.name.len() + 2 + 4 + 16);
    push_u16(&mut out, query.id);
    push_u16(&mut out, flags);
    push_u16(&mut out, 1); // qdcount
    push_u16(&mut out, u16::from(answer.is_some())); // ancount
    push_u16(&mut out, 0); // nscount
    push_u16(&mut out, 0); // arcount
    push_name(&mut out, &query.name);
    push_u16(&mut out, query.qtype);
    push_u16(&mut out, query.qclass);
    if let Some(addr) = answer {
        push_u16(&mut out, 0xc000 | HEADER_LEN as u16); // pointer to the question name
        push_u16(&mut out, TYPE_A);
        push_u16(&mut out, CLASS_IN);
        out.extend_from_slice(&ttl.to_be_bytes());
        push_u16(&mut out, 4);
        out.extend_from_slice(&addr.octets());
    }
    out
}

/// A minimal error response (e.g. [`RCODE_FORMERR`], [`RCODE_SERVFAIL`],
/// [`RCODE_REFUSED`]) to a packet that could not be parsed: echoes the id, opcode and
/// RD, sets QR and RA, and carries no question. `None` when the packet is shorter than
/// a header, or is itself a response (answering responses invites loops).
pub fn error_response(packet: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = packet.get(..HEADER_LEN)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    if flags & FLAG_QR != 0 {
        return None;
    }
    let flags = FLAG_QR | FLAG_RA | (flags & (OPCODE_MASK | FLAG_RD)) | u16::from(rcode & 0x0f);
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&header[..2]);
    push_u16(&mut out, flags);
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a query packet by hand.
    fn query_packet(id: u16, flags: u16, labels: &[&[u8]], qtype: u16, qclass: u16) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for l in labels {
            p.push(l.len() as u8);
            p.extend_from_slice(l);
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&qclass.to_be_bytes());
        p
    }

    fn with_opt(mut p: Vec<u8>) -> Vec<u8> {
        p[11] = 1; // arcount
        // OPT: root name, type 41, udp size 1232, ext rcode/version/flags, rdlen 0.
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        p
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Parsed {
        id: u16,
        flags: u16,
        counts: [u16; 4],
        qname: String,
        qtype: u16,
        qclass: u16,
        answers: Vec<(u16, u16, u16, u32, Vec<u8>)>,
    }

    /// A tiny response parser for tests: one question, answers with pointer names.
    fn parse_response(p: &[u8]) -> Parsed {
        let u16_at = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        let counts = [u16_at(4), u16_at(6), u16_at(8), u16_at(10)];
        let mut pos = 12;
        let mut labels = Vec::new();
        if counts[0] == 1 {
            loop {
                let len = p[pos] as usize;
                pos += 1;
                if len == 0 {
                    break;
                }
                labels.push(String::from_utf8(p[pos..pos + len].to_vec()).unwrap());
                pos += len;
            }
        }
        let (qtype, qclass) = if counts[0] == 1 {
            let t = (u16_at(pos), u16_at(pos + 2));
            pos += 4;
            t
        } else {
            (0, 0)
        };
        let mut answers = Vec::new();
        for _ in 0..counts[1] {
            let name_ptr = u16_at(pos);
            let rtype = u16_at(pos + 2);
            let rclass = u16_at(pos + 4);
            let ttl = u32::from_be_bytes([p[pos + 6], p[pos + 7], p[pos + 8], p[pos + 9]]);
            let rdlen = u16_at(pos + 10) as usize;
            let rdata = p[pos + 12..pos + 12 + rdlen].to_vec();
            pos += 12 + rdlen;
            answers.push((name_ptr, rtype, rclass, ttl, rdata));
        }
        assert_eq!(pos, p.len(), "trailing bytes in response");
        Parsed {
            id: u16_at(0),
            flags: u16_at(2),
            counts,
            qname: labels.join("."),
            qtype,
            qclass,
            answers,
        }
    }

    #[test]
    fn parses_a_query() {
        let p = query_packet(
            0xbeef,
            0x0100,
            &[b"API", b"GitHub", b"com"],
            TYPE_A,
            CLASS_IN,
        );
        let q = parse_query(&p).unwrap();
        assert_eq!(
            q,
            Query {
                id: 0xbeef,
                recursion_desired: true,
                name: "api.github.com".into(),
                qtype: TYPE_A,
                qclass: CLASS_IN,
            }
        );
        let q = parse_query(&with_opt(p)).unwrap();
        assert_eq!(q.name, "api.github.com");
        let p = query_packet(7, 0, &[b"_dmarc", b"my-host", b"x1"], 16, CLASS_IN);
        let q = parse_query(&p).unwrap();
        assert_eq!(q.name, "_dmarc.my-host.x1");
        assert!(!q.recursion_desired);
        assert_eq!(q.qtype, 16);
    }

    #[test]
    fn a_response_round_trips() {
        let p = query_packet(0x1234, 0x0100, &[b"example", b"com"], TYPE_A, CLASS_IN);
        let q = parse_query(&p).unwrap();
        let r = response(&q, Some(Ipv4Addr::LOCALHOST), 5, RCODE_NOERROR);
        let parsed = parse_response(&r);
        assert_eq!(
            parsed,
            Parsed {
                id: 0x1234,
                flags: 0x8000 | 0x0400 | 0x0100 | 0x0080,
                counts: [1, 1, 0, 0],
                qname: "example.com".into(),
                qtype: TYPE_A,
                qclass: CLASS_IN,
                answers: vec![(0xc00c, TYPE_A, CLASS_IN, 5, vec![127, 0, 0, 1])],
            }
        );
        // The question is echoed byte for byte (the query was lower case already).
        assert_eq!(&r[12..r.len() - 16], &p[12..]);
        // The response is not itself accepted as a query.
        assert_eq!(parse_query(&r), Err(DnsError::NotAQuery));
    }

    #[test]
    fn any_gets_an_answer_aaaa_and_others_do_not() {
        let mk = |qtype| {
            let p = query_packet(1, 0, &[b"a", b"b"], qtype, CLASS_IN);
            let q = parse_query(&p).unwrap();
            parse_response(&response(&q, Some(Ipv4Addr::new(127, 0, 0, 1)), 60, 0))
        };
        assert_eq!(mk(TYPE_ANY).answers.len(), 1);
        assert_eq!(mk(TYPE_ANY).qtype, TYPE_ANY);
        let aaaa = mk(TYPE_AAAA);
        assert_eq!(aaaa.counts, [1, 0, 0, 0]);
        assert_eq!(aaaa.flags & 0x000f, 0);
        assert_eq!(aaaa.flags & 0x0100, 0, "RD was not set in the query");
        assert!(mk(15).answers.is_empty());
        // Class CH gets no IN answer.
        let p = query_packet(1, 0, &[b"a"], TYPE_A, 3);
        let q = parse_query(&p).unwrap();
        assert!(
            parse_response(&response(&q, Some(Ipv4Addr::LOCALHOST), 60, 0))
                .answers
                .is_empty()
        );
    }

    #[test]
    fn nxdomain_without_answer() {
        let p = query_packet(9, 0x0100, &[b"nope"], TYPE_A, CLASS_IN);
        let q = parse_query(&p).unwrap();
        let parsed = parse_response(&response(&q, None, 0, RCODE_NXDOMAIN));
        assert_eq!(parsed.flags & 0x000f, u16::from(RCODE_NXDOMAIN));
        assert_eq!(parsed.counts, [1, 0, 0, 0]);
        assert_eq!(parsed.qname, "nope");
    }

    #[test]
    fn malformed_queries() {
        let good = query_packet(1, 0x0100, &[b"example", b"com"], TYPE_A, CLASS_IN);
        assert_eq!(parse_query(&[]), Err(DnsError::Truncated));
        for len in 0..good.len() {
            assert_eq!(
                parse_query(&good[..len]),
                Err(DnsError::Truncated),
                "len {len}"
            );
        }
        // Response bit.
        let mut p = good.clone();
        p[2] |= 0x80;
        assert_eq!(parse_query(&p), Err(DnsError::NotAQuery));
        // Opcode STATUS (2).
        let mut p = good.clone();
        p[2] |= 2 << 3;
        assert_eq!(parse_query(&p), Err(DnsError::Unsupported));
        // qdcount 0 and 2.
        let mut p = good.clone();
        p[5] = 0;
        assert_eq!(parse_query(&p), Err(DnsError::Unsupported));
        let mut p = good.clone();
        p[5] = 2;
        assert_eq!(parse_query(&p), Err(DnsError::Unsupported));
        // Compression pointer in the question.
        let mut p = good[..12].to_vec();
        p.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert_eq!(parse_query(&p), Err(DnsError::BadName));
        // Label too long.
        let long = [b'a'; 64];
        let p = query_packet(1, 0, &[&long, b"com"], TYPE_A, CLASS_IN);
        assert_eq!(parse_query(&p), Err(DnsError::BadName));
        let ok63 = [b'a'; 63];
        let p = query_packet(1, 0, &[&ok63, b"com"], TYPE_A, CLASS_IN);
        assert!(parse_query(&p).is_ok());
        // Name too long: 4 labels of 63 plus dots = 255 > 253.
        let p = query_packet(1, 0, &[&ok63, &ok63, &ok63, &ok63], TYPE_A, CLASS_IN);
        assert_eq!(parse_query(&p), Err(DnsError::BadName));
        // Exactly 253: 3 x 63 + 61 + 3 dots.
        let l61 = [b'b'; 61];
        let p = query_packet(1, 0, &[&ok63, &ok63, &ok63, &l61], TYPE_A, CLASS_IN);
        assert_eq!(parse_query(&p).unwrap().name.len(), 253);
        // Bad bytes.
        for bad in [&b"a b"[..], b"a.b", b"a*", b"\x00", b"\xc3\xa9", b"a/b"] {
            let p = query_packet(1, 0, &[bad, b"com"], TYPE_A, CLASS_IN);
            assert_eq!(parse_query(&p), Err(DnsError::BadName), "{bad:?}");
        }
        // Root name.
        let p = query_packet(1, 0, &[], TYPE_A, CLASS_IN);
        assert_eq!(parse_query(&p), Err(DnsError::BadName));
    }

    #[test]
    fn error_responses() {
        let good = query_packet(0xabcd, 0x0100, &[b"x"], TYPE_A, CLASS_IN);
        let r = error_response(&good, RCODE_FORMERR).unwrap();
        assert_eq!(r, vec![0xab, 0xcd, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        let r = error_response(&good[..12], RCODE_REFUSED).unwrap();
        assert_eq!(parse_response(&r).flags, 0x8000 | 0x0100 | 0x0080 | 5);
        assert_eq!(error_response(&good[..11], RCODE_FORMERR), None);
        let mut resp = good.clone();
        resp[2] |= 0x80;
        assert_eq!(error_response(&resp, RCODE_FORMERR), None);
        // Opcode is echoed.
        let mut p = good.clone();
        p[2] = 2 << 3;
        let r = error_response(&p, RCODE_SERVFAIL).unwrap();
        assert_eq!(r[2], 0x80 | (2 << 3));
        assert_eq!(r[3], 0x80 | 2);
    }

    #[test]
    fn display() {
        assert_eq!(DnsError::BadName.to_string(), "DNS query name is invalid");
    }
}
