//! Address classification: is a destination address public, and which kind of
//! non-public address is it? Also CIDR networks and permissive IP-literal parsing,
//! so that numeric hosts such as `127.1` or `0x7f000001` are recognised as addresses
//! instead of being treated as host names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The kind of an IP address, as far as egress is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrClass {
    /// A globally routable address.
    Public,
    /// Private-use space: 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10.
    Private,
    /// Loopback: 127/8, ::1.
    Loopback,
    /// Link-local: 169.254/16, fe80::/10.
    LinkLocal,
    /// Carrier-grade NAT shared space: 100.64/10.
    SharedCgnat,
    /// Multicast: 224/4, ff00::/8.
    Multicast,
    /// Unspecified / "this network": 0/8, ::.
    Unspecified,
    /// The limited broadcast address 255.255.255.255.
    Broadcast,
    /// Documentation ranges: 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// Reserved or special-purpose space not covered by another class.
    Reserved,
    /// A cloud instance-metadata endpoint (169.254.169.254, 169.254.170.2,
    /// 100.100.100.200, fd00:ec2::254).
    CloudMetadata,
    /// An IPv6 address embedding an IPv4 address (reporting only; `classify` never returns it).
    Ipv4Embedded,
}

impl AddrClass {
    /// True only for [`AddrClass::Public`].
    pub fn is_public(self) -> bool {
        self == AddrClass::Public
    }

