//! Custom domains: a deployment answers on a domain of the tenant's once
//! the domain is verified, that is once a DNS TXT record
//! `_hearth-challenge.<domain>` holds `hearth-verify=<token>` (the token is
//! handed out when the domain is added). Anyone may add any name (a claim
//! squats nothing); one deployment holds a name once verified. With a
//! certificate (PEM chain and key, checked by the API layer), the TLS
//! listener serves it for that name; the key is sealed at rest.

use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::TokioAsyncResolver;

use crate::error::{Error, Kind, Result};
use crate::ids::new_id;
use crate::keys::Caller;
use crate::model::DomainRecord;
use crate::store::StoreError;
use crate::Core;

/// Custom domains one deployment may have.
pub const MAX_DOMAINS: usize = 20;

/// The TXT record a domain's owner creates, and the value it holds.
pub fn challenge(d: &DomainRecord) -> (String, String) {
    (
        format!("_hearth-challenge.{}", d.domain),
        format!("hearth-verify={}", d.verification_token),
    )
}

/// What a domain's sealed key is bound to.
pub(crate) fn key_aad(d: &DomainRecord) -> String {
    format!("domain-key:{}:{}", d.tenant_id, d.id)
}

/// Whether `domain` is a host name a deployment may take: lower-case
/// labels of letters, digits and `-`, two at least, 253 bytes at most, not
/// an address, not under the proxy's own domain.
pub fn valid_domain(domain: &str, own: &str) -> std::result::Result<(), &'static str> {
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    };
    if domain.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err("a lower-case host name such as app.example.com");
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err("a host name, not an address");
    }
    if domain == own || domain.ends_with(&format!(".{own}")) {
        return Err("a name outside the proxy's own domain");
    }
    Ok(())
}

fn domain_not_found(id: &str) -> Error {
    Error::new(
        Kind::NotFound,
        "domain_not_found",
        format!("domain {id} not found"),
    )
}

impl Core {
    /// Adds `domain` to deployment `id`, pending until verified; with a
    /// certificate (already checked to fit the name) when given.
    pub async fn add_domain(
        &self,
        caller: &Caller,
        id: &str,
        domain: &str,
        certificate: Option<(String, Vec<u8>)>,
    ) -> Result<DomainRecord> {
        let dep = self.get_deployment(caller, id).await?;
        let _one_at_a_time = self.deploy_locks.lock(&dep.id).await;
        if self.store.domains_of(&dep.id).await?.len() >= MAX_DOMAINS {
            return Err(Error::conflict(
                "too_many_domains",
                format!("a deployment has at most {MAX_DOMAINS} domains"),
            ));
        }
        let mut d = DomainRecord {
            id: new_id("dom"),
            deployment_id: dep.id.clone(),
            tenant_id: dep.tenant_id.clone(),
            domain: domain.to_string(),
            state: "pending".into(),
            verification_token: new_id("tok"),
            certificate_pem: None,
            sealed_key: None,
            created_at: self.now_ms(),
            verified_at: None,
        };
        if let Some((chain, key)) = certificate {
            d.sealed_key = Some(self.sealer.seal(key_aad(&d).as_bytes(), &key));
            d.certificate_pem = Some(chain);
        }
        match self.store.put_domain(&d).await {
            Err(StoreError::Duplicate(_)) => Err(Error::conflict(
                "conflict",
                format!("{domain} is already a domain of this deployment"),
            )),
            r => Ok(r.map(|()| d)?),
        }
    }

    /// The deployment's domain of this name, added when it has none.
    pub(crate) async fn ensure_domain(
        &self,
        caller: &Caller,
        id: &str,
        domain: &str,
    ) -> Result<DomainRecord> {
        let have = self.list_domains(caller, id).await?;
        match have.into_iter().find(|d| d.domain == domain) {
            Some(d) => Ok(d),
            None => self.add_domain(caller, id, domain, None).await,
        }
    }

    pub async fn list_domains(&self, caller: &Caller, id: &str) -> Result<Vec<DomainRecord>> {
        self.get_deployment(caller, id).await?;
        Ok(self.store.domains_of(id).await?)
    }

    async fn domain_of(&self, caller: &Caller, id: &str, did: &str) -> Result<DomainRecord> {
        self.list_domains(caller, id)
            .await?
            .into_iter()
            .find(|d| d.id == did)
            .ok_or_else(|| domain_not_found(did))
    }

    /// Looks up the domain's TXT record; verified (and served from now
    /// on) when it holds the token. A domain another deployment holds
    /// verified is a conflict.
    pub async fn verify_domain(
        &self,
        caller: &Caller,
        id: &str,
        did: &str,
    ) -> Result<DomainRecord> {
        let mut d = self.domain_of(caller, id, did).await?;
        if d.state == "verified" {
            return Ok(d);
        }
        let (name, want) = challenge(&d);
        let found = self.txt_records(&name).await?;
        if !found.iter().any(|t| t.trim() == want) {
            let seen = match found.is_empty() {
                true => "no TXT record".to_string(),
                false => format!("TXT records {found:?}"),
            };
            return Err(Error::conflict(
                "domain_not_verified",
                format!("{name} should hold the TXT record {want:?}; found {seen}"),
            ));
        }
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        d.state = "verified".into();
        d.verified_at = Some(self.now_ms());
        match self.store.put_domain(&d).await {
            Err(StoreError::Duplicate(_)) => {
                return Err(Error::conflict(
                    "domain_taken",
                    format!("{} is verified for another deployment", d.domain),
                ))
            }
            r => r?,
        }
        self.routes_changed().await;
        Ok(d)
    }

    pub async fn delete_domain(
        &self,
        caller: &Caller,
        id: &str,
        did: &str,
    ) -> Result<DomainRecord> {
        let d = self.domain_of(caller, id, did).await?;
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        self.store.delete_domain(&d.id).await?;
        self.routes_changed().await;
        Ok(d)
    }

    /// The TXT strings at `name`, asked of the configured DNS servers (or
    /// the host's); none when the name does not exist.
    async fn txt_records(&self, name: &str) -> Result<Vec<String>> {
        let servers = &self.config.deployments.dns_servers;
        let resolver = if servers.is_empty() {
            TokioAsyncResolver::tokio_from_system_conf().map_err(|e| {
                Error::new(
                    Kind::Unavailable,
                    "dns_unavailable",
                    format!("the host's DNS resolver is not usable: {e}"),
                )
            })?
        } else {
            let mut cfg = ResolverConfig::new();
            for s in servers {
                cfg.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
            }
            let mut opts = ResolverOpts::default();
            opts.cache_size = 0;
            TokioAsyncResolver::tokio(cfg, opts)
        };
        let fqdn = format!("{name}.");
        match resolver.txt_lookup(fqdn).await {
            Ok(txt) => Ok(txt
                .iter()
                .map(|r| {
                    r.txt_data()
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect::<String>()
                })
                .collect()),
            Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(Error::new(
                Kind::Unavailable,
                "dns_unavailable",
                format!("looking up {name} failed: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_domain;

    #[test]
    fn only_host_names_outside_the_proxy_domain_are_taken() {
        assert!(valid_domain("app.example.com", "localhost").is_ok());
        assert!(valid_domain("a-b.c1.example", "hearth.dev").is_ok());
        for bad in [
            "example",
            "App.example.com",
            "-a.example.com",
            "a..example.com",
            "127.0.0.1",
            "x.apps.hearth.dev",
            "hearth.dev",
            "a_b.example.com",
            "",
        ] {
            assert!(valid_domain(bad, "hearth.dev").is_err(), "{bad}");
        }
    }
}
