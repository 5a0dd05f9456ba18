//! `MemoryBus`: the in-process twin of RabbitMQ, for the CLI's all-in-one mode and
//! for tests that need no broker.
//!
//! It keeps the semantics services rely on, not the wire: direct and topic
//! exchanges (`*`, `#`), queues that live as long as the bus, `mandatory`-style
//! unroutable errors, prefetch, manual acks, redelivery of unsettled deliveries
//! (`redelivered = true`, `delivery_count + 1`) when a subscription and its
//! deliveries are dropped or on retry, the quorum-queue delivery limit
//! (dead-lettered with `x-first-death-reason: delivery_limit`), dead-lettering with
//! our reason, and ready-message counts. The same contract tests run against it and
//! against RabbitMQ (`shared/tests/bus_*.rs`).
//!
//! All state sits behind one `std::sync::Mutex` (never held across an await); a
//! `Notify` wakes waiting subscriptions whenever anything changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::topology::topic_matches;
use super::{
    Bus, BusError, DeadLetter, ExchangeKind, HEADER_DELIVERY_COUNT, HEADER_FIRST_DEATH_REASON,
    Incoming, Outgoing, QueueSpec, Settle, Subscription, Topology,
};

/// An in-memory [`Bus`]. Cheap to clone; clones share the same exchanges and queues.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus").finish_non_exhaustive()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes subscriptions after a publish, a requeue or a freed prefetch slot.
    changed: Notify,
    next_tag: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a
        // way that matters more than stopping the whole bus would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
struct State {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Queue>,
}

struct Exchange {
    kind: ExchangeKind,
    /// (queue, binding key)
    bindings: Vec<(String, String)>,
}

struct Queue {
    ready: VecDeque<Stored>,
    delivery_limit: Option<u32>,
    /// The `x-dead-letter-exchange`; the routing key is the queue's name.
    dead_letter_exchange: Option<String>,
}

/// A message as a queue holds it.
#[derive(Clone)]
struct Stored {
    exchange: String,
    routing_key: String,
    message_id: Option<String>,
    message_type: Option<String>,
    body: Vec<u8>,
    headers: BTreeMap<String, String>,
    redelivered: bool,
    delivery_count: u32,
}

impl State {
    /// The queues a message reaches, or why it reaches none.
    fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: &str,
    ) -> Result<Vec<String>, BusError> {
        // The default exchange routes straight to the queue named by the key.
        if exchange.is_empty() {
            if self.queues.contains_key(routing_key) {
                return Ok(vec![routing_key.to_owned()]);
            }
        } else {
            let Some(target) = self.exchanges.get(exchange) else {
                return Err(BusError::NotFound {
                    what: "exchange",
                    name: exchange.to_owned(),
                });
            };
            let mut queues: Vec<String> = target
                .bindings
                .iter()
                .filter(|(_, key)| match target.kind {
                    ExchangeKind::Direct => key == routing_key,
                    ExchangeKind::Topic => topic_matches(key, routing_key),
                })
                .map(|(queue, _)| queue.clone())
                .filter(|queue| self.queues.contains_key(queue))
                .collect();
            queues.sort();
            queues.dedup();
            if !queues.is_empty() {
                return Ok(queues);
            }
        }
        Err(BusError::Unroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            message_id: message_id.to_owned(),
        })
    }

    fn deliver(
        &mut self,
        exchange: &str,
        routing_key: &str,
        stored: &Stored,
    ) -> Result<(), BusError> {
        let id = stored.message_id.as_deref().unwrap_or("");
        for queue in self.route(exchange, routing_key, id)? {
            if let Some(queue) = self.queues.get_mut(&queue) {
                let mut copy = stored.clone();
                copy.exchange = exchange.to_owned();
                copy.routing_key = routing_key.to_owned();
                copy.redelivered = false;
                copy.delivery_count = 0;
                queue.ready.push_back(copy);
            }
        }
        Ok(())
    }

    /// What the broker does with a message taken back from a consumer (reject with
    /// requeue, consumer gone): count the return, dead-letter it past the limit.
    fn give_back(&mut self, queue_name: &str, mut stored: Stored) {
        let Some(queue) = self.queues.get_mut(queue_name) else {
            return; // queue deleted meanwhile: the message goes with it
        };
        stored.redelivered = true;
        stored.delivery_count = stored.delivery_count.saturating_add(1);
        match queue.delivery_limit {
            Some(limit) if stored.delivery_count > limit => {
                self.broker_dead_letter(queue_name, stored, "delivery_limit");
            }
            // Quorum queues put returned messages back at the head.
            _ => queue.ready.push_front(stored),
        }
    }

    /// The queue's own dead-letter route (`x-dead-letter-exchange`), as RabbitMQ
    /// applies it: routing key = the queue name, `x-first-death-*` headers.
    fn broker_dead_letter(&mut self, queue_name: &str, mut stored: Stored, reason: &str) {
        let Some(exchange) = self
            .queues
            .get(queue_name)
            .and_then(|q| q.dead_letter_exchange.clone())
        else {
            return; // no dead-letter route: the broker drops it too
        };
        stored.headers.remove(HEADER_DELIVERY_COUNT);
        stored
            .headers
            .entry(HEADER_FIRST_DEATH_REASON.into())
            .or_insert_with(|| reason.to_owned());
        stored
            .headers
            .entry("x-first-death-queue".into())
            .or_insert_with(|| queue_name.to_owned());
        stored
            .headers
            .entry("x-first-death-exchange".into())
            .or_insert_with(|| stored.exchange.clone());
        // Unroutable dead letters are dropped, as RabbitMQ does.
        let _ = self.deliver(&exchange, queue_name, &stored);
    }

    fn declare_queue(&mut self, spec: &QueueSpec) -> Result<(), BusError> {
        // Like RabbitMQ: the dead-letter exchange is created by whoever declares.
        self.exchanges
            .entry(spec.dead_letter_exchange.clone())
            .or_insert_with(|| Exchange {
                kind: ExchangeKind::Direct,
                bindings: Vec::new(),
            });
        let dead = spec.dead_queue();
        self.queues.entry(dead.clone()).or_insert_with(|| Queue {
            ready: VecDeque::new(),
            delivery_limit: None,
            dead_letter_exchange: None,
        });
        self.bind(&dead, &spec.dead_letter_exchange, &spec.name)?;
        match self.queues.get(&spec.name) {
            Some(existing)
                if existing.delivery_limit != Some(spec.delivery_limit)
                    || existing.dead_letter_exchange.as_deref()
                        != Some(spec.dead_letter_exchange.as_str()) =>
            {
                return Err(BusError::Invalid {
                    what: "queue declaration",
                    reason: format!(
                        "queue {:?} exists with other arguments (x-delivery-limit or x-dead-letter-exchange)",
                        spec.name
                    ),
                });
            }
            Some(_) => {}
            None => {
                self.queues.insert(
                    spec.name.clone(),
                    Queue {
                        ready: VecDeque::new(),
                        delivery_limit: Some(spec.delivery_limit),
                        dead_letter_exchange: Some(spec.dead_letter_exchange.clone()),
                    },
                );
            }
        }
        for binding in &spec.bindings {
            self.bind(&spec.name, &binding.exchange, &binding.routing_key)?;
        }
        Ok(())
    }

    fn bind(&mut self, queue: &str, exchange: &str, key: &str) -> Result<(), BusError> {
        let Some(target) = self.exchanges.get_mut(exchange) else {
            return Err(BusError::NotFound {
                what: "exchange",
                name: exchange.to_owned(),
            });
        };
        let binding = (queue.to_owned(), key.to_owned());
        if !target.bindings.contains(&binding) {
            target.bindings.push(binding);
        }
        Ok(())
    }
}