    /// The snake_case name of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Private => "private",
            AddrClass::Loopback => "loopback",
            AddrClass::LinkLocal => "link_local",
            AddrClass::SharedCgnat => "shared_cgnat",
            AddrClass::Multicast => "multicast",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Documentation => "documentation",
            AddrClass::Reserved => "reserved",
            AddrClass::CloudMetadata => "cloud_metadata",
            AddrClass::Ipv4Embedded => "ipv4_embedded",
        }
    }
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies an address.
///
/// IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated
/// `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and
/// `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32` (client address = last 32 bits
/// XOR `0xffffffff`)) are classified by the embedded IPv4 address when that is not
/// public. Unique-local `fc00::/7`, site-local `fec0::/10`, link-local `fe80::/10`,
/// multicast `ff00::/8`, loopback `::1`, unspecified `::`, documentation `2001:db8::/32`
/// and `3fff::/20`, discard `100::/64`, and anything outside global unicast `2000::/3`
/// (other than IPv4-mapped/translated and NAT64 addresses of public IPv4 addresses) are
/// non-public.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let o = ip.octets();
    let in_net = |net: [u8; 4], prefix: u32| -> bool {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        (u32::from(ip) & mask) == (u32::from_be_bytes(net) & mask)
    };
    if o == [169, 254, 169, 254] || o == [169, 254, 170, 2] || o == [100, 100, 100, 200] {
        return AddrClass::CloudMetadata;
    }
    if o == [255, 255, 255, 255] {
        return AddrClass::Broadcast;
    }
    if o[0] == 0 {
        AddrClass::Unspecified
    } else if o[0] == 10 || in_net([172, 16, 0, 0], 12) || in_net([192, 168, 0, 0], 16) {
        AddrClass::Private
    } else if o[0] == 127 {
        AddrClass::Loopback
    } else if in_net([169, 254, 0, 0], 16) {
        AddrClass::LinkLocal
    } else if in_net([100, 64, 0, 0], 10) {
        AddrClass::SharedCgnat
    } else if in_net([224, 0, 0, 0], 4) {
        AddrClass::Multicast
    } else if in_net([240, 0, 0, 0], 4) {
        AddrClass::Reserved
    } else if in_net([192, 0, 2, 0], 24)
        || in_net([198, 51, 100, 0], 24)
        || in_net([203, 0, 113, 0], 24)
    {
        AddrClass::Documentation
    } else if in_net([192, 0, 0, 0], 24) || in_net([198, 18, 0, 0], 15) {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

fn v4_from(b: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(b)
}

/// The IPv4 addresses an IPv6 address may embed, and whether the form as a whole is
/// one whose public embedded address makes the IPv6 address public too.
fn embedded_ipv4(ip: Ipv6Addr) -> (Vec<Ipv4Addr>, bool) {
    let s = ip.segments();
    let o = ip.octets();
    let last = v4_from([o[12], o[13], o[14], o[15]]);
    if s[..5] == [0; 5] && s[5] == 0xffff {
        // IPv4-mapped.
        return (vec![last], true);
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        // IPv4-translated (SIIT).
        return (vec![last], true);
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated): never public itself.
        return (vec![last], false);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64 well-known prefix.
        return (vec![last], true);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        // NAT64 local-use prefix: the network may be a /96, /64, /56 or /48, so the
        // IPv4 address may sit at any of those RFC 6052 positions. Check every layout
        // whose reserved octet (bits 64..72) and suffix are zero, longest prefix first,
        // and the /96 position unless it holds 0.0.0.0 while a shorter layout fits.
        let mut candidates = Vec::with_capacity(4);
        let mut shorter_fits = false;
        if o[8] == 0 {
            if o[13..] == [0; 3] {
                candidates.push(v4_from([o[9], o[10], o[11], o[12]]));
                shorter_fits = true;
            }
            if o[12..] == [0; 4] {
                candidates.push(v4_from([o[7], o[9], o[10], o[11]]));
            }
            if o[11..] == [0; 5] {
                candidates.push(v4_from([o[6], o[7], o[9], o[10]]));
            }
        }
        if !(shorter_fits && last.is_unspecified()) {
            candidates.insert(0, last);
        }
        return (candidates, true);
    }
    if s[0] == 0x2002 {
        // 6to4.
        return (vec![v4_from([o[2], o[3], o[4], o[5]])], true);
    }
    if s[0] == 0x2001 && s[1] == 0 {
        // Teredo: the client address is obfuscated by inverting every bit.
        let client = v4_from([!o[12], !o[13], !o[14], !o[15]]);
        return (vec![client], true);
    }
    (Vec::new(), true)
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    let s = ip.segments();
    if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return AddrClass::CloudMetadata;
    }
    let (embedded, public_if_embedded_public) = embedded_ipv4(ip);
    for v4 in &embedded {
        let class = classify_v4(*v4);
        if !class.is_public() {
            return class;
        }
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        AddrClass::Private
    } else if (s[0] & 0xffc0) == 0xfe80 {
        AddrClass::LinkLocal
    } else if (s[0] & 0xffc0) == 0xfec0 {
        AddrClass::Private
    } else if (s[0] & 0xff00) == 0xff00 {
        AddrClass::Multicast
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && (s[1] & 0xf000) == 0) {
        AddrClass::Documentation
    } else if s[..4] == [0x0100, 0, 0, 0] {
        AddrClass::Reserved
    } else if !embedded.is_empty() {
        if public_if_embedded_public {
            AddrClass::Public
        } else {
            AddrClass::Reserved
        }
    } else if (s[0] & 0xe000) != 0x2000 {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// An IPv4 or IPv6 network in CIDR form, e.g. `127.0.0.2/32`, `10.0.0.0/8`, `::1/128`.
///
/// Host bits given when parsing are masked off; a missing prefix means a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

fn mask_v4(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Ipv4Addr::from(u32::from(addr) & mask)
}

fn mask_v6(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    Ipv6Addr::from(u128::from(addr) & mask)
}

impl IpNet {
    /// A network from an address and prefix length; host bits are masked off.
    /// Errors when the prefix is longer than the address (32 or 128 bits).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        match addr {
            IpAddr::V4(v4) => {
                if prefix > 32 {
                    return Err(format!("prefix /{prefix} is longer than 32 bits"));
                }
                Ok(IpNet {
                    addr: IpAddr::V4(mask_v4(v4, prefix)),
                    prefix,
                })
            }
            IpAddr::V6(v6) => {
                if prefix > 128 {
                    return Err(format!("prefix /{prefix} is longer than 128 bits"));
                }
                Ok(IpNet {
                    addr: IpAddr::V6(mask_v6(v6, prefix)),
                    prefix,
                })
            }
        }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `ip` is inside this network. An IPv4 network also contains the
    /// IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) of its addresses, and an IPv6 network
    /// contains an IPv4 address whose mapped form it contains.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, self.prefix) == net,
            (IpAddr::V4(net), IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => mask_v4(v4, self.prefix) == net,
                None => false,
            },
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, self.prefix) == net,
            (IpAddr::V6(net), IpAddr::V4(ip)) => mask_v6(ip.to_ipv6_mapped(), self.prefix) == net,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_part
            .parse()
            .map_err(|_| format!("`{s}` is not a network: `{addr_part}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_part {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "`{s}` is not a network: prefix `{p}` is not a number"
                    ));
                }
                p.parse::<u8>()
                    .map_err(|_| format!("`{s}` is not a network: prefix `{p}` is too long"))?
            }
        };
        if prefix > max {
            return Err(format!(
                "`{s}` is not a network: prefix /{prefix} is longer than {max} bits"
            ));
        }
        IpNet::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses one inet_aton number part: decimal, octal (leading `0`) or hex (`0x`).
