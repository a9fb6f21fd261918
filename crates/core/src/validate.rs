//! Domain types that requests are parsed into at the edge. Once a value has one of these
//! types it is valid; handlers never re-check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// A rejected field, reported to the client as `details: [{field, issue}]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {issue}")]
pub struct FieldError {
    /// The camelCase field name as the client sent it.
    pub field: &'static str,
    /// What is wrong, in words a developer understands.
    pub issue: String,
}

impl FieldError {
    /// A rejection of `field` for `issue`.
    pub fn new(field: &'static str, issue: impl Into<String>) -> Self {
        Self {
            field,
            issue: issue.into(),
        }
    }
}

fn bounded_text(
    field: &'static str,
    value: &str,
    max_chars: usize,
    allow_empty: bool,
) -> Result<String, FieldError> {
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters (got {chars})"),
        ));
    }
    if !allow_empty && value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// The customer's own reference for a job: any string of at most 180 characters (the
/// empty string, whitespace and control characters included), stored and echoed byte
/// for byte. The one exception is U+0000, which PostgreSQL `text` cannot hold: refused
/// with a 400 rather than mangled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalId(String);

impl ExternalId {
    /// Maximum length in characters.
    pub const MAX_CHARS: usize = 180;

    /// Validates an `externalId`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let chars = value.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                "externalId",
                format!(
                    "must be at most {} characters (got {chars})",
                    Self::MAX_CHARS
                ),
            ));
        }
        if value.contains('\0') {
            return Err(FieldError::new(
                "externalId",
                "must not contain U+0000 (NUL)",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A project name: 1 to 180 characters, unique per organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    /// Maximum length in characters.
    pub const MAX_CHARS: usize = 180;

    /// Validates a project `name`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        bounded_text("name", value, Self::MAX_CHARS, false).map(Self)
    }

    /// The validated name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether plain `http` and local destinations are acceptable (dev mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationPolicy {
    /// Production: `https` only, public addresses only.
    PublicHttpsOnly,
    /// Dev mode (`PLANGREP_WEBHOOK_ALLOW_INSECURE=true`): `http` and local addresses too.
    AllowInsecure,
}

/// A webhook destination that passed every check that needs no DNS: absolute `https` URL
/// (unless dev mode), at most 2048 characters, no userinfo, and no literal IP address or
/// `localhost` name in a forbidden range. Names are resolved and re-checked by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Maximum length in characters.
    pub const MAX_CHARS: usize = 2048;

    /// Validates a `webhookUrl` under `policy`.
    pub fn parse(value: &str, policy: DestinationPolicy) -> Result<Self, FieldError> {
        let issue = |text: &str| FieldError::new("webhookUrl", text);
        if value.len() > Self::MAX_CHARS {
            return Err(issue("must be at most 2048 characters"));
        }
        let url = Url::parse(value).map_err(|_| issue("must be an absolute URL"))?;
        // The limit applies to what is stored, echoed and sent: the normalised form, in
        // which non-ASCII characters are percent-encoded (up to 9 bytes each).
        if url.as_str().len() > Self::MAX_CHARS {
            return Err(issue(
                "must be at most 2048 characters once normalised (non-ASCII characters are percent-encoded)",
            ));
        }
        let insecure = policy == DestinationPolicy::AllowInsecure;
        match url.scheme() {
            "https" => {}
            "http" if insecure => {}
            _ => return Err(issue("must use https")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(issue("must not contain credentials (userinfo)"));
        }
        let forbidden = match url.host() {
            None => return Err(issue("must have a host")),
            Some(Host::Ipv4(ip)) => !is_public_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => !is_public_ip(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => is_local_name(name),
        };
        if forbidden && !insecure {
            return Err(issue(
                "must not point to a loopback, private, link-local or otherwise non-public address",
            ));
        }
        Ok(Self(url))
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The URL text as stored and echoed.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether a webhook may be sent to `ip`: false for loopback, private, link-local, CGNAT,
/// multicast, unspecified, broadcast, documentation and reserved ranges, and for IPv6 forms
/// that embed such an IPv4 address (mapped, compatible, 6to4, NAT64) or tunnel (Teredo).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_ipv4(ip),
        IpAddr::V6(ip) => is_public_ipv6(ip),
    }
}

fn is_public_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let forbidden = ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a >= 240 // reserved
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)); // benchmarking
    !forbidden
}