fn stored_from(message: &Outgoing) -> Stored {
    Stored {
        exchange: message.exchange.clone(),
        routing_key: message.routing_key.clone(),
        message_id: Some(message.message_id.clone()),
        message_type: Some(message.message_type.clone()),
        body: message.body.clone(),
        headers: message.headers.clone(),
        redelivered: false,
        delivery_count: 0,
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn declare(&self, topology: &Topology) -> Result<(), BusError> {
        {
            let mut state = self.inner.lock();
            for spec in topology.exchanges() {
                match state.exchanges.get(&spec.name) {
                    Some(existing) if existing.kind != spec.kind => {
                        return Err(BusError::Invalid {
                            what: "exchange declaration",
                            reason: format!("exchange {:?} exists with another type", spec.name),
                        });
                    }
                    Some(_) => {}
                    None => {
                        state.exchanges.insert(
                            spec.name.clone(),
                            Exchange {
                                kind: spec.kind,
                                bindings: Vec::new(),
                            },
                        );
                    }
                }
            }
            for queue in topology.queues() {
                state.declare_queue(&queue)?;
            }
        }
        Ok(())
    }

    async fn declare_queue(&self, queue: &QueueSpec) -> Result<(), BusError> {
        self.inner.lock().declare_queue(queue)
    }

    async fn publish(&self, message: Outgoing) -> Result<(), BusError> {
        let stored = stored_from(&message);
        self.inner
            .lock()
            .deliver(&message.exchange, &message.routing_key, &stored)?;
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), BusError> {
        // Like the broker: each message is routed on its own; the first failure is
        // reported after the others were tried.
        let mut first_error = None;
        {
            let mut state = self.inner.lock();
            for message in &messages {
                let stored = stored_from(message);
                if let Err(error) = state.deliver(&message.exchange, &message.routing_key, &stored)
                {
                    first_error.get_or_insert(error);
                }
            }
        }
        self.inner.changed.notify_waiters();
        first_error.map_or(Ok(()), Err)
    }

    async fn subscribe(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, BusError> {
        if prefetch == 0 {
            return Err(BusError::Invalid {
                what: "prefetch",
                reason: "must be at least 1".into(),
            });
        }
        if !self.inner.lock().queues.contains_key(queue) {
            return Err(BusError::NotFound {
                what: "queue",
                name: queue.to_owned(),
            });
        }
        Ok(Box::new(MemorySubscription {
            shared: Arc::new(Consumer {
                bus: self.inner.clone(),
                queue: queue.to_owned(),
                unacked: Mutex::new(HashMap::new()),
            }),
            prefetch: usize::from(prefetch),
            cancelled: false,
        }))
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, BusError> {
        match self.inner.lock().queues.get(queue) {
            Some(q) => Ok(q.ready.len() as u64),
            None => Err(BusError::NotFound {
                what: "queue",
                name: queue.to_owned(),
            }),
        }
    }

    async fn health(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// One consumer's view: the deliveries it holds. Shared by the subscription and its
/// deliveries, so unsettled messages go back only when all of them are gone — as
/// with a RabbitMQ channel, which closes when its last user drops it.
struct Consumer {
    bus: Arc<Inner>,
    queue: String,
    unacked: Mutex<HashMap<u64, Stored>>,
}

impl Consumer {
    fn unacked(&self) -> MutexGuard<'_, HashMap<u64, Stored>> {
        self.unacked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self, tag: u64) -> Result<Stored, BusError> {
        self.unacked()
            .remove(&tag)
            .ok_or_else(|| BusError::Unsettled {
                queue: self.queue.clone(),
                reason: "already settled".into(),
            })
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let held: Vec<Stored> = self.unacked().drain().map(|(_, stored)| stored).collect();
        if held.is_empty() {
            return;
        }
        let mut state = self.bus.lock();
        for stored in held {
            state.give_back(&self.queue, stored);
        }
        drop(state);
        self.bus.changed.notify_waiters();
    }
}

struct MemorySubscription {
    shared: Arc<Consumer>,
    prefetch: usize,
    cancelled: bool,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Result<Incoming, BusError>> {
        loop {
            if self.cancelled {
                return None;
            }
            // Register for wake-ups before looking, so a publish between the look
            // and the wait is not missed.
            let notified = self.shared.bus.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.shared.bus.lock();
                let Some(queue) = state.queues.get_mut(&self.shared.queue) else {
                    return Some(Err(BusError::NotFound {
                        what: "queue",
                        name: self.shared.queue.clone(),
                    }));
                };
                let mut unacked = self.shared.unacked();
                if unacked.len() < self.prefetch
                    && let Some(stored) = queue.ready.pop_front()
                {
                    let tag = self.shared.bus.next_tag.fetch_add(1, Ordering::Relaxed);
                    unacked.insert(tag, stored.clone());
                    return Some(Ok(incoming(&self.shared, tag, stored)));
                }
            }
            notified.await;
        }
    }

    async fn cancel(&mut self) {
        self.cancelled = true;
    }
}

fn incoming(consumer: &Arc<Consumer>, tag: u64, stored: Stored) -> Incoming {
    let mut headers = stored.headers;
    if stored.delivery_count > 0 {
        headers.insert(
            HEADER_DELIVERY_COUNT.into(),
            stored.delivery_count.to_string(),
        );
    }
    Incoming {
        body: stored.body,
        headers,
        message_id: stored.message_id,
        message_type: stored.message_type,
        exchange: stored.exchange,
        routing_key: stored.routing_key,
        redelivered: stored.redelivered,
        delivery_count: stored.delivery_count,
        queue: consumer.queue.clone(),
        acker: Box::new(MemoryAcker {
            consumer: consumer.clone(),
            tag,
        }),
    }
}

struct MemoryAcker {
    consumer: Arc<Consumer>,
    tag: u64,
}

impl MemoryAcker {
    fn settled(&self) {
        // A freed prefetch slot may unblock the subscription.
        self.consumer.bus.changed.notify_waiters();
    }
}

#[async_trait]
impl Settle for MemoryAcker {
    async fn ack(&mut self) -> Result<(), BusError> {
        self.consumer.take(self.tag)?;
        self.settled();
        Ok(())
    }

    async fn requeue(&mut self) -> Result<(), BusError> {
        let stored = self.consumer.take(self.tag)?;
        self.consumer
            .bus
            .lock()
            .give_back(&self.consumer.queue, stored);
        self.settled();
        Ok(())
    }

    async fn dead_letter(&mut self, copy: DeadLetter) -> Result<(), BusError> {
        let original = self.consumer.take(self.tag)?;
        {
            let mut state = self.consumer.bus.lock();
            let exchange = state
                .queues
                .get(&copy.queue)
                .and_then(|q| q.dead_letter_exchange.clone());
            let published = match &exchange {
                Some(exchange) => {
                    let stored = Stored {
                        exchange: exchange.clone(),
                        routing_key: copy.queue.clone(),
                        message_id: copy.message_id,
                        message_type: copy.message_type,
                        body: copy.body,
                        headers: copy.headers,
                        redelivered: false,
                        delivery_count: 0,
                    };
                    state.deliver(exchange, &copy.queue, &stored)
                }
                None => Err(BusError::NotFound {
                    what: "dead-letter exchange of queue",
                    name: copy.queue.clone(),
                }),
            };
            if let Err(error) = published {
                tracing::warn!(%error, queue = %copy.queue, "Dead-letter copy not published; rejecting instead.");
                state.broker_dead_letter(&copy.queue, original, "rejected");
            }
        }
        self.settled();
        Ok(())
    }
}