/// Values above `u32::MAX` are rejected.
fn parse_aton_part(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if let Some(octal) = part.strip_prefix('0').filter(|rest| !rest.is_empty()) {
            (octal, 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // "0x" alone is zero for inet_aton and the WHATWG URL parser; "" is not a number.
        return if radix == 16 { Some(0) } else { None };
    }
    let mut value: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        value = value * u64::from(radix) + u64::from(d);
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    Some(value)
}

/// Parses an IPv4 address the way `inet_aton` does: one to four parts separated by
/// dots, each decimal, octal or hex; the last part fills the remaining bytes.
fn parse_ipv4_permissive(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() {
        return None;
    }
    let mut parts = [0u64; 4];
    let mut n = 0;
    for part in s.split('.') {
        if n == 4 {
            return None;
        }
        parts[n] = parse_aton_part(part)?;
        n += 1;
    }
    let mut value: u64 = 0;
    for (i, part) in parts.iter().take(n - 1).enumerate() {
        if *part > 255 {
            return None;
        }
        value |= part << (24 - 8 * i);
    }
    let last_bits = 8 * (5 - n as u64);
    let last = parts[n - 1];
    if last >= (1u64 << last_bits) {
        return None;
    }
    value |= last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// Strips brackets and a zone identifier from an IPv6 literal and parses it.
fn parse_ipv6_literal(s: &str) -> Option<Ipv6Addr> {
    let inner = match s.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None => s,
    };
    let without_zone = match inner.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() => addr,
        Some(_) => return None,
        None => inner,
    };
    without_zone.parse().ok()
}

/// Parses a URL/CONNECT host as an IP literal the way permissive resolvers
/// (`inet_aton`) would, so `127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`, `[::1]`
/// and `::ffff:127.0.0.1` are all recognised as addresses and not sent to DNS as names.
///
/// Returns `None` for anything that is not an address (a host name). Brackets around
/// IPv6 are accepted, as is an IPv6 zone identifier (`[fe80::1%25eth0]`, dropped), and a
/// single trailing dot after an IPv4 form (`127.0.0.1.`).
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    if host.starts_with('[') || host.contains(':') {
        return parse_ipv6_literal(host).map(IpAddr::V6);
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    parse_ipv4_permissive(host).map(IpAddr::V4)
}

