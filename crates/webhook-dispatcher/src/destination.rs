//! Send-time destination checks against SSRF (SPEC §5): the URL is re-validated, and
//! host names are resolved by our own resolver, which drops every non-public address.
//! reqwest connects only to the addresses the resolver returned, so the connection is
//! pinned to what was checked (no DNS rebinding between check and connect).

use std::net::SocketAddr;

use plangrep_core::validate::{DestinationPolicy, WebhookUrl, is_public_ip};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Resolves names, keeping only public addresses unless dev mode allows local ones.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnlyResolver {
    /// The destination policy in force.
    pub policy: DestinationPolicy,
}

/// A destination that may not be contacted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ForbiddenDestination(pub String);

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = filter_addresses(resolved, policy);
            if allowed.is_empty() {
                return Err(Box::new(ForbiddenDestination(format!(
                    "{host} resolves to no public address"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The addresses a webhook may be sent to under `policy`.
pub fn filter_addresses(addresses: Vec<SocketAddr>, policy: DestinationPolicy) -> Vec<SocketAddr> {
    match policy {
        DestinationPolicy::AllowInsecure => addresses,
        DestinationPolicy::PublicHttpsOnly => addresses
            .into_iter()
            .filter(|addr| is_public_ip(addr.ip()))
            .collect(),
    }
}

/// Re-validates a stored webhook URL at send time (scheme, userinfo, literal addresses).
pub fn check_url(
    url: &str,
    policy: DestinationPolicy,
) -> Result<reqwest::Url, ForbiddenDestination> {
    let checked = WebhookUrl::parse(url, policy).map_err(|e| ForbiddenDestination(e.issue))?;
    Ok(checked.url().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolver_filter_drops_every_non_public_address() {
        let strict = DestinationPolicy::PublicHttpsOnly;
        let blocked = [
            "127.0.0.1:0",
            "10.1.2.3:0",
            "172.20.0.1:0",
            "192.168.0.10:0",
            "169.254.169.254:0",
            "100.100.100.100:0",
            "0.0.0.0:0",
            "224.0.0.251:0",
            "[::1]:0",
            "[::]:0",
            "[fe80::1]:0",
            "[fc00::1]:0",
            "[::ffff:10.0.0.1]:0",
            "[2002:a00:1::1]:0",
            "[ff02::1]:0",
        ];
        for addr in blocked {
            let addr: SocketAddr = addr.parse().unwrap();
            assert!(
                filter_addresses(vec![addr], strict).is_empty(),
                "{addr} passed"
            );
        }
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        let mixed = vec!["127.0.0.1:0".parse().unwrap(), public];
        assert_eq!(filter_addresses(mixed.clone(), strict), vec![public]);
        assert_eq!(
            filter_addresses(mixed.clone(), DestinationPolicy::AllowInsecure),
            mixed
        );
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_outside_dev_mode() {
        let strict = PublicOnlyResolver {
            policy: DestinationPolicy::PublicHttpsOnly,
        };
        // `localhost.` style names are refused before DNS; use the resolver directly with
        // a name the system resolves to loopback.
        let name: Name = "localhost".parse().unwrap();
        assert!(strict.resolve(name).await.is_err());
        let dev = PublicOnlyResolver {
            policy: DestinationPolicy::AllowInsecure,
        };
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = dev.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    #[test]
    fn stored_urls_are_rechecked_at_send_time() {
        let strict = DestinationPolicy::PublicHttpsOnly;
        assert!(check_url("https://93.184.216.34/hook", strict).is_ok());
        assert!(check_url("http://93.184.216.34/hook", strict).is_err());
        assert!(check_url("https://[::ffff:127.0.0.1]/", strict).is_err());
        assert!(check_url("http://127.0.0.1:1/", DestinationPolicy::AllowInsecure).is_ok());
    }
}
