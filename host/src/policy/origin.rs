//! Where a request goes and which allow entry lets it: the origins of
//! `[plugins.NAME.http] allow`, the target of a request, and the addresses
//! a request reaches only through an entry that names them.

use std::fmt;
use std::net::IpAddr;

/// Where a request goes: its scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https`.
    pub secure: bool,
    /// The host as the request names it.
    pub host: Host,
    /// The port, the scheme's own when the request names none.
    pub port: u16,
}

impl Target {
    /// The target of a request URI, if it names an `http` or `https` host.
    pub fn of(uri: &http::Uri) -> Option<Target> {
        let secure = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        Some(Target {
            secure,
            host: Host::parse(authority.host())?,
            port: authority
                .port_u16()
                .unwrap_or(if secure { 443 } else { 80 }),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// A host: a name (lowercase) or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name.
    Name(String),
    /// An IP address, written literally.
    Address(IpAddr),
}

impl Host {
    fn parse(text: &str) -> Option<Host> {
        let bare = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(address) = bare.parse() {
            return Some(Host::Address(address));
        }
        let name = text.to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        valid.then_some(Host::Name(name))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Address(IpAddr::V6(address)) => write!(f, "[{address}]"),
            Host::Address(address) => write!(f, "{address}"),
        }
    }
}

/// An allow-list entry: scheme, host (or `*.` and a domain, for every
/// name under it) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    secure: bool,
    host: HostPattern,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(Host),
    /// Every name ending in `.` and this domain.
    Under(String),
}

impl Origin {
    /// Parses `scheme://host[:port]`, where host may be `*.domain`.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad = |why: &str| {
            format!("`{text}` is not an origin ({why}); write `https://host` or `http://host:port`")
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let secure = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("an origin has no path, query or user"));
        }
        let wildcard = rest.strip_prefix("*.");
        let uri: http::Uri = format!("{scheme}://{}", wildcard.unwrap_or(rest))
            .parse()
            .map_err(|_| bad("it does not parse"))?;
        let target = Target::of(&uri).ok_or_else(|| bad("no host"))?;
        let host = match (wildcard, target.host) {
            (None, host) => HostPattern::Exact(host),
            (Some(_), Host::Name(domain)) if domain.contains('.') => HostPattern::Under(domain),
            (Some(_), _) => return Err(bad("`*.` goes before a domain of two labels or more")),
        };
        Ok(Origin {
            secure,
            host,
            port: target.port,
        })
    }

    /// Whether a request to `target` matches this entry.
    pub fn matches(&self, target: &Target) -> bool {
        self.secure == target.secure
            && self.port == target.port
            && match (&self.host, &target.host) {
                (HostPattern::Exact(host), target) => host == target,
                (HostPattern::Under(domain), Host::Name(name)) => name
                    .strip_suffix(domain.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                (HostPattern::Under(_), Host::Address(_)) => false,
            }
    }

    /// Whether this entry names an address literally: only such an entry
    /// lets a request reach a loopback, private or link-local address.
    pub fn names_address(&self) -> bool {
        matches!(self.host, HostPattern::Exact(Host::Address(_)))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "https" } else { "http" };
        match &self.host {
            HostPattern::Exact(host) => write!(f, "{scheme}://{host}:{}", self.port),
            HostPattern::Under(domain) => write!(f, "{scheme}://*.{domain}:{}", self.port),
        }
    }
}

/// Whether `address` is one a request reaches only through an allow entry
/// that names it: loopback, private, link-local (cloud metadata services
/// among them), shared, unspecified, broadcast or multicast; in IPv6 also
/// site-local and IPv4-compatible, and a NAT64 or 6to4 address whose IPv4
/// address is one of those.
pub fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let v4_of = |high: u16, low: u16| {
                let [a, b] = high.to_be_bytes();
                let [c, d] = low.to_be_bytes();
                IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
            };
            match segments {
                // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4
                // address they carry.
                [0x64, 0xff9b, 0, 0, 0, 0, high, low] | [0x2002, high, low, ..] => {
                    return is_internal(v4_of(high, low));
                }
                // IPv4-compatible (::/96, deprecated; `::` and `::1`
                // among them) and local-use NAT64 (64:ff9b:1::/48).
                [0, 0, 0, 0, 0, 0, ..] | [0x64, 0xff9b, 1, ..] => return true,
                _ => {}
            }
            let first = segments[0];
            v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::of(&url.parse().unwrap()).unwrap()
    }

    #[test]
    fn origins_match_scheme_host_and_port_exactly_or_under_a_domain() {
        let api = Origin::parse("https://api.example.com").unwrap();
        assert!(api.matches(&target("https://api.example.com/v1/chat")));
        assert!(api.matches(&target("https://API.example.com:443/")));
        assert!(!api.matches(&target("http://api.example.com/")));
        assert!(!api.matches(&target("https://api.example.com:8443/")));
        assert!(!api.matches(&target("https://api.example.com.evil.net/")));

        let under = Origin::parse("https://*.example.com").unwrap();
        assert!(under.matches(&target("https://a.b.example.com/")));
        assert!(!under.matches(&target("https://example.com/")));
        assert!(!under.matches(&target("https://badexample.com/")));

        let local = Origin::parse("http://127.0.0.1:11434").unwrap();
        assert!(local.names_address());
        assert!(local.matches(&target("http://127.0.0.1:11434/api")));
        assert!(!local.matches(&target("http://localhost:11434/api")));
        let v6 = Origin::parse("http://[::1]:8080").unwrap();
        assert!(v6.matches(&target("http://[::1]:8080/")));
    }

    #[test]
    fn malformed_origins_are_refused_with_the_reason() {
        for (text, why) in [
            ("api.example.com", "no scheme"),
            ("ftp://example.com", "http or https"),
            ("https://example.com/v1", "no path"),
            ("https://user@example.com", "no path, query or user"),
            ("https://*.com", "two labels"),
            ("https://*.127.0.0.1", "two labels"),
        ] {
            let err = Origin::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn internal_addresses_are_recognized() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::7f00:1",
            "::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fec0::1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "172.32.0.1",
            "2606:4700::1111",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }
}
