//! The process's one RabbitMQ connection, kept usable whatever lapin's recovery does.
//!
//! lapin's automatic recovery reconnects and replays channels after most losses, but
//! not all: lapin 4.12's IO loop can block for good when the broker resets the socket
//! while frames are queued (seen here when RabbitMQ restarts under load). The
//! connection then reports `Reconnecting` forever, every publish waits, and a consumer
//! holds its prefetch of unsettled deliveries: the service looks alive and does
//! nothing. So a watchdog checks the connection every second, and one that has not
//! been connected for [`RECONNECT_AFTER`] (or that lapin gave up on) is replaced by a
//! new connection. Whoever uses it notices through [`LiveConnection::generation`]: the
//! publishing channel is reopened and subscriptions consume again on the new
//! connection (see `mod.rs`).
//!
//! The replaced connection is *retired*: if lapin's recovery brings it back after
//! all, it is closed at once, so a consumer it re-registers cannot sit on deliveries
//! nobody reads (closing returns them to their queue).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;

use super::super::BusError;

/// How long a connection may stay down before it is replaced. lapin retries the
/// TCP connection from 1 s, doubling, so a broker back within this time is normally
/// picked up by lapin's own recovery (which keeps channels and consumers as they
/// were); the replacement is for the cases it does not.
pub(super) const RECONNECT_AFTER: Duration = Duration::from_secs(15);
/// How often the watchdog looks at the connection.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How long the broker's TCP port may take to answer before we call it unreachable.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the AMQP handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a retired connection is watched in case lapin brings it back.
const RETIRED_WATCH: Duration = Duration::from_secs(600);

/// The connection in use, replaced when it stops working (see the module docs).
pub(super) struct LiveConnection {
    current: RwLock<Arc<Connection>>,
    /// Bumped on every replacement; subscribers wait on it.
    generation: watch::Sender<u64>,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
    /// Set by [`close`](Self::close): a closed connection is not replaced.
    closed: AtomicBool,
    uri: AMQPUri,
    name: String,
    /// The broker's address without credentials, for messages and logs.
    url: String,
}

impl LiveConnection {
    /// Connects (failing fast when nothing listens at `uri`) and starts the watchdog.
    pub(super) async fn open(
        uri: AMQPUri,
        name: String,
        url: String,
    ) -> Result<Arc<Self>, BusError> {
        let connection = connect(&uri, &name, &url).await?;
        let live = Arc::new(Self {
            current: RwLock::new(Arc::new(connection)),
            generation: watch::Sender::new(0),
            replacing: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            uri,
            name,
            url,
        });
        tokio::spawn(watchdog(Arc::downgrade(&live)));
        Ok(live)
    }

