//! Where the proxy sends a request for a deployment: by `<slug>.apps.<domain>`
//! or by a verified custom domain, to one of its serving instances in turn,
//! skipping any the supervisor found unhealthy or that no longer run.
//!
//! Routes are cached in memory (every request reads one): a deployment or
//! domain change drops the cache, and the verified domains are all held,
//! so a request for an unknown host reads nothing from the store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::Result;
use crate::model::{DeploymentRecord, DomainRecord, SandboxState};
use crate::Core;

/// Slugs whose routes are cached at most (past that the cache starts
/// over).
const MAX_CACHED: usize = 10_000;

/// A deployment's serving set, as the proxy sees it.
#[derive(Debug)]
pub struct AppRoute {
    pub deployment_id: String,
    pub tenant_id: String,
    pub slug: String,
    pub created_at: i64,
    pub port: u16,
    pub instances: Vec<String>,
    next: AtomicUsize,
}

/// A verified custom domain: the deployment it serves, and its
/// certificate chain and private key (PEM) when one was given.
#[derive(Debug, Clone)]
pub struct DomainRoute {
    /// The domain's id (`dom_...`).
    pub id: String,
    pub deployment_id: String,
    pub slug: String,
    pub certificate: Option<Arc<Certificate>>,
}

/// A custom domain's certificate, as given (PEM).
#[derive(Debug, PartialEq, Eq)]
pub struct Certificate {
    pub chain_pem: String,
    pub key_pem: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Routes {
    by_slug: RwLock<HashMap<String, Arc<AppRoute>>>,
    /// Bumped by every change, so a lookup that read the store before a
    /// change does not cache what it read.
    generation: AtomicU64,
    domains: RwLock<HashMap<String, DomainRoute>>,
    /// Instances whose last health check failed (out of rotation while
    /// others serve).
    unhealthy: Mutex<HashSet<String>>,
}

impl Routes {
    pub(crate) fn set_healthy(&self, instance: &str, healthy: bool) {
        let mut set = self.unhealthy.lock();
        if healthy {
            set.remove(instance);
        } else {
            set.insert(instance.to_string());
        }
    }
}

impl Core {
    /// The route of `<slug>.apps.<domain>`, or `None` when no deployment
    /// of that slug serves.
    pub async fn app_route(&self, slug: &str) -> Result<Option<Arc<AppRoute>>> {
        let slug = slug.to_ascii_lowercase();
        if let Some(r) = self.app_routes.by_slug.read().get(&slug) {
            return Ok(Some(r.clone()));
        }
        let generation = self.app_routes.generation.load(Ordering::Acquire);
        let Some(dep) = self.store.deployment_by_slug(&slug).await? else {
            return Ok(None);
        };
        let Some(route) = self.route_of(&dep).await? else {
            return Ok(None);
        };
        let route = Arc::new(route);
        let mut cache = self.app_routes.by_slug.write();
        if self.app_routes.generation.load(Ordering::Acquire) == generation {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(slug, route.clone());
        }
        Ok(Some(route))
    }

    /// The verified custom domain `host` (lower case, no port), if any.
    pub fn domain_route(&self, host: &str) -> Option<DomainRoute> {
        self.app_routes.domains.read().get(host).cloned()
    }

    /// The id of a verified custom domain of deployment `id` (the first by
    /// name), if it has one.
    pub fn custom_domain_of(&self, id: &str) -> Option<String> {
        let table = self.app_routes.domains.read();
        let mut mine: Vec<(&String, &DomainRoute)> = table
            .iter()
            .filter(|(_, r)| r.deployment_id == id)
            .collect();
        mine.sort_by_key(|(name, _)| *name);
        mine.first().map(|(_, r)| r.id.clone())
    }

    /// The instances to try for the next request of `route`, best first:
    /// from the next in turn, those that run and passed their last check,
    /// then those that run; none when none runs.
    pub fn instance_order(&self, route: &AppRoute) -> Vec<String> {
        let n = route.instances.len();
        if n == 0 {
            return Vec::new();
        }
        let start = route.next.fetch_add(1, Ordering::Relaxed);
        let running: Vec<&String> = (0..n)
            .map(|i| &route.instances[(start + i) % n])
            .filter(|id| {
                self.handle(id)
                    .is_some_and(|h| h.state() == SandboxState::Running)
            })
            .collect();
        let (healthy, sick): (Vec<&String>, Vec<&String>) = {
            let unhealthy = self.app_routes.unhealthy.lock();
            running.into_iter().partition(|id| !unhealthy.contains(*id))
        };
        healthy.into_iter().chain(sick).cloned().collect()
    }

    async fn route_of(&self, dep: &DeploymentRecord) -> Result<Option<AppRoute>> {
        let Some(vid) = &dep.active_version_id else {
            return Ok(None);
        };
        if dep.instances.is_empty() || dep.state != "running" {
            return Ok(None);
        }
        let Some(v) = self.version_of(&dep.id, vid).await? else {
            return Ok(None);
        };
        Ok(Some(AppRoute {
            deployment_id: dep.id.clone(),
            tenant_id: dep.tenant_id.clone(),
            slug: dep.slug.clone(),
            created_at: dep.created_at,
            port: v.runtime_port,
            instances: dep.instances.clone(),
            next: AtomicUsize::new(0),
        }))
    }

    /// Drops the cached routes and reloads the verified domains: called
    /// after every deployment or domain change.
    pub(crate) async fn routes_changed(&self) {
        self.app_routes.generation.fetch_add(1, Ordering::AcqRel);
        self.app_routes.by_slug.write().clear();
        if let Err(e) = self.load_domains().await {
            tracing::warn!(error = %e, "custom domains not reloaded");
        }
    }

    /// Reads every verified custom domain into the proxy's table.
    pub(crate) async fn load_domains(&self) -> crate::store::StoreResult<()> {
        let mut table = HashMap::new();
        for d in self.store.verified_domains().await? {
            let Some(dep) = self.store.get_deployment(&d.deployment_id).await? else {
                continue;
            };
            let certificate = self.open_certificate(&d);
            table.insert(
                d.domain.clone(),
                DomainRoute {
                    id: d.id.clone(),
                    deployment_id: dep.id,
                    slug: dep.slug,
                    certificate,
                },
            );
        }
        *self.app_routes.domains.write() = table;
        Ok(())
    }

    /// A domain's certificate with its key unsealed.
    fn open_certificate(&self, d: &DomainRecord) -> Option<Arc<Certificate>> {
        let (chain, sealed) = (d.certificate_pem.as_ref()?, d.sealed_key.as_ref()?);
        match self
            .sealer
            .open(super::domains::key_aad(d).as_bytes(), sealed)
        {
            Ok(key) => Some(Arc::new(Certificate {
                chain_pem: chain.clone(),
                key_pem: key,
            })),
            Err(_) => {
                tracing::warn!(domain = %d.domain, "a custom domain's key could not be unsealed");
                None
            }
        }
    }
}
