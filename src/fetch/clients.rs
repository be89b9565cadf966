//! HTTP clients: the shared one (through the configured proxy, if any) and one per proxy a job
//! names. A client owns a connection pool, so jobs without a proxy of their own all share one
//! and keep reusing its connections; a job's proxy gets its own client, built once and kept
//! for the next job that names it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::FetchError;
use super::http::{ClientSettings, HttpClient, TrustedProxy, build_client};

/// Clients kept for jobs' proxies; beyond this the cache starts over (a bound, not an LRU:
/// many distinct proxies at once is not the common case).
const MAX_PROXY_CLIENTS: usize = 32;

/// The shared client and a small cache of per-proxy clients. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Clients {
    shared: HttpClient,
    /// The shared client's proxy, whose name its resolver trusts.
    trusted: Option<Arc<TrustedProxy>>,
    settings: Arc<ClientSettings>,
    by_proxy: Arc<Mutex<HashMap<String, HttpClient>>>,
}

impl Clients {
    /// The shared client, through `proxy` if given.
    pub fn new(settings: ClientSettings, proxy: Option<&str>) -> Result<Self, FetchError> {
        Ok(Self {
            shared: build_client(&settings, proxy, true)?,
            trusted: proxy
                .and_then(|proxy| TrustedProxy::new(&settings, proxy))
                .map(Arc::new),
            settings: Arc::new(settings),
            by_proxy: Arc::default(),
        })
    }

    /// Which addresses the clients may connect to.
    pub fn policy(&self) -> super::AddressPolicy {
        self.settings.policy
    }

    /// The daemon's proxy, trusted by the shared client's resolver.
    pub fn trusted(&self) -> Option<Arc<TrustedProxy>> {
        self.trusted.clone()
    }

    /// The shared client.
    pub fn shared(&self) -> &HttpClient {
        &self.shared
    }

    /// The client for a job: its own proxy's, or the shared one. Called once per job, never
    /// per request. A job's proxy is where its requests go, so the address policy judges it
    /// like a URL: an IP literal here, a name in the client's resolver.
    pub fn for_job(&self, proxy: Option<&str>) -> Result<HttpClient, FetchError> {
        let Some(proxy) = proxy else {
            return Ok(self.shared.clone());
        };
        if let Ok(url) = url::Url::parse(proxy) {
            self.settings
                .policy
                .check_url(&url)
                .map_err(FetchError::AddressDenied)?;
        }
        if let Some(client) = self.cached(proxy) {
            return Ok(client);
        }
        let client = build_client(&self.settings, Some(proxy), false)?;
        if let Ok(mut cache) = self.by_proxy.lock() {
            if cache.len() >= MAX_PROXY_CLIENTS {
                cache.clear();
            }
            cache.insert(proxy.to_owned(), client.clone());
        }
        Ok(client)
    }

    fn cached(&self, proxy: &str) -> Option<HttpClient> {
        self.by_proxy.lock().ok()?.get(proxy).cloned()
    }
}
