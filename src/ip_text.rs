//! Reading an address's text exactly as std's parser does (a property
//! test holds the two equal), on bytes and without its general machinery:
//! std reads each character through closures that save and restore the
//! position, and tries an embedded IPv4 address before every IPv6 group,
//! and that cost more than looking the address up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address, as `str::parse::<IpAddr>` reads `text`.
pub fn parse(text: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4(text) {
        return Some(IpAddr::V4(v4));
    }
    parse_ipv6(text).map(IpAddr::V6)
}

/// A dotted quad as std's parser reads it (four decimal octets of one to
/// three digits, none with a leading zero, none over 255), in one pass:
/// most inputs are IPv4.
fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    // The octet being read, its value so far and its digits.
    let (mut part, mut value, mut digits) = (0, 0u16, 0);
    for &byte in text {
        if byte == b'.' {
            if digits == 0 || part == 3 {
                return None;
            }
            octets[part] = u8::try_from(value).ok()?;
            (part, value, digits) = (part + 1, 0, 0);
            continue;
        }
        let digit = byte.wrapping_sub(b'0');
        // A fourth digit, or one after a leading zero, is no octet.
        if digit > 9 || digits == 3 || (digits == 1 && value == 0) {
            return None;
        }
        (value, digits) = (value * 10 + u16::from(digit), digits + 1);
    }
    if part != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// The dotted quad `text` begins with, and its length, as std reads an
