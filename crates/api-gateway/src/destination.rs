//! Webhook URL validation at job creation (SPEC §4): the pure checks of
//! `plangrep_core::validate::WebhookUrl`, plus a DNS look-up of host names that refuses
//! names resolving to non-public addresses. The dispatcher checks again at send time.

use std::time::Duration;

use plangrep_core::validate::{DestinationPolicy, FieldError, WebhookUrl, is_public_ip};
use url::Host;

/// How long a look-up may take before we give up and accept (send time re-checks).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Validates a `webhookUrl` under `policy`.
pub async fn validate(raw: &str, policy: DestinationPolicy) -> Result<WebhookUrl, FieldError> {
    let url = WebhookUrl::parse(raw, policy)?;
    if policy == DestinationPolicy::AllowInsecure {
        return Ok(url);
    }
    let Some(Host::Domain(name)) = url.url().host() else {
        return Ok(url);
    };
    refuse_non_public_resolution(name).await?;
    Ok(url)
}

/// Resolves `name` and refuses it when any address is non-public.
async fn refuse_non_public_resolution(name: &str) -> Result<(), FieldError> {
    let lookup = tokio::net::lookup_host((name, 443));
    // A name that does not resolve (or not in time) is accepted: DNS trouble must not
    // fail job creation, and the dispatcher refuses non-public addresses at send time.
    if let Ok(Ok(mut addresses)) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await
        && addresses.any(|addr| !is_public_ip(addr.ip()))
    {
        return Err(FieldError::new(
            "webhookUrl",
            "the host resolves to a loopback, private or otherwise non-public address",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_and_unresolvable_ones_deferred() {
        // `localhost` resolves to loopback everywhere (the URL check refuses the name
        // itself, so exercise the resolution step directly).
        assert!(refuse_non_public_resolution("localhost").await.is_err());
        assert!(
            refuse_non_public_resolution("no-such-host.invalid")
                .await
                .is_ok()
        );
        let strict = DestinationPolicy::PublicHttpsOnly;
        assert!(validate("https://localhost/", strict).await.is_err());
        assert!(validate("https://93.184.216.34/", strict).await.is_ok());
        assert!(
            validate("http://localhost/", DestinationPolicy::AllowInsecure)
                .await
                .is_ok()
        );
    }
}
