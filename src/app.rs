//! Assembling the daemon: settings → store, engine, API → a server that runs until told to
//! stop. Tests and the binary use exactly this path ([`App::build`], then [`App::run`]).

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiSettings, AppState};
use crate::config::Secret;
use crate::config::Settings;
use crate::domain::paths::DownloadRoot;
use crate::engine::{Engine, EngineSettings};
use crate::events::EventBus;
use crate::fetch::{
    ClientSettings, Clients, CredentialRules, Fetcher, FetcherSettings, RetryPolicy,
};
use crate::store::Store;
use crate::webhooks::{WebhookSettings, Webhooks};

/// How often running jobs publish progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The longest and shortest time between two sweeps of the history retention.
const MAX_SWEEP_EVERY: Duration = Duration::from_secs(5 * 60);
const MIN_SWEEP_EVERY: Duration = Duration::from_millis(200);

/// A built daemon, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
    grace: Duration,
    max_header_bytes: usize,
    /// Held for the life of the daemon: one daemon per data directory.
    _lock: File,
}

impl App {
    /// Opens the store (applying migrations), requeues jobs a previous process left running,
    /// and binds `settings.listen` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Self::build_with_listener(settings, listener).await
    }

    /// [`App::build`] on a listener the caller bound.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                settings.data_dir.display()
            )
        })?;
        let lock = lock_data_dir(&settings)?;
        let store = open_store(&settings).await?;
        let root = download_root(&settings)?;
        let shutdown = CancellationToken::new();
        let events = EventBus::new(settings.event_replay_buffer);
        let webhooks = webhooks(&settings, &store, &shutdown).await?;
        let engine = Engine::new(
            store.clone(),
            events.clone(),
            fetcher(&settings)?,
            root.clone(),
            engine_settings(&settings),
            shutdown.clone(),
        );
        let api = Arc::new(ApiSettings {
            root,
            max_queued_jobs: settings.max_queued_jobs,
            max_files_per_job: settings.max_files_per_job,
            max_request_bytes: settings.max_request_bytes,
            request_timeout: Duration::from_secs(settings.request_timeout_secs),
            tokens: api::auth::Tokens::new(settings.api_token.as_ref(), &settings.tokens),
            guard: guard(&settings, listener.local_addr()?),
            rate: api::rate::RateLimiter::new(
                settings.submit_rate_per_second,
                settings.submit_burst,
            ),
            address_policy: settings.address_policy(),
        });
        let state = AppState {
            store,
            engine,
            events,
            webhooks,
            api,
            shutdown,
        };
        Ok(Self {
            listener,
            state,
            grace: Duration::from_millis(settings.shutdown_grace_ms),
            max_header_bytes: settings.max_header_bytes,
            _lock: lock,
        })
    }

    /// The bound address (the real port when the settings asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops in order: stop accepting and end event
    /// streams, stop workers (they checkpoint and release their jobs), wait for them at most the
    /// grace period, close the store.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            grace,
            max_header_bytes,
            _lock,
        } = self;
        let addr = listener.local_addr()?;
        let token = state.shutdown.clone();
        let engine = state.engine.clone();
        let store = state.store.clone();
        let webhooks = state.webhooks.clone();
        // Subscribed before anything can publish: every event of this run is delivered.
        webhooks.start(&state.events);
        engine.start();
        let server = api::serve::serve(
            listener,
            api::router(state),
            max_header_bytes,
            token.clone(),
        );
        tracing::info!(address = %addr, "listening on http://{addr}");
        let mut serving = std::pin::pin!(server);
        let served = tokio::select! {
            () = &mut serving => Some(()),
            () = shutdown => None,
        };
        let started = Instant::now();
        tracing::info!("shutting down");
        token.cancel();
        if served.is_none() && tokio::time::timeout(grace, serving).await.is_err() {
            tracing::warn!("connections still open at the end of the grace period; closing them");
        }
        let remaining = engine.drain(grace.saturating_sub(started.elapsed())).await
            + webhooks
                .drain(grace.saturating_sub(started.elapsed()))
                .await;
        if remaining > 0 {
            tracing::warn!(
                remaining_tasks = remaining,
                "{remaining} tasks still running at exit; their jobs resume on the next start"
            );
        }
        store.close().await;
        tracing::info!(
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "stopped"
        );
        Ok(())
    }
}

/// Opens the store and puts back what the last process left in flight: jobs it was running,
/// webhook deliveries it was going to retry.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::open(&settings.data_dir.join("haul.db"))
        .await
        .with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?;
    // We hold the data directory's lock, so no other process runs these jobs.
    let orphans = store
        .requeue_all_running()
        .await
        .context("cannot requeue interrupted jobs")?;
    if !orphans.is_empty() {
        tracing::info!(
            jobs = orphans.len(),
            "requeued {} jobs interrupted by the last shutdown or crash",
            orphans.len()
        );
    }
    let abandoned = store
        .abandon_pending_deliveries()
        .await
        .context("cannot update the webhook delivery log")?;
    if abandoned > 0 {
        tracing::warn!(
            deliveries = abandoned,
            "{abandoned} webhook deliveries were waiting for a retry when the last run \
             stopped; they are marked failed"
        );
    }
    Ok(store)
}

