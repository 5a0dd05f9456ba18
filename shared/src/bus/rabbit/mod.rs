//! `RabbitBus`: the [`Bus`] on RabbitMQ, through lapin 4 with automatic recovery.
//!
//! One connection per process (lapin multiplexes channels over it):
//! - a publishing channel in confirm mode, shared by every publish; it is replaced
//!   when a channel-level error (e.g. publishing to a missing exchange) closed it,
//!   and it survives connection loss through lapin's recovery;
//! - one channel per subscription, with per-consumer `basic_qos(prefetch)` (quorum
//!   queues refuse global QoS); the channel closes when the subscription and every
//!   delivery taken from it are dropped, which returns unsettled messages;
//! - short-lived channels for declarations and passive queue checks, because the
//!   broker closes a channel on any failed declaration.
//!
//! Recovery (`enable_auto_recover`, lapin ≥ 4.12.3) reconnects and replays channels,
//! QoS, confirm mode and consumers; a publish or consume error that recovery can
//! fix is retried after `wait_for_recovery`, a bounded number of times for
//! publishes. Errors recovery refuses are returned: a service then exits and its
//! supervisor restarts it (lapin 4.12's connection recovery; see its CHANGELOG).
//!
//! Neither consumers nor the publisher rely on recovery alone (lapin recovers a
//! connection's channels in turn and stops at the first that fails): a broker that
//! listens again before its quorum queues are back refuses the re-registered
//! consumer (NOT_FOUND) and the channels stay closed. A subscription whose channel did not come back within
//! `RECOVERY_WAIT`, or that the broker closed, consumes again on a new channel, for
//! up to `RESUBSCRIBE_DEADLINE`, rather than going deaf while the process looks
//! healthy. A publish waits for recovery at most `RECOVERY_WAIT` too, then goes out
//! on a new publishing channel.
//!
//! Nor does the connection itself rely on lapin alone: lapin's IO loop can block for
//! good after a connection reset, reporting `Reconnecting` forever. The connection is
//! kept by [`connection::LiveConnection`], whose watchdog replaces one that stays down
//! for `RECONNECT_AFTER`; the publisher and every subscription then move to the new
//! connection. Every other wait on the broker (opening a channel, consuming, settling
//! a delivery, cancelling) is bounded by `BROKER_REPLY_TIMEOUT`, so nothing holds a
//! handler or a shutdown on a connection that will never answer.

mod connection;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use secrecy::ExposeSecret;

use connection::LiveConnection;

use super::{
    Bus, BusError, CONTENT_TYPE_JSON, DeadLetter, ExchangeKind, HEADER_DELIVERY_COUNT, Incoming,
    Outgoing, QueueSpec, Settle, Subscription, Topology,
};
use crate::config::AmqpSettings;

/// Attempts per publish (the first try plus retries after recovery or a nack).
const PUBLISH_ATTEMPTS: u32 = 3;
/// How long one round trip to the broker may take (opening a channel, consuming,
/// settling a delivery, cancelling) before it counts as failed.
const BROKER_REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a publish waits for the broker's confirm before publishing again.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a consumer waits for lapin's recovery to bring its channel back before
/// it opens a new one itself.
const RECOVERY_WAIT: Duration = Duration::from_secs(10);
/// How long a consumer keeps trying to consume again after a connection loss.
const RESUBSCRIBE_DEADLINE: Duration = Duration::from_secs(300);

/// A [`Bus`] on RabbitMQ. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RabbitBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBus")
            .field("url", &self.inner.link.url())
            .finish_non_exhaustive()
    }
}

struct Inner {
    link: Arc<LiveConnection>,
    /// The confirm-mode channel every publish goes through.
    publisher: tokio::sync::Mutex<Publisher>,
    /// Dead exchange of the queues this bus declared (queue → exchange); queues it
    /// did not declare use the settings' namespace.
    dead_exchanges: std::sync::Mutex<HashMap<String, String>>,
    default_dead_exchange: String,
}