fn is_public_ipv6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_ipv4(v4);
    }
    if segments[..6] == [0; 6] {
        // IPv4-compatible (deprecated) and `::`, `::1`.
        return !ip.is_unspecified()
            && !ip.is_loopback()
            && is_public_ipv4(embedded_v4(segments[6], segments[7]));
    }
    if segments[..4] == [0; 4] && segments[4] == 0xffff && segments[5] == 0 {
        // IPv4-translated (::ffff:0:a.b.c.d, RFC 2765).
        return is_public_ipv4(embedded_v4(segments[6], segments[7]));
    }
    match segments[0] {
        0x2002 => return is_public_ipv4(embedded_v4(segments[1], segments[2])), // 6to4
        0x0064 if segments[1] == 0xff9b => {
            return is_public_ipv4(embedded_v4(segments[6], segments[7])); // NAT64
        }
        _ => {}
    }
    let forbidden = ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x2001 && segments[1] == 0x0000); // Teredo
    !forbidden
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_any_string_of_at_most_180_characters() {
        for as_is in [
            "PO-1138 / tower B",
            "",
            "   ",
            "a\tb",
            "line\nbreak",
            " padded ",
        ] {
            assert_eq!(ExternalId::parse(as_is).unwrap().as_str(), as_is);
        }
        assert!(ExternalId::parse(&"x".repeat(180)).is_ok());
        assert!(
            ExternalId::parse(&"é".repeat(180)).is_ok(),
            "chars, not bytes"
        );
        for bad in [&"x".repeat(181), "nul\0"] {
            let err = ExternalId::parse(bad).unwrap_err();
            assert_eq!(err.field, "externalId");
        }
    }

    #[test]
    fn webhook_urls_must_be_public_https_without_credentials() {
        let strict = DestinationPolicy::PublicHttpsOnly;
        assert!(WebhookUrl::parse("https://hooks.example.com/plangrep?x=1", strict).is_ok());
        assert!(WebhookUrl::parse("https://93.184.216.34/hook", strict).is_ok());
        let long = format!("https://example.com/{}", "a".repeat(2048));
        // 2020 bytes as sent, about 5,400 once percent-encoded.
        let non_ascii = format!("https://example.com/{}", "é".repeat(1000));
        assert!(non_ascii.len() <= 2048);
        for bad in [
            "http://example.com/hook",
            "ftp://example.com/hook",
            "example.com/hook",
            "not a url",
            "",
            "https://user:pass@example.com/",
            "https://user@example.com/",
            "https://127.0.0.1/",
            "https://127.1.2.3:8443/",
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://224.0.0.1/",
            "https://[::1]/",
            "https://[::]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[2002:7f00:1::]/",
            "https://[64:ff9b::a00:1]/",
            "https://[::ffff:0:7f00:1]/",
            "https://localhost/",
            "https://api.localhost./",
            "https://2130706433/",
            "https://0x7f.1/",
            long.as_str(),
            non_ascii.as_str(),
        ] {
            let err = WebhookUrl::parse(bad, strict).expect_err(bad);
            assert_eq!(err.field, "webhookUrl");
        }
    }

    #[test]
    fn dev_mode_accepts_http_and_local_destinations_but_not_garbage() {
        let dev = DestinationPolicy::AllowInsecure;
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/hook", dev).is_ok());
        assert!(WebhookUrl::parse("http://localhost/hook", dev).is_ok());
        assert!(WebhookUrl::parse("ftp://127.0.0.1/", dev).is_err());
        assert!(WebhookUrl::parse("http://u:p@127.0.0.1/", dev).is_err());
    }

    #[test]
    fn public_addresses_are_public() {
        for ok in [
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert!(is_public_ip(ok.parse().unwrap()), "{ok}");
        }
    }
}