/// IPv4 address embedded in IPv6 text: an octet's digits run until a byte
/// that is not one, and a fourth digit fails the address. (`parse_ipv4`
/// is the same rule for a whole text, in a loop that costs less.)
fn ipv4_prefix(text: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let mut octets = [0u8; 4];
    let mut at = 0;
    for (i, octet) in octets.iter_mut().enumerate() {
        if i > 0 {
            if text.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let (mut value, mut digits) = (0u16, 0);
        while let Some(digit) = text.get(at).map(|b| b.wrapping_sub(b'0')).filter(|&d| d <= 9) {
            // A fourth digit, or one after a leading zero, is no octet.
            if digits == 3 || (digits == 1 && value == 0) {
                return None;
            }
            (value, digits, at) = (value * 10 + u16::from(digit), digits + 1, at + 1);
        }
        if digits == 0 {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    Some((Ipv4Addr::from(octets), at))
}

/// IPv6 text as std's parser reads it: groups of one to four hex digits
/// up to the first `::`, then groups after it, eight in all (fewer with
/// the `::`, which stands for at least one); the last two groups may be
/// written as a dotted quad, but not before the `::`.
fn parse_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    let mut at = 0;
    let mut head = [0u16; 8];
    let (head_size, head_ipv4) = read_groups(text, &mut at, &mut head);
    if head_size < 8 {
        if head_ipv4 || text.get(at..at + 2) != Some(b"::") {
            return None;
        }
        at += 2;
        let mut tail = [0u16; 7];
        let (tail_size, _) = read_groups(text, &mut at, &mut tail[..7 - head_size]);
        head[8 - tail_size..].copy_from_slice(&tail[..tail_size]);
    }
    (at == text.len()).then(|| Ipv6Addr::from(head))
}

/// Colon-separated groups from `at`, as many as `groups` holds, the last
/// two of them possibly a dotted quad: how many were read, and whether a
/// dotted quad ended them. `at` is left after the last group read.
fn read_groups(text: &[u8], at: &mut usize, groups: &mut [u16]) -> (usize, bool) {
    let limit = groups.len();
    for i in 0..limit {
        let mut start = *at;
        if i > 0 {
            if text.get(start) != Some(&b':') {
                return (i, false);
            }
            start += 1;
        }
        let rest = text.get(start..).unwrap_or_default();
        if i + 1 < limit {
            if let Some((v4, len)) = ipv4_prefix(rest) {
                let [a, b, c, d] = v4.octets();
                groups[i] = u16::from_be_bytes([a, b]);
                groups[i + 1] = u16::from_be_bytes([c, d]);
                *at = start + len;
                return (i + 2, true);
            }
        }
        let Some((group, len)) = hex_group(rest) else {
            return (i, false);
        };
        groups[i] = group;
        *at = start + len;
    }
    (limit, false)
}

/// The group of one to four hex digits `text` begins with, and its
/// length; a fifth digit fails the group.
fn hex_group(text: &[u8]) -> Option<(u16, usize)> {
    let mut value = 0u16;
    let mut len = 0;
    while let Some(digit) = text.get(len).and_then(|&b| hex_digit(b)) {
        if len == 4 {
            return None;
        }
        value = value << 4 | u16::from(digit);
        len += 1;
    }
    (len > 0).then_some((value, len))
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The quick IPv4 reader accepts what std's accepts, as std reads
        /// it, and nothing std refuses: over text of digits and dots (and a
        /// stray other character), and over every address's own text.
        #[test]
        fn the_quick_ipv4_reader_reads_as_std_does(
            text in "[0-9.]{0,17}|[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9 +a:/-]{1,4}",
            ip in proptest::num::u32::ANY,
        ) {
            let std = text.parse::<Ipv4Addr>().ok();
            proptest::prop_assert_eq!(parse_ipv4(text.as_bytes()), std, "{:?}", text);
            let text = Ipv4Addr::from(ip).to_string();
            proptest::prop_assert_eq!(parse_ipv4(text.as_bytes()), Some(Ipv4Addr::from(ip)));
        }

        /// The reader reads any text as std's `IpAddr` parser does: text
        /// of the characters addresses are made of, in address-like
        /// shapes (groups with and without `::`, too many or too long,
        /// dotted quads after them, stray characters), and every IPv6
        /// address's own text, as std writes it and in capitals.
        #[test]
        fn the_reader_reads_as_std_does(
            text in proptest::prop_oneof![
                "[0-9a-fA-F:.]{0,24}",
                "([0-9a-fA-F]{0,5}:){0,9}[0-9a-fA-F]{0,5}",
                "([0-9a-f]{1,4}:){0,7}:?([0-9a-f]{1,4}:){0,7}[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}",
                "(::|[0-9a-f]{1,4}:){1,7}[0-9a-f]{1,4}[g%/ \\]]?[0-9]?",
            ],
            groups in proptest::array::uniform8(proptest::prop_oneof![
                proptest::strategy::Just(0u16),
                proptest::num::u16::ANY,
                0u16..0x100,
            ]),
        ) {
            let std = text.parse::<IpAddr>().ok();
            proptest::prop_assert_eq!(parse(text.as_bytes()), std, "{:?}", text);
            let ip = Ipv6Addr::from(groups);
            for text in [ip.to_string(), ip.to_string().to_uppercase(), format!("{:x?}", ip.segments())] {
                proptest::prop_assert_eq!(parse(text.as_bytes()), text.parse::<IpAddr>().ok(), "{:?}", text);
            }
        }
    }

    #[test]
    fn reads_the_forms_std_reads_and_refuses_the_rest() {
        for text in [
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
            "::ffff:1.2.3.4",
            "::1.2.3.4",
            "1::1.2.3.4",
            "1:2:3:4:5::1.2.3.4",
            "1:2:3:4:5:6::1.2.3.4",
            "1:2:3:4:5:6:7::",
            "1:2:3:4:5:6:7:8::",
            "1:2:3:4:5:6:7:8:9",
            "1.2.3.4::",
            "::1:",
            ":1::",
            "1:::2",
            "12345::",
            "::0000:ffff",
            "::00000",
            "::1.2.3.04",
            "::1.2.3.256",
            "::1.2.3.4.5",
            "[::1]",
            "fe80::1%eth0",
            "2001:db8::/32",
            "",
            ":",
            "1.2.3.4",
            "1.2.3",
            "01.2.3.4",
        ] {
            assert_eq!(parse(text.as_bytes()), text.parse::<IpAddr>().ok(), "{text:?}");
        }
    }
}