    /// The connection in use and its generation.
    pub(super) fn current(&self) -> (Arc<Connection>, u64) {
        // The generation is bumped while the write lock is held, so the pair read
        // under the read lock is consistent.
        let connection = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (connection.clone(), *self.generation.borrow())
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The connection in use once it is connected, waiting (for lapin's recovery or
    /// the watchdog's replacement) until `deadline`.
    pub(super) async fn connected(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(Arc<Connection>, u64), BusError> {
        loop {
            let (connection, generation) = self.current();
            let status = connection.status();
            if status.connected() {
                return Ok((connection, generation));
            }
            if self.closed.load(Ordering::SeqCst) || tokio::time::Instant::now() >= deadline {
                return Err(BusError::Disconnected {
                    url: self.url.clone(),
                    state: format!("{status:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Resolves once the connection of generation `seen` has been replaced.
    pub(super) async fn replaced(&self, seen: u64) {
        let mut changes = self.generation.subscribe();
        // The sender lives as long as `self`: an error cannot happen while we borrow it.
        let _ = changes.wait_for(|generation| *generation != seen).await;
    }

    /// Closes the connection cleanly (reply 200 "OK") and stops the watchdog.
    pub(super) async fn close(&self) -> Result<(), BusError> {
        self.closed.store(true, Ordering::SeqCst);
        let (connection, _) = self.current();
        connection
            .close(200, "OK".into())
            .await
            .map_err(|e| BusError::amqp("close the connection", e))
    }

    /// Replaces the connection of generation `seen` with a new one (unless another
    /// caller did already).
    async fn replace(&self, seen: u64) -> Result<(), BusError> {
        let _one = self.replacing.lock().await;
        if *self.generation.borrow() != seen || self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let fresh = Arc::new(connect(&self.uri, &self.name, &self.url).await?);
        let old = {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let old = std::mem::replace(&mut *current, fresh);
            self.generation.send_modify(|generation| *generation += 1);
            old
        };
        tracing::warn!(
            url = %self.url,
            "The RabbitMQ connection did not recover by itself; replaced it with a new one (publishing and consuming resume on it)."
        );
        retire(old);
        Ok(())
    }
}

/// Checks the connection every [`WATCH_EVERY`] and replaces one that has been down
/// for [`RECONNECT_AFTER`] or that lapin gave up on; ends with the connection.
async fn watchdog(live: Weak<LiveConnection>) {
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(live) = live.upgrade() else { return };
        if live.closed.load(Ordering::SeqCst) {
            return;
        }
        let (connection, generation) = live.current();
        let status = connection.status();
        if status.connected() {
            down_since = None;
            failures = 0;
            continue;
        }
        let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
        // Neither connecting nor reconnecting: lapin gave up (errored or closed).
        let given_up = !status.reconnecting() && !status.connecting();
        if !given_up && since.elapsed() < RECONNECT_AFTER {
            continue;
        }
        match live.replace(generation).await {
            Ok(()) => {
                down_since = None;
                failures = 0;
            }
            Err(error) => {
                failures += 1;
                // Once, then every minute or so: the broker may be down for long.
                if failures == 1 || failures.is_multiple_of(12) {
                    tracing::warn!(%error, down_for = ?since.elapsed(), "RabbitMQ is still unreachable; trying again.");
                }
                // Back off (the handshake attempt itself can take seconds).
                let pause = WATCH_EVERY * failures.min(5);
                drop(live);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Watches a replaced connection: should lapin's recovery bring it back, it is
/// closed (returning whatever a recovered consumer took to its queue).
fn retire(old: Arc<Connection>) {
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + RETIRED_WATCH;
        while tokio::time::Instant::now() < until {
            let status = old.status();
            if status.connected() {
                let closing = old.close(200, "replaced".into());
                if let Ok(Err(error)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, closing).await {
                    tracing::debug!(%error, "Closing a replaced connection failed.");
                }
                return;
            }
            if !status.reconnecting() && !status.connecting() {
                return; // closed or given up: nothing more will come of it
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    });
}

/// One connection attempt: a TCP probe (a refused port is reported at once, not
/// after lapin's minutes of back-off), then the AMQP handshake with recovery on.
async fn connect(uri: &AMQPUri, name: &str, url: &str) -> Result<Connection, BusError> {
    let address = (uri.authority.host.clone(), uri.authority.port);
    match tokio::time::timeout(TCP_PROBE_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_probe)) => {}
        Ok(Err(error)) => {
            return Err(BusError::Unreachable {
                url: url.to_owned(),
                reason: error.to_string(),
            });
        }
        Err(_) => {
            return Err(BusError::Unreachable {
                url: url.to_owned(),
                reason: format!("no answer within {TCP_PROBE_TIMEOUT:?}"),
            });
        }
    }
    let properties = ConnectionProperties::default()
        .with_connection_name(name.to_owned().into())
        .enable_auto_recover()
        // Reconnect for a few minutes (1 s doubling to 10 s, with jitter); the
        // watchdog replaces a connection that does not come back sooner.
        .configure_backoff(|backoff| {
            backoff
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(30)
                .with_jitter()
        });
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        Connection::connect_uri(uri.clone(), properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(BusError::Handshake {
            url: url.to_owned(),
            reason: error.to_string(),
        }),
        Err(_) => Err(BusError::Handshake {
            url: url.to_owned(),
            reason: format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
        }),
    }
}