/// True when `host` is written in canonical form: dotted-quad decimal without leading
/// zeros, or the RFC 5952 form of an IPv6 address, bracketed or not.
pub fn is_canonical_ip_literal(host: &str) -> bool {
    let inner = match host.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(inner) => inner,
            None => return false,
        },
        None => host,
    };
    if inner.contains(':') {
        match inner.parse::<Ipv6Addr>() {
            Ok(ip) => ip.to_string() == inner,
            Err(_) => false,
        }
    } else if inner.len() == host.len() {
        match inner.parse::<Ipv4Addr>() {
            Ok(ip) => ip.to_string() == inner,
            Err(_) => false,
        }
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_classes() {
        assert_eq!(c("8.8.8.8"), AddrClass::Public);
        assert_eq!(c("1.1.1.1"), AddrClass::Public);
        assert_eq!(c("0.0.0.0"), AddrClass::Unspecified);
        assert_eq!(c("0.1.2.3"), AddrClass::Unspecified);
        assert_eq!(c("10.1.2.3"), AddrClass::Private);
        assert_eq!(c("172.16.0.1"), AddrClass::Private);
        assert_eq!(c("172.31.255.255"), AddrClass::Private);
        assert_eq!(c("172.32.0.1"), AddrClass::Public);
        assert_eq!(c("172.15.255.255"), AddrClass::Public);
        assert_eq!(c("192.168.1.1"), AddrClass::Private);
        assert_eq!(c("127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("127.255.0.9"), AddrClass::Loopback);
        assert_eq!(c("169.254.1.1"), AddrClass::LinkLocal);
        assert_eq!(c("169.254.169.254"), AddrClass::CloudMetadata);
        assert_eq!(c("169.254.170.2"), AddrClass::CloudMetadata);
        assert_eq!(c("100.64.0.1"), AddrClass::SharedCgnat);
        assert_eq!(c("100.127.255.255"), AddrClass::SharedCgnat);
        assert_eq!(c("100.128.0.0"), AddrClass::Public);
        assert_eq!(c("100.100.100.200"), AddrClass::CloudMetadata);
        assert_eq!(c("224.0.0.1"), AddrClass::Multicast);
        assert_eq!(c("239.255.255.255"), AddrClass::Multicast);
        assert_eq!(c("240.0.0.1"), AddrClass::Reserved);
        assert_eq!(c("255.255.255.254"), AddrClass::Reserved);
        assert_eq!(c("255.255.255.255"), AddrClass::Broadcast);
        assert_eq!(c("192.0.0.8"), AddrClass::Reserved);
        assert_eq!(c("198.18.0.1"), AddrClass::Reserved);
        assert_eq!(c("198.19.255.255"), AddrClass::Reserved);
        assert_eq!(c("198.20.0.0"), AddrClass::Public);
        assert_eq!(c("192.0.2.1"), AddrClass::Documentation);
        assert_eq!(c("198.51.100.7"), AddrClass::Documentation);
        assert_eq!(c("203.0.113.9"), AddrClass::Documentation);
    }

    #[test]
    fn ipv6_classes() {
        assert_eq!(c("2606:4700:4700::1111"), AddrClass::Public);
        assert_eq!(c("::"), AddrClass::Unspecified);
        assert_eq!(c("::1"), AddrClass::Loopback);
        assert_eq!(c("fc00::1"), AddrClass::Private);
        assert_eq!(c("fd12:3456::1"), AddrClass::Private);
        assert_eq!(c("fe80::1"), AddrClass::LinkLocal);
        assert_eq!(c("febf::1"), AddrClass::LinkLocal);
        assert_eq!(c("fec0::1"), AddrClass::Private);
        assert_eq!(c("ff02::1"), AddrClass::Multicast);
        assert_eq!(c("2001:db8::1"), AddrClass::Documentation);
        assert_eq!(c("3fff::1"), AddrClass::Documentation);
        assert_eq!(c("100::1"), AddrClass::Reserved);
        assert_eq!(c("fd00:ec2::254"), AddrClass::CloudMetadata);
        assert_eq!(c("fd00:ec2::253"), AddrClass::Private);
        assert_eq!(c("1::1"), AddrClass::Reserved);
    }

    #[test]
    fn ipv6_embedded_ipv4() {
        assert_eq!(c("::ffff:127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("::ffff:169.254.169.254"), AddrClass::CloudMetadata);
        assert_eq!(c("::ffff:8.8.8.8"), AddrClass::Public);
        assert_eq!(c("::ffff:0:10.0.0.1"), AddrClass::Private);
        assert_eq!(c("::10.0.0.1"), AddrClass::Private);
        assert_eq!(c("::127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("::8.8.8.8"), AddrClass::Reserved);
        assert_eq!(c("64:ff9b::127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("64:ff9b::a9fe:a9fe"), AddrClass::CloudMetadata);
        assert_eq!(c("64:ff9b::8.8.8.8"), AddrClass::Public);
        assert_eq!(c("64:ff9b:1::10.1.2.3"), AddrClass::Private);
        // /48 placement: 10.1 in bits 48..64, .2.3 in bits 72..88.
        assert_eq!(c("64:ff9b:1:a01:2:300::"), AddrClass::Private);
        assert_eq!(c("64:ff9b:1:808:8:800::"), AddrClass::Public);
        assert_eq!(c("64:ff9b:1::8.8.8.8"), AddrClass::Public);
        assert_eq!(c("64:ff9b:1:0:7f:1::"), AddrClass::Loopback); // /64 layout
        assert_eq!(c("64:ff9b:1:8:8:808::"), AddrClass::Public); // /56 layout
        assert_eq!(c("64:ff9b:1:0:8:808:800::"), AddrClass::Public); // /64 layout
        assert!(!c("64:ff9b:1:ffff:ff:ff00::").is_public()); // /48 layout
        assert_eq!(c("64:ff9b:1:1:1::"), AddrClass::Unspecified); // 0.0.0.0 at /96
        assert_eq!(c("3fff:1000::1"), AddrClass::Public);
        assert_eq!(c("2002:7f00:1::"), AddrClass::Loopback);
        assert_eq!(c("2002:a00:1::1"), AddrClass::Private);
        assert_eq!(c("2002:808:808::1"), AddrClass::Public);
        // Teredo client 127.0.0.1 is stored as 0x80ffff fe.
        assert_eq!(
            c("2001:0:4136:e378:8000:63bf:80ff:fffe"),
            AddrClass::Loopback
        );
        assert_eq!(c("2001:0:4136:e378:8000:63bf:f7f7:f7f7"), AddrClass::Public);
    }

    #[test]
    fn class_names() {
        assert!(AddrClass::Public.is_public());
        assert!(!AddrClass::Ipv4Embedded.is_public());
        assert!(!AddrClass::CloudMetadata.is_public());
        assert_eq!(AddrClass::SharedCgnat.as_str(), "shared_cgnat");
        assert_eq!(AddrClass::CloudMetadata.as_str(), "cloud_metadata");
        assert_eq!(AddrClass::LinkLocal.to_string(), "link_local");
    }

    #[test]
    fn ipnet_parse_display_contains() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.255.1.2".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!net.contains("::10.9.9.9".parse().unwrap()));

        let host: IpNet = "127.0.0.2".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.2/32");
        assert!(host.contains("127.0.0.2".parse().unwrap()));
        assert!(!host.contains("127.0.0.1".parse().unwrap()));

        let masked: IpNet = "192.168.1.77/24".parse().unwrap();
        assert_eq!(masked.to_string(), "192.168.1.0/24");
        assert_eq!(masked.prefix(), 24);

        let v6: IpNet = "::1/128".parse().unwrap();
        assert!(v6.contains("::1".parse().unwrap()));
        assert!(!v6.contains("127.0.0.1".parse().unwrap()));
        let v6net: IpNet = "2001:db8:abcd::1/48".parse().unwrap();
        assert_eq!(v6net.to_string(), "2001:db8:abcd::/48");
        assert!(v6net.contains("2001:db8:abcd:ffff::9".parse().unwrap()));
        let mapped: IpNet = "::ffff:0:0/96".parse().unwrap();
        assert!(mapped.contains("1.2.3.4".parse().unwrap()));

        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("200.1.1.1".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let all6: IpNet = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn ipnet_rejects() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "example.com/8",
            "",
            "/8",
            "10.0.0.0/0008",
            "10.0.0.0/999",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn ipnet_serde() {
        let net: IpNet = "172.16.0.0/12".parse().unwrap();
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(json, "\"172.16.0.0/12\"");
        let back: IpNet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, net);
        assert!(serde_json::from_str::<IpNet>("\"10.0.0.0/40\"").is_err());
        assert!(serde_json::from_str::<IpNet>("8").is_err());
    }

    fn lit(s: &str) -> Option<String> {
        parse_ip_literal(s).map(|ip| ip.to_string())
    }

    #[test]
    fn permissive_ipv4_literals() {
        let lo = Some("127.0.0.1".to_string());
        assert_eq!(lit("127.0.0.1"), lo);
        assert_eq!(lit("127.1"), lo);
        assert_eq!(lit("127.0.1"), lo);
        assert_eq!(lit("0x7f000001"), lo);
        assert_eq!(lit("0X7F000001"), lo);
        assert_eq!(lit("2130706433"), lo);
        assert_eq!(lit("0177.0.0.1"), lo);
        assert_eq!(lit("0x7f.0.0.0x1"), lo);
        assert_eq!(lit("017700000001"), lo);
        assert_eq!(lit("127.0.0.1."), lo);
        assert_eq!(lit("0"), Some("0.0.0.0".to_string()));
        assert_eq!(lit("0x"), Some("0.0.0.0".to_string()));
        assert_eq!(lit("4294967295"), Some("255.255.255.255".to_string()));
        assert_eq!(lit("169.254.43518"), Some("169.254.169.254".to_string()));
        assert_eq!(lit("10.0x10.65535"), Some("10.16.255.255".to_string()));
    }

    #[test]
    fn permissive_rejects_names() {
        for name in [
            "",
            ".",
            "example.com",
            "localhost",
            "127.0.0.1.example",
            "cafe",
            "1e3",
            "08",
            "0x1g",
            "4294967296",
            "256.0.0.1",
            "1.2.3.256",
            "1.2.65536",
            "1.16777216",
            "1.2.3.4.5",
            "1..2",
            "127.0.0.1..",
            ".127.0.0.1",
            "0xffffffffff",
            "99999999999999999999999",
            "[127.0.0.1]",
            "[::1",
            "::1]",
            "::ffff:127.1",
            "1.2.3.4:80",
            "-1",
            "+1",
            " 1",
        ] {
            assert_eq!(parse_ip_literal(name), None, "{name:?}");
        }
    }

    #[test]
    fn ipv6_literals() {
        assert_eq!(lit("[::1]"), Some("::1".to_string()));
        assert_eq!(lit("::1"), Some("::1".to_string()));
        assert_eq!(
            lit("::ffff:127.0.0.1"),
            Some("::ffff:127.0.0.1".to_string())
        );
        assert_eq!(lit("[::FFFF:7F00:1]"), Some("::ffff:127.0.0.1".to_string()));
        assert_eq!(lit("[fe80::1%25eth0]"), Some("fe80::1".to_string()));
        assert_eq!(lit("fe80::1%eth0"), Some("fe80::1".to_string()));
        assert_eq!(lit("fe80::1%"), None);
        let ip = parse_ip_literal("[::ffff:169.254.169.254]").unwrap();
        assert_eq!(classify(ip), AddrClass::CloudMetadata);
        let ip = parse_ip_literal("0xa9fea9fe").unwrap();
        assert_eq!(classify(ip), AddrClass::CloudMetadata);
    }

    #[test]
    fn canonical_literals() {
        for yes in [
            "127.0.0.1",
            "0.0.0.0",
            "8.8.8.8",
            "::1",
            "[::1]",
            "2001:db8::1",
            "[2001:db8::1]",
            "::ffff:127.0.0.1",
            "2001:db8:0:1:1:1:1:1",
        ] {
            assert!(is_canonical_ip_literal(yes), "{yes}");
        }
        for no in [
            "127.1",
            "0x7f000001",
            "2130706433",
            "0177.0.0.1",
            "127.000.0.1",
            "127.0.0.1.",
            "[127.0.0.1]",
            "::0001",
            "0:0:0:0:0:0:0:1",
            "2001:DB8::1",
            "2001:db8::0:1",
            "2001:db8:0:0:1:0:0:1",
            "2001:db8::1:1:1:1:1",
            "::ffff:7f00:1",
            "[::1",
            "example.com",
            "",
        ] {
            assert!(!is_canonical_ip_literal(no), "{no}");
        }
    }
}