async fn webhooks(
    settings: &Settings,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<Webhooks> {
    let callbacks = store
        .any_callback_url()
        .await
        .context("cannot look for jobs with a callback URL")?;
    Webhooks::new(
        webhook_settings(settings)?,
        store.clone(),
        callbacks,
        shutdown.clone(),
    )
    .context("cannot build the webhook HTTP client")
}

fn lock_data_dir(settings: &Settings) -> anyhow::Result<File> {
    let path = settings.data_dir.join("haul.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another haul daemon is using the data directory {}; stop it or choose another --data-dir",
            settings.data_dir.display()
        )
    })?;
    Ok(file)
}

fn fetcher(settings: &Settings) -> anyhow::Result<Fetcher> {
    let client_settings = ClientSettings {
        user_agent: settings.user_agent.clone(),
        connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
        read_timeout: Duration::from_secs(settings.stall_timeout_secs),
        max_redirects: settings.max_redirects,
        no_proxy: settings.no_proxy.clone(),
        policy: settings.address_policy(),
    };
    let proxy = settings.proxy.as_ref().map(Secret::expose);
    let clients = Clients::new(client_settings, proxy).context("cannot build the HTTP client")?;
    let credentials = CredentialRules::compile(&settings.credentials)
        .map_err(|e| anyhow::anyhow!("invalid credential rule: {e}"))?;
    let retry = RetryPolicy {
        attempts: settings.retry_attempts.max(1),
        base: Duration::from_millis(settings.retry_base_delay_ms),
        max: Duration::from_millis(settings.retry_max_delay_ms),
    };
    Ok(Fetcher::new(FetcherSettings {
        clients,
        credentials,
        retry,
        checkpoint_every: Duration::from_millis(settings.checkpoint_interval_ms),
        max_redirects: settings.max_redirects,
        max_connections_per_host: settings.max_connections_per_host,
        max_bytes_per_second: Some(settings.max_bytes_per_second).filter(|r| *r > 0),
        min_free_space: settings.min_free_space,
    }))
}

/// The download root, with the incomplete root for partial files when one is set.
fn download_root(settings: &Settings) -> anyhow::Result<DownloadRoot> {
    let root = DownloadRoot::open(&settings.download_root).with_context(|| {
        format!(
            "cannot use the download root {}",
            settings.download_root.display()
        )
    })?;
    match &settings.incomplete_root {
        Some(incomplete) => Ok(root
            .with_incomplete(incomplete)
            .context("cannot use incomplete_root")?),
        None => Ok(root),
    }
}

fn engine_settings(settings: &Settings) -> EngineSettings {
    let retention =
        Some(Duration::from_secs(settings.history_retention_secs)).filter(|r| !r.is_zero());
    EngineSettings {
        max_concurrent_jobs: settings.max_concurrent_jobs,
        max_connections_per_file: settings.max_connections_per_file,
        min_segment_size: settings.min_segment_size,
        lease: Duration::from_secs(settings.lease_secs),
        progress_every: PROGRESS_EVERY,
        history_retention: retention,
        // Often enough that a job outlives its retention by a fraction of it at most.
        retention_sweep_every: retention
            .map_or(MAX_SWEEP_EVERY, |r| r / 2)
            .clamp(MIN_SWEEP_EVERY, MAX_SWEEP_EVERY),
    }
}

/// The `Host`/`Origin` checks for a daemon bound to `addr`.
fn guard(settings: &Settings, addr: SocketAddr) -> api::guard::Guard {
    let guard = api::guard::Guard::new(
        addr,
        &settings.allowed_hosts,
        &settings.allowed_origins,
        settings.max_header_bytes,
    );
    if !addr.ip().is_loopback() && guard.only_default_hosts() {
        tracing::warn!(
            address = %addr,
            "listening on {addr} with no allowed_hosts: requests must name the daemon \
             localhost, 127.0.0.1, [::1] or {}; set allowed_hosts to the names clients use",
            addr.ip()
        );
    }
    guard
}

fn webhook_settings(settings: &Settings) -> anyhow::Result<WebhookSettings> {
    let callback_secret = crate::webhooks::secret::callback_secret(
        settings.webhook_secret.as_ref(),
        &settings.data_dir,
    )
    .context("cannot read or create the webhook secret in the data directory")?;
    Ok(WebhookSettings {
        subscriptions: settings.webhooks.clone(),
        callback_secret,
        timeout: Duration::from_secs(settings.webhook_timeout_secs),
        retry: RetryPolicy {
            attempts: settings.webhook_max_attempts.max(1),
            base: Duration::from_millis(settings.webhook_retry_base_delay_ms),
            max: Duration::from_millis(settings.webhook_retry_max_delay_ms),
        },
        queue_capacity: settings.webhook_queue_capacity.max(1),
        user_agent: settings.user_agent.clone(),
        policy: settings.address_policy(),
    })
}