impl RabbitBus {
    /// Connects to `settings.url` with automatic recovery and opens the publishing
    /// channel. Fails fast, naming the broker and how to start it, when nothing
    /// listens there; never prints the URL's password.
    pub async fn connect(settings: &AmqpSettings) -> Result<RabbitBus, BusError> {
        let raw = settings.url.expose_secret();
        let uri: AMQPUri = raw
            .parse()
            .map_err(|error: String| BusError::InvalidUrl(error.replace(raw, "<amqp.url>")))?;
        let url = display_url(&uri);
        let name = format!("fwdwatch {} pid {}", settings.namespace, std::process::id());
        let link = LiveConnection::open(uri, name, url.clone()).await?;
        let (connection, generation) = link.current();
        let publisher = Publisher {
            channel: open_confirm_channel(&connection).await?,
            generation,
        };
        tracing::info!(%url, "Connected to RabbitMQ.");
        Ok(RabbitBus {
            inner: Arc::new(Inner {
                link,
                publisher: tokio::sync::Mutex::new(publisher),
                dead_exchanges: std::sync::Mutex::new(HashMap::new()),
                default_dead_exchange: Topology::new(settings.namespace.clone()).dead_exchange(),
            }),
        })
    }

    /// Closes the connection cleanly (reply 200 "OK"). Unsettled deliveries return
    /// to their queues.
    pub async fn close(&self) -> Result<(), BusError> {
        self.inner.link.close().await
    }

    /// Deletes the topology's queues (with their `.dead` queues), `extra_queues`
    /// (with theirs) and its exchanges, messages included. For tests and demo
    /// resets only; every step is attempted and the first error is returned.
    pub async fn teardown(
        &self,
        topology: &Topology,
        extra_queues: &[&str],
    ) -> Result<(), BusError> {
        let mut queues: Vec<String> = topology.queues().into_iter().map(|q| q.name).collect();
        queues.extend(extra_queues.iter().map(|q| (*q).to_owned()));
        let mut first_error = None;
        let mut channel = self.inner.channel().await?;
        for queue in &queues {
            for name in [queue.clone(), topology.dead_queue(queue)] {
                let result = match short("queue", &name) {
                    Ok(short_name) => channel
                        .queue_delete(short_name, QueueDeleteOptions::default())
                        .await
                        .map(drop)
                        .map_err(|e| BusError::amqp(format!("delete queue {name:?}"), e)),
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    first_error.get_or_insert(error);
                    channel = self.inner.channel().await?;
                }
            }
        }
        for exchange in topology.exchanges() {
            let result = match short("exchange", &exchange.name) {
                Ok(name) => channel
                    .exchange_delete(name, ExchangeDeleteOptions::default())
                    .await
                    .map_err(|e| BusError::amqp(format!("delete exchange {:?}", exchange.name), e)),
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                first_error.get_or_insert(error);
                channel = self.inner.channel().await?;
            }
        }
        close_quietly(&channel).await;
        first_error.map_or(Ok(()), Err)
    }
}

/// `amqp://host:port/vhost`, without the user and password.
fn display_url(uri: &AMQPUri) -> String {
    let scheme = match uri.scheme {
        lapin::uri::AMQPScheme::AMQP => "amqp",
        lapin::uri::AMQPScheme::AMQPS => "amqps",
    };
    let vhost = if uri.vhost == "/" {
        "%2f"
    } else {
        uri.vhost.as_str()
    };
    format!(
        "{scheme}://{}:{}/{vhost}",
        uri.authority.host, uri.authority.port
    )
}

/// `operation` bounded by [`BROKER_REPLY_TIMEOUT`]: a broker (or a lapin IO loop)
/// that never answers is an error, not a wait forever.
async fn bounded<T>(
    what: &str,
    operation: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(BROKER_REPLY_TIMEOUT, operation).await {
        Ok(result) => result.map_err(|e| BusError::amqp(what, e)),
        Err(_) => Err(BusError::TimedOut {
            operation: what.to_owned(),
            after: BROKER_REPLY_TIMEOUT,
        }),
    }
}

