//! Which addresses and ports the service pushes to (unless
//! `webhooks.allow_private_endpoints`, dev mode's default).
//!
//! Invariants it keeps:
//! - **Public addresses only, by allow-list for IPv6.** An IPv4 address is
//!   public unless it is in one of the special-purpose ranges (IANA's
//!   registry: loopback, private, shared, link-local, documentation,
//!   benchmarking, reserved, multicast, broadcast, `0/8`, the 6to4 relay
//!   anycast) or is Azure's platform address 168.63.129.16. An IPv6 address
//!   is public only when it is global unicast (`2000::/3`) outside the
//!   ranges that carry or stand for other addresses or are not routed on
//!   the internet (`2001::/23`, which holds Teredo, `2001:db8::/32`, 6to4
//!   `2002::/16`, `3fff::/20`); an IPv4-mapped address (`::ffff:a.b.c.d`)
//!   and a NAT64 address of the well-known prefix (`64:ff9b::/96`) are
//!   judged as the IPv4 address they carry. Everything else, IPv4-compatible
//!   (`::a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), local-use NAT64
//!   (`64:ff9b:1::/48`), discard (`100::/64`), unique-local, site-local,
//!   link-local and multicast addresses included, is not public.
//! - **Allowed ports only.** A push goes to a port of
//!   `webhooks.allowed_ports` (`443` by default: the port the deliver pods'
//!   network policy opens, rendered by the chart from the same setting).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether the service may push to `ip`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // The 6to4 relay anycast, 192.88.99/24.
        || (a == 192 && b == 88 && c == 99)
        // Benchmarking, 198.18/15.
        || (a == 198 && (18..20).contains(&b))
        // Reserved, 240/4.
        || a >= 240
        // Azure's platform address (DNS, the host agent).
        || v4.octets() == [168, 63, 129, 16])
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    // IPv4-mapped, ::ffff:a.b.c.d.
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 with the well-known prefix 64:ff9b::/96 (DNS64 answers for an
    // IPv4-only host): the IPv4 address it carries.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = v6.octets();
        return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    global_unicast
        // IETF protocol assignments 2001::/23 (Teredo 2001::/32 among them).
        && !(s[0] == 0x2001 && s[1] < 0x0200)
        // Documentation, 2001:db8::/32 and 3fff::/20.
        && !(s[0] == 0x2001 && s[1] == 0x0db8)
        && (s[0] & 0xfff0) != 0x3ff0
        // 6to4, 2002::/16 (an IPv4 address inside, reached through relays).
        && s[0] != 0x2002
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "168.63.129.16",
            "192.88.99.1",
            "198.18.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
            // NAT64 (well-known prefix) of internal addresses.
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            // Local-use NAT64: whatever the operator maps it to.
            "64:ff9b:1::808:808",
            // IPv4-compatible and IPv4-translated forms.
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:0:127.0.0.1",
            "::ffff:0:8.8.8.8",
            // 6to4, Teredo, discard, documentation.
            "2002:7f00:1::1",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:10::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["51.120.0.1", "8.8.8.8", "2a01:4f8::1", "2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"]
        {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