async fn open_confirm_channel(connection: &Connection) -> Result<Channel, BusError> {
    let channel = bounded("open the publishing channel", connection.create_channel()).await?;
    bounded(
        "enable publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    Ok(channel)
}

async fn close_quietly(channel: &Channel) {
    if channel.status().connected()
        && let Err(error) = bounded("close a channel", channel.close(200, "OK".into())).await
    {
        tracing::debug!(%error, "Closing a short-lived channel failed.");
    }
}

/// Closes a replaced consumer channel, now or once lapin's recovery brings it back
/// (a recovered channel would re-register its consumer and hold deliveries nobody
/// reads).
fn close_when_recovered(channel: Channel) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + RESUBSCRIBE_DEADLINE;
        while tokio::time::Instant::now() < deadline {
            let status = channel.status();
            if status.connected() {
                close_quietly(&channel).await;
                return;
            }
            if !status.reconnecting() && !status.initializing() {
                return; // closed for good: nothing to do
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// AMQP names and ids are short strings (at most 255 bytes).
fn short(what: &'static str, value: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(value).map_err(|error| BusError::Invalid {
        what,
        reason: format!("{value:?}: {error}"),
    })
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

fn string_table(headers: &BTreeMap<String, String>) -> Result<FieldTable, BusError> {
    let mut table = FieldTable::default();
    for (key, value) in headers {
        table.insert(
            short("header name", key)?,
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    Ok(table)
}

/// A header value as text; lists and tables (`x-death`) have no single text form.
fn header_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

fn header_count(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::ShortShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongString(s) => s.to_string().parse().ok(),
        _ => None,
    }
}

fn message_properties(
    message_id: Option<&str>,
    message_type: Option<&str>,
    headers: FieldTable,
) -> Result<BasicProperties, BusError> {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2) // persistent
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_headers(headers);
    if let Some(id) = message_id {
        properties = properties.with_message_id(short("message id", id)?);
    }
    if let Some(kind) = message_type {
        properties = properties.with_type(short("message type", kind)?);
    }
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        properties = properties.with_timestamp(now.as_secs());
    }
    Ok(properties)
}

/// A message validated and converted for lapin.
struct Prepared {
    exchange: ShortString,
    routing_key: ShortString,
    properties: BasicProperties,
    body: Vec<u8>,
    message_id: String,
}

impl Prepared {
    fn from_outgoing(message: Outgoing) -> Result<Self, BusError> {
        Ok(Prepared {
            exchange: short("exchange", &message.exchange)?,
            routing_key: short("routing key", &message.routing_key)?,
            properties: message_properties(
                Some(&message.message_id),
                Some(&message.message_type),
                string_table(&message.headers)?,
            )?,
            body: message.body,
            message_id: message.message_id,
        })
    }

    fn unroutable(&self) -> BusError {
        BusError::Unroutable {
            exchange: self.exchange.to_string(),
            routing_key: self.routing_key.to_string(),
            message_id: self.message_id.clone(),
        }
    }

    fn nacked(&self) -> BusError {
        BusError::Nacked {
            exchange: self.exchange.to_string(),
            routing_key: self.routing_key.to_string(),
            message_id: self.message_id.clone(),
        }
    }

    fn failed(&self, error: lapin::Error) -> BusError {
        if is_not_found(&error) {
            return BusError::NotFound {
                what: "exchange",
                name: self.exchange.to_string(),
            };
        }
        BusError::amqp(
            format!(
                "publish message {} to exchange {:?}",
                self.message_id,
                self.exchange.as_str()
            ),
            error,
        )
    }

    async fn send(&self, channel: &Channel) -> lapin::Result<lapin::PublisherConfirm> {
        channel
            .basic_publish(
                self.exchange.clone(),
                self.routing_key.clone(),
                // mandatory: an unroutable message comes back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &self.body,
                self.properties.clone(),
            )
            .await
    }
}

/// What a broker confirm means for one message.
enum Confirmed {
    Stored,
    Nacked,
    Unroutable,
}

fn confirmed(confirmation: Confirmation) -> Confirmed {
    // An unroutable mandatory message is still *acked*; it is the returned
    // message that tells (rust-stack.md §2.2).
    if confirmation.is_nack() {
        Confirmed::Nacked
    } else if confirmation.take_message().is_some() {
        Confirmed::Unroutable
    } else {
        Confirmed::Stored
    }
}

/// The publishing channel and the connection generation it was opened on.
#[derive(Clone)]
struct Publisher {
    channel: Channel,
    generation: u64,
}

impl Inner {
    /// A channel on `connection` with `prefetch` consuming `queue` (manual acks)
    /// under `tag`.
    async fn consume(
        connection: &Connection,
        queue: &str,
        prefetch: u16,
        tag: &str,
    ) -> Result<(Channel, lapin::Consumer), BusError> {
        let channel = bounded("open a channel", connection.create_channel()).await?;
        bounded(
            "set the prefetch",
            channel.basic_qos(prefetch, BasicQosOptions { global: false }),
        )
        .await?;
        let consuming = channel.basic_consume(
            short("queue", queue)?,
            short("consumer tag", tag)?,
            BasicConsumeOptions::default(), // manual acks
            FieldTable::default(),
        );
        let consumer = match tokio::time::timeout(BROKER_REPLY_TIMEOUT, consuming).await {
            Ok(Ok(consumer)) => consumer,
            Ok(Err(e)) if is_not_found(&e) => {
                return Err(BusError::NotFound {
                    what: "queue",
                    name: queue.to_owned(),
                });
            }
            Ok(Err(e)) => return Err(BusError::amqp(format!("consume {queue:?}"), e)),
            Err(_) => {
                return Err(BusError::TimedOut {
                    operation: format!("consume {queue:?}"),
                    after: BROKER_REPLY_TIMEOUT,
                });
            }
        };
        Ok((channel, consumer))
    }

    /// A short-lived channel on the connection in use.
    async fn channel(&self) -> Result<Channel, BusError> {
        let (connection, _) = self.link.current();
        bounded("open a channel", connection.create_channel()).await
    }

    /// The publishing channel, reopened if a channel-level error closed it or the
    /// connection was replaced. While lapin recovers the connection the old channel
    /// is kept: lapin restores it.
    async fn publisher(&self) -> Result<Publisher, BusError> {
        let mut publisher = self.publisher.lock().await;
        let (connection, generation) = self.link.current();
        let status = publisher.channel.status();
        let usable = status.connected() || status.reconnecting() || status.initializing();
        if publisher.generation == generation && usable {
            return Ok(publisher.clone());
        }
        tracing::debug!(?status, "Reopening the publishing channel.");
        *publisher = Publisher {
            channel: open_confirm_channel(&connection).await?,
            generation,
        };
        Ok(publisher.clone())
    }

    /// Waits for lapin's recovery after a failed publish, bounded. lapin recovers a
    /// connection's channels one after the other and stops at the first that fails
    /// (a consumer refused by a broker whose queues are not back yet): the publishing
    /// channel would then never come back and every publish would wait forever. One
    /// that did not come back within `RECOVERY_WAIT` is replaced once the connection
    /// is up (or has been replaced); the caller then publishes again. Errors recovery
    /// cannot fix (a missing exchange) are returned at once.
    async fn recover_publisher(
        &self,
        stale: &Publisher,
        error: lapin::Error,
    ) -> Result<(), lapin::Error> {
        let recovery = stale.channel.wait_for_recovery(error);
        match tokio::time::timeout(RECOVERY_WAIT, recovery).await {
            Ok(result) => result,
            Err(_) => {
                self.replace_publisher(stale).await;
                Ok(())
            }
        }
    }

    /// Opens a new publishing channel in place of `stale`, unless it came back or was
    /// replaced meanwhile. Waits for a connected connection first (up to
    /// `RESUBSCRIBE_DEADLINE`); a failure leaves the old one for the next attempt.
    async fn replace_publisher(&self, stale: &Publisher) {
        let deadline = tokio::time::Instant::now() + RESUBSCRIBE_DEADLINE;
        let (connection, generation) = match self.link.connected(deadline).await {
            Ok(connected) => connected,
            Err(error) => {
                tracing::warn!(%error, "No connection to publish on yet.");
                return;
            }
        };
        let mut current = self.publisher.lock().await;
        let same =
            current.generation == stale.generation && current.channel.id() == stale.channel.id();
        if !same || (current.generation == generation && current.channel.status().connected()) {
            return;
        }
        match open_confirm_channel(&connection).await {
            Ok(channel) => {
                if current.generation == generation {
                    tracing::warn!(
                        "The publishing channel did not come back with the connection; publishing on a new one."
                    );
                }
                let old = std::mem::replace(
                    &mut *current,
                    Publisher {
                        channel,
                        generation,
                    },
                );
                close_when_recovered(old.channel);
            }
            Err(error) => {
                tracing::warn!(%error, "Could not open a new publishing channel yet.");
            }
        }
    }

    async fn publish_one(&self, message: &Prepared) -> Result<(), BusError> {
        let mut attempt = 1;
        loop {
            let publisher = self.publisher().await?;
            let sent = tokio::time::timeout(CONFIRM_TIMEOUT, message.send(&publisher.channel));
            let result = match sent.await {
                Ok(Ok(confirm)) => tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await,
                Ok(Err(error)) => Ok(Err(error)),
                Err(elapsed) => Err(elapsed),
            };
            match result {
                // Not sent or no confirm in time: the connection went while it was
                // pending and lapin may never settle it. Publish again (at least once).
                Err(_) if attempt < PUBLISH_ATTEMPTS => {
                    tracing::warn!(message_id = %message.message_id, attempt, "No publisher confirm in time; publishing again.");
                }
                Err(_) => return Err(message.nacked()),
                Ok(result) => match result {
                    Ok(confirmation) => match confirmed(confirmation) {
                        Confirmed::Stored => return Ok(()),
                        Confirmed::Unroutable => return Err(message.unroutable()),
                        Confirmed::Nacked if attempt < PUBLISH_ATTEMPTS => {
                            tracing::warn!(message_id = %message.message_id, attempt, "Broker nacked a message; publishing it again.");
                        }
                        Confirmed::Nacked => return Err(message.nacked()),
                    },
                    Err(error) if attempt < PUBLISH_ATTEMPTS => {
                        let shown = error.to_string();
                        // Returns the error at once when recovery cannot help (e.g. the
                        // exchange does not exist); otherwise waits for the reconnection.
                        self.recover_publisher(&publisher, error)
                            .await
                            .map_err(|error| message.failed(error))?;
                        tracing::warn!(error = %shown, message_id = %message.message_id, attempt, "Publish failed during a connection loss; publishing again.");
                    }
                    Err(error) => return Err(message.failed(error)),
                },
            }
            attempt += 1;
        }
    }

    async fn publish_batch(&self, messages: &[Prepared]) -> Result<(), BusError> {
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut permanent: Option<BusError> = None;
        let mut attempt = 1;
        while !pending.is_empty() {
            let publisher = self.publisher().await?;
            let mut failed = Vec::new();
            let mut transport_error = None;
            // Send everything first, then collect the confirms: one round trip for
            // the whole batch instead of one per message.
            let mut confirms = Vec::with_capacity(pending.len());
            for &index in &pending {
                let sent =
                    tokio::time::timeout(CONFIRM_TIMEOUT, messages[index].send(&publisher.channel));
                match sent.await {
                    Ok(Ok(confirm)) => confirms.push((index, confirm)),
                    Ok(Err(error)) => {
                        failed.push(index);
                        transport_error.get_or_insert(error);
                    }
                    Err(_) => failed.push(index),
                }
            }
            for (index, confirm) in confirms {
                // A confirm pending when the connection went may never be settled.
                let Ok(confirm) = tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await else {
                    failed.push(index);
                    continue;
                };
                match confirm {
                    Ok(confirmation) => match confirmed(confirmation) {
                        Confirmed::Stored => {}
                        Confirmed::Nacked => failed.push(index),
                        Confirmed::Unroutable => {
                            permanent.get_or_insert_with(|| messages[index].unroutable());
                        }
                    },
                    Err(error) => {
                        failed.push(index);
                        transport_error.get_or_insert(error);
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            failed.sort_unstable();
            let first = &messages[failed[0]];
            if attempt >= PUBLISH_ATTEMPTS {
                return Err(match transport_error {
                    Some(error) => first.failed(error),
                    None => first.nacked(),
                });
            }
            tracing::warn!(
                failed = failed.len(),
                attempt,
                "Part of a batch was not confirmed; publishing it again."
            );
            if let Some(error) = transport_error {
                self.recover_publisher(&publisher, error)
                    .await
                    .map_err(|error| first.failed(error))?;
            }
            pending = failed;
            attempt += 1;
        }
        permanent.map_or(Ok(()), Err)
    }

    fn remember_dead_exchange(&self, queue: &QueueSpec) {
        self.dead_exchanges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(queue.name.clone(), queue.dead_letter_exchange.clone());
    }

    fn dead_exchange_of(&self, queue: &str) -> String {
        self.dead_exchanges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(queue)
            .cloned()
            .unwrap_or_else(|| self.default_dead_exchange.clone())
    }
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), BusError> {
    let kind = match kind {
        ExchangeKind::Direct => lapin::ExchangeKind::Direct,
        ExchangeKind::Topic => lapin::ExchangeKind::Topic,
    };
    channel
        .exchange_declare(
            short("exchange", name)?,
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| BusError::amqp(format!("declare exchange {name:?}"), e))
}

async fn declare_quorum_queue(
    channel: &Channel,
    name: &str,
    mut arguments: FieldTable,
) -> Result<(), BusError> {
    // Quorum: replicated and durable; the type can only be chosen at declaration.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            short("queue", name)?,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .map(drop)
        .map_err(|e| BusError::amqp(format!("declare queue {name:?}"), e))
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), BusError> {
    channel
        .queue_bind(
            short("queue", queue)?,
            short("exchange", exchange)?,
            short("routing key", key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            if is_not_found(&e) {
                BusError::NotFound {
                    what: "exchange",
                    name: exchange.to_owned(),
                }
            } else {
                BusError::amqp(format!("bind queue {queue:?} to {exchange:?} ({key:?})"), e)
            }
        })
}

/// Declares `spec`, its dead-letter exchange and `<queue>.dead` on `channel`.
async fn declare_queue_on(channel: &Channel, spec: &QueueSpec) -> Result<(), BusError> {
    declare_exchange(channel, &spec.dead_letter_exchange, ExchangeKind::Direct).await?;
    let dead = spec.dead_queue();
    declare_quorum_queue(channel, &dead, FieldTable::default()).await?;
    bind(channel, &dead, &spec.dead_letter_exchange, &spec.name).await?;

    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(spec.delivery_limit)),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(spec.dead_letter_exchange.as_str().into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(spec.name.as_str().into()),
    );
    declare_quorum_queue(channel, &spec.name, arguments).await?;
    for binding in &spec.bindings {
        bind(channel, &spec.name, &binding.exchange, &binding.routing_key).await?;
    }
    Ok(())
}

#[async_trait]
impl Bus for RabbitBus {
    async fn declare(&self, topology: &Topology) -> Result<(), BusError> {
        // A failed declaration closes its channel: keep that away from the publisher.
        let channel = self.inner.channel().await?;
        let result = async {
            for exchange in topology.exchanges() {
                declare_exchange(&channel, &exchange.name, exchange.kind).await?;
            }
            for queue in topology.queues() {
                declare_queue_on(&channel, &queue).await?;
                self.inner.remember_dead_exchange(&queue);
            }
            Ok(())
        }
        .await;
        close_quietly(&channel).await;
        result
    }

    async fn declare_queue(&self, queue: &QueueSpec) -> Result<(), BusError> {
        let channel = self.inner.channel().await?;
        let result = declare_queue_on(&channel, queue).await;
        close_quietly(&channel).await;
        if result.is_ok() {
            self.inner.remember_dead_exchange(queue);
        }
        result
    }

    async fn publish(&self, message: Outgoing) -> Result<(), BusError> {
        let prepared = Prepared::from_outgoing(message)?;
        self.inner.publish_one(&prepared).await
    }

    async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), BusError> {
        let prepared = messages
            .into_iter()
            .map(Prepared::from_outgoing)
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.publish_batch(&prepared).await
    }

    async fn subscribe(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, BusError> {
        if prefetch == 0 {
            // 0 means "unlimited" to AMQP: never what a service wants.
            return Err(BusError::Invalid {
                what: "prefetch",
                reason: "must be at least 1".into(),
            });
        }
        let tag = format!("fwdwatch-{}", uuid::Uuid::new_v4());
        let (connection, generation) = self.inner.link.current();
        let (channel, consumer) = Inner::consume(&connection, queue, prefetch, &tag).await?;
        Ok(Box::new(RabbitSubscription {
            inner: self.inner.clone(),
            channel,
            consumer,
            generation,
            queue: queue.to_owned(),
            prefetch,
            tag,
            cancelled: false,
        }))
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, BusError> {
        // A passive declare of a missing queue closes the channel: use a throwaway one.
        let channel = self.inner.channel().await?;
        let checking = channel.queue_declare(
            short("queue", queue)?,
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        );
        let result = tokio::time::timeout(BROKER_REPLY_TIMEOUT, checking).await;
        close_quietly(&channel).await;
        match result {
            Ok(Ok(found)) => Ok(u64::from(found.message_count())),
            Ok(Err(error)) if is_not_found(&error) => Err(BusError::NotFound {
                what: "queue",
                name: queue.to_owned(),
            }),
            Ok(Err(error)) => Err(BusError::amqp(format!("check queue {queue:?}"), error)),
            Err(_) => Err(BusError::TimedOut {
                operation: format!("check queue {queue:?}"),
                after: BROKER_REPLY_TIMEOUT,
            }),
        }
    }

    async fn health(&self) -> Result<(), BusError> {
        let (connection, _) = self.inner.link.current();
        let status = connection.status();
        if !status.connected() {
            return Err(BusError::Disconnected {
                url: self.inner.link.url().to_owned(),
                state: format!("{status:?}"),
            });
        }
        // A channel open/close is a full round trip to the broker.
        let channel = self.inner.channel().await?;
        close_quietly(&channel).await;
        Ok(())
    }
}

struct RabbitSubscription {
    inner: Arc<Inner>,
    /// Shared with every delivery: the channel closes (returning unsettled
    /// messages) once the subscription and all its deliveries are dropped.
    channel: Channel,
    consumer: lapin::Consumer,
    /// The connection generation the consumer lives on: when the connection is
    /// replaced, the subscription consumes again on the new one.
    generation: u64,
    queue: String,
    prefetch: u16,
    tag: String,
    cancelled: bool,
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Result<Incoming, BusError>> {
        loop {
            let inner = self.inner.clone();
            let next = tokio::select! {
                next = self.consumer.next() => next,
                () = inner.link.replaced(self.generation) => {
                    tracing::warn!(queue = %self.queue, "The connection was replaced; consuming on the new one.");
                    if let Err(error) = self.resubscribe().await {
                        return Some(Err(error));
                    }
                    continue;
                }
            };
            match next {
                Some(Ok(delivery)) => return Some(Ok(self.incoming(delivery))),
                Some(Err(error)) => {
                    tracing::warn!(%error, queue = %self.queue, "Consumer error; waiting for the connection to recover.");
                    // Recovery normally re-registers the consumer on the same stream.
                    // It can also stall or fail for this channel — a broker that
                    // listens again before its quorum queues are back answers the
                    // re-registration with NOT_FOUND — so the wait is bounded and a
                    // channel that did not come back is replaced by a new consumer.
                    let recovered =
                        tokio::time::timeout(RECOVERY_WAIT, self.channel.wait_for_recovery(error))
                            .await;
                    if matches!(recovered, Ok(Ok(()))) && self.channel.status().connected() {
                        continue;
                    }
                    if let Err(error) = self.resubscribe().await {
                        return Some(Err(error));
                    }
                }
                // Nobody cancelled us: the broker or a failed recovery closed the
                // channel. Consume again rather than go deaf.
                None if !self.cancelled => {
                    tracing::warn!(queue = %self.queue, "The consumer's channel closed; consuming again.");
                    if let Err(error) = self.resubscribe().await {
                        return Some(Err(error));
                    }
                }
                None => return None,
            }
        }
    }

    async fn cancel(&mut self) {
        if std::mem::replace(&mut self.cancelled, true) {
            return;
        }
        let Ok(tag) = short("consumer tag", &self.tag) else {
            return;
        };
        let cancelling = self
            .channel
            .basic_cancel(tag, BasicCancelOptions::default());
        if let Err(error) = bounded("cancel the consumer", cancelling).await {
            // The channel is gone already: nothing more will be delivered anyway.
            tracing::debug!(%error, queue = %self.queue, "Cancelling the consumer failed.");
        }
    }
}

impl RabbitSubscription {
    /// Opens a new channel and consumer for the queue once the connection is back,
    /// retrying (the queue may still be recovering on the broker) until
    /// [`RESUBSCRIBE_DEADLINE`]; past it the error is returned, the service exits and
    /// its supervisor restarts it. Deliveries taken on the old channel cannot be
    /// settled any more; the broker has returned them to the queue already.
    async fn resubscribe(&mut self) -> Result<(), BusError> {
        let deadline = tokio::time::Instant::now() + RESUBSCRIBE_DEADLINE;
        let mut wait = Duration::from_millis(500);
        loop {
            // The connection in use: lapin's recovered one, or the watchdog's new one.
            let (connection, generation) = self.inner.link.current();
            let status = connection.status();
            let attempt = if status.connected() {
                Inner::consume(&connection, &self.queue, self.prefetch, &self.tag).await
            } else {
                Err(BusError::Disconnected {
                    url: self.inner.link.url().to_owned(),
                    state: format!("{status:?}"),
                })
            };
            match attempt {
                Ok((channel, consumer)) => {
                    let old = std::mem::replace(&mut self.channel, channel);
                    self.consumer = consumer;
                    self.generation = generation;
                    close_when_recovered(old);
                    tracing::info!(queue = %self.queue, "Consuming again after the connection loss.");
                    return Ok(());
                }
                Err(error) if tokio::time::Instant::now() + wait < deadline => {
                    tracing::debug!(%error, queue = %self.queue, "Not consuming yet; trying again.");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn incoming(&self, delivery: lapin::message::Delivery) -> Incoming {
        let raw_headers = delivery.properties.headers().clone().unwrap_or_default();
        let headers: BTreeMap<String, String> = raw_headers
            .inner()
            .iter()
            .filter_map(|(key, value)| Some((key.as_str().to_owned(), header_text(value)?)))
            .collect();
        let delivery_count = raw_headers
            .inner()
            .get(HEADER_DELIVERY_COUNT)
            .and_then(header_count)
            .unwrap_or(0);
        Incoming {
            headers,
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned()),
            message_type: delivery
                .properties
                .kind()
                .as_ref()
                .map(|s| s.as_str().to_owned()),
            exchange: delivery.exchange.as_str().to_owned(),
            routing_key: delivery.routing_key.as_str().to_owned(),
            redelivered: delivery.redelivered,
            delivery_count,
            queue: self.queue.clone(),
            body: delivery.data,
            acker: Box::new(RabbitAcker {
                inner: self.inner.clone(),
                _channel: self.channel.clone(),
                acker: delivery.acker,
                raw_headers,
                queue: self.queue.clone(),
            }),
        }
    }
}

struct RabbitAcker {
    inner: Arc<Inner>,
    /// Keeps the subscription's channel open until this delivery is settled.
    _channel: Channel,
    acker: lapin::Acker,
    /// The original headers with their AMQP types, copied into a dead letter.
    raw_headers: FieldTable,
    queue: String,
}

impl RabbitAcker {
    fn outcome(&self, what: &str, result: lapin::Result<bool>) -> Result<(), BusError> {
        match result {
            Ok(true) => Ok(()),
            // lapin 4: false = already settled, or the channel closed/recovered since.
            Ok(false) => Err(BusError::Unsettled {
                queue: self.queue.clone(),
                reason: format!("{what}: already settled or its channel closed"),
            }),
            Err(error) => Err(BusError::Unsettled {
                queue: self.queue.clone(),
                reason: format!("{what}: {error}"),
            }),
        }
    }

    async fn reject(&self, requeue: bool) -> Result<(), BusError> {
        let rejecting = self.acker.reject(BasicRejectOptions { requeue });
        let result = self.bounded("reject", rejecting).await?;
        self.outcome("reject", result)
    }

    /// A settlement bounded by `BROKER_REPLY_TIMEOUT`: on a connection that will
    /// never answer, the delivery is given up (the broker redelivers it once the
    /// connection is gone) rather than holding its handler task forever.
    async fn bounded(
        &self,
        what: &str,
        settling: impl std::future::Future<Output = lapin::Result<bool>>,
    ) -> Result<lapin::Result<bool>, BusError> {
        tokio::time::timeout(BROKER_REPLY_TIMEOUT, settling)
            .await
            .map_err(|_| BusError::Unsettled {
                queue: self.queue.clone(),
                reason: format!("{what}: no answer within {BROKER_REPLY_TIMEOUT:?}"),
            })
    }
}

#[async_trait]
impl Settle for RabbitAcker {
    async fn ack(&mut self) -> Result<(), BusError> {
        let result = self
            .bounded("ack", self.acker.ack(BasicAckOptions::default()))
            .await?;
        self.outcome("ack", result)
    }

    async fn requeue(&mut self) -> Result<(), BusError> {
        self.reject(true).await
    }

    async fn dead_letter(&mut self, copy: DeadLetter) -> Result<(), BusError> {
        let exchange = self.inner.dead_exchange_of(&copy.queue);
        let published = async {
            // Keep the original headers with their types, add ours.
            let mut headers = self.raw_headers.clone();
            let mut kept: BTreeMap<ShortString, AMQPValue> = headers.inner().clone();
            kept.remove(HEADER_DELIVERY_COUNT);
            headers = FieldTable::from(kept);
            for (key, value) in &copy.headers {
                // Ours always win (a message dead-lettered twice gets the new reason).
                if key.starts_with("x-fwdwatch-dead-") || !headers.contains_key(key) {
                    headers.insert(
                        short("header name", key)?,
                        AMQPValue::LongString(value.as_bytes().into()),
                    );
                }
            }
            let message = Prepared {
                exchange: short("exchange", &exchange)?,
                routing_key: short("routing key", &copy.queue)?,
                properties: message_properties(
                    copy.message_id.as_deref(),
                    copy.message_type.as_deref(),
                    headers,
                )?,
                body: copy.body,
                message_id: copy.message_id.clone().unwrap_or_default(),
            };
            self.inner.publish_one(&message).await
        }
        .await;
        match published {
            Ok(()) => self.ack().await,
            Err(error) => {
                tracing::warn!(%error, queue = %self.queue, "Dead-letter copy not published; rejecting so the queue's dead-letter route takes it.");
                self.reject(false).await
            }
        }
    }
}
