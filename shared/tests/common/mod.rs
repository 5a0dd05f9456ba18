//! The bus contract, as tests every `Bus` implementation must pass.
//!
//! Each `pub async fn` here takes a bus and a fresh topology (unique namespace) and
//! checks one promise of `fwdwatch_shared::bus`. `bus_rabbitmq.rs` runs them against
//! the real broker, `bus_memory.rs` against `MemoryBus`, through the same
//! `contract_tests!` list, so the in-memory twin cannot quietly diverge.

#![allow(dead_code)] // each test binary uses its own subset of the helpers

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fwdwatch_shared::bus::{
    self, Bus, BusError, ConsumerOptions, DeliveryInfo, HEADER_DEAD_QUEUE, HEADER_DEAD_REASON,
    HEADER_FIRST_DEATH_REASON, HandleError, Handler, Incoming, Outgoing, Subscription, Topology,
    outgoing, run_consumer,
};
use fwdwatch_shared::contracts::{AlertEvent, ScanJob, Signal, decode};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

/// Every contract test, for `contract_tests!` in each test binary.
#[macro_export]
macro_rules! for_each_contract {
    ($callback:ident) => {
        $callback!(
            confirmed_round_trip,
            publish_all_delivers_everything,
            routing_follows_the_topology,
            unroutable_publish_is_an_error,
            missing_exchange_is_an_error_and_publishing_recovers,
            malformed_message_is_dead_lettered_and_nothing_else_lost,
            unacked_delivery_is_redelivered_to_another_consumer,
            handler_retry_ends_in_dead_queue_at_the_limit,
            handler_reject_goes_straight_to_dead_queue,
            broker_dead_letters_past_the_delivery_limit,
            prefetch_bounds_unsettled_deliveries,
            trace_context_survives_a_hop,
            shutdown_lets_in_flight_work_finish_and_ack,
        );
    };
}

/// A namespace no other test (or run) uses, with a small delivery limit.
pub fn unique_topology() -> Topology {
    Topology::new(format!("t-{}", uuid::Uuid::new_v4())).with_delivery_limit(3)
}

/// Extra queues the contracts declare, so the RabbitMQ runner can delete them.
pub fn extra_queues(topo: &Topology) -> Vec<String> {
    vec![events_queue(topo)]
}

fn events_queue(topo: &Topology) -> String {
    format!("{}.test.events", topo.namespace())
}

pub fn job(n: u32) -> ScanJob {
    let mut job = ScanJob::example();
    job.job_id = format!("run-1:tenant-{n}");
    job.tenant.id = format!("tenant-{n}");
    job
}

fn scan(topo: &Topology, job: &ScanJob) -> Outgoing {
    outgoing(&topo.scan_exchange(), bus::ROUTE_JOB, job)
}

const WAIT: Duration = Duration::from_secs(10);

/// The next delivery, failing the test if none comes within a few seconds.
pub async fn recv(subscription: &mut Box<dyn Subscription>) -> Incoming {
    match tokio::time::timeout(WAIT, subscription.next()).await {
        Ok(Some(Ok(incoming))) => incoming,
        Ok(Some(Err(error))) => panic!("subscription failed: {error}"),
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("no delivery within {WAIT:?}"),
    }
}

/// Asserts that nothing is delivered for `quiet`.
pub async fn expect_nothing(subscription: &mut Box<dyn Subscription>, quiet: Duration) {
    if let Ok(Some(result)) = tokio::time::timeout(quiet, subscription.next()).await {
        panic!("expected no delivery, got {result:?}");
    }
}

/// Polls `queue_depth` until it equals `expected`.
pub async fn wait_for_depth(bus: &Arc<dyn Bus>, queue: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let depth = bus.queue_depth(queue).await.expect("queue depth");
        if depth == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} has {depth} ready messages, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn options(topo: &Topology, prefetch: u16) -> ConsumerOptions {
    ConsumerOptions {
        prefetch,
        delivery_limit: topo.delivery_limit(),
        retry_delay: Duration::from_millis(20),
    }
}

/// Records what it handles and answers as told.
struct Recorder {
    seen: Mutex<Vec<(String, u32)>>,
    answer: fn() -> Result<(), HandleError>,
}

impl Recorder {
    fn new(answer: fn() -> Result<(), HandleError>) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            answer,
        })
    }

    fn seen(&self) -> Vec<(String, u32)> {
        self.seen.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Handler<ScanJob> for Recorder {
    async fn handle(&self, job: ScanJob, delivery: &DeliveryInfo) -> Result<(), HandleError> {
        self.seen
            .lock()
            .expect("lock")
            .push((job.job_id, delivery.delivery_count));
        (self.answer)()
    }
}

/// Runs `run_consumer` on the scan queue in the background.
fn spawn_consumer<H: Handler<ScanJob>>(
    bus: &Arc<dyn Bus>,
    topo: &Topology,
    prefetch: u16,
    handler: Arc<H>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), BusError>>,
) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let bus = bus.clone();
        let queue = topo.scan_jobs_queue();
        let options = options(topo, prefetch);
        let shutdown = shutdown.clone();
        async move { run_consumer::<ScanJob, H>(bus, &queue, options, handler, shutdown).await }
            // A spawned task does not inherit the test's scoped subscriber; in a
            // service the subscriber is global and this is a no-op.
            .with_current_subscriber()
    });
    (shutdown, task)
}

async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<Result<(), BusError>>) {
    shutdown.cancel();
    let result = tokio::time::timeout(WAIT, task)
        .await
        .expect("consumer stops on shutdown")
        .expect("consumer task did not panic");
    result.expect("consumer returns Ok on shutdown");
}

// ---------------------------------------------------------------------------
// The contracts
// ---------------------------------------------------------------------------

/// A scan job published with confirms comes out of `scan.jobs` equal, with its id,
/// type and content type intact.
pub async fn confirmed_round_trip(bus: Arc<dyn Bus>, topo: Topology) {
    bus.declare(&topo).await.expect("declare");
    bus.declare(&topo).await.expect("declare is idempotent");
    bus.health().await.expect("healthy");
    let sent = job(1);
    bus.publish(scan(&topo, &sent)).await.expect("publish");
    wait_for_depth(&bus, &topo.scan_jobs_queue(), 1).await;

    let mut sub = bus
        .subscribe(&topo.scan_jobs_queue(), 4)
        .await
        .expect("subscribe");
    let got = recv(&mut sub).await;
    assert_eq!(got.queue, topo.scan_jobs_queue());
    assert_eq!(got.exchange, topo.scan_exchange());
    assert_eq!(got.routing_key, bus::ROUTE_JOB);
    assert_eq!(got.message_id.as_deref(), Some(sent.job_id.as_str()));
    assert_eq!(got.message_type.as_deref(), Some("scan_job"));
    assert!(!got.redelivered);
    assert_eq!(got.delivery_count, 0);
    let decoded: ScanJob = decode(&got.body).expect("decodes");
    assert_eq!(decoded, sent);
    got.ack().await.expect("ack");
    expect_nothing(&mut sub, Duration::from_millis(200)).await;
    assert_eq!(
        bus.queue_depth(&topo.scan_jobs_queue())
            .await
            .expect("depth"),
        0
    );
}

/// A pipelined batch is confirmed as a whole and every message arrives.
pub async fn publish_all_delivers_everything(bus: Arc<dyn Bus>, topo: Topology) {
    bus.declare(&topo).await.expect("declare");
    let jobs: Vec<ScanJob> = (0..20).map(job).collect();
    bus.publish_all(jobs.iter().map(|j| scan(&topo, j)).collect())
        .await
        .expect("publish_all");
    wait_for_depth(&bus, &topo.scan_jobs_queue(), 20).await;
    let mut sub = bus
        .subscribe(&topo.scan_jobs_queue(), 32)
        .await
        .expect("subscribe");
    let mut ids = BTreeSet::new();
    for _ in 0..20 {
        let got = recv(&mut sub).await;
        ids.insert(decode::<ScanJob>(&got.body).expect("decodes").job_id);
        got.ack().await.expect("ack");
    }
    assert_eq!(ids, jobs.into_iter().map(|j| j.job_id).collect());
}

/// Findings of every route reach the notifier queue; an extra queue on the events
/// exchange receives only what its binding selects; queue names follow the namespace.
pub async fn routing_follows_the_topology(bus: Arc<dyn Bus>, topo: Topology) {
    bus.declare(&topo).await.expect("declare");
    let extra = events_queue(&topo);
    bus.declare_queue(
        &topo
            .queue(extra.clone())
            .bind(topo.events_exchange(), "alert.*"),
    )
    .await
    .expect("declare extra queue");

    let alert = AlertEvent::example();
    bus.publish(outgoing(
        &topo.findings_exchange(),
        &bus::detection_route(Signal::InboxRule),
        &alert,
    ))
    .await
    .expect("detection route");
    bus.publish(outgoing(
        &topo.findings_exchange(),
        bus::ROUTE_SUMMARY,
        &alert,
    ))
    .await
    .expect("summary route");
    wait_for_depth(&bus, &topo.notifier_findings_queue(), 2).await;

    bus.publish(outgoing(
        &topo.events_exchange(),
        &bus::alert_route("new"),
        &alert,
    ))
    .await
    .expect("alert reaches the extra queue");
    let audit = bus
        .publish(outgoing(
            &topo.events_exchange(),
            &bus::audit_route("remove"),
            &alert,
        ))
        .await;
    assert!(
        matches!(audit, Err(BusError::Unroutable { .. })),
        "audit.* is not bound: {audit:?}"
    );
    wait_for_depth(&bus, &extra, 1).await;
    assert_eq!(
        bus.queue_depth(&topo.dead_queue(&extra))
            .await
            .expect("dead queue exists"),
        0
    );

    bus.publish(outgoing(
        &topo.commands_exchange(),
        bus::ROUTE_COMMAND,
        &alert,
    ))
    .await
    .expect("command route");
    wait_for_depth(&bus, &topo.actioner_commands_queue(), 1).await;
    assert_eq!(
        bus.queue_depth(&topo.scan_jobs_queue())
            .await
            .expect("depth"),
        0
    );
    assert!(matches!(
        bus.queue_depth(&format!("{}.nope", topo.namespace())).await,
        Err(BusError::NotFound { .. })
    ));
}

/// With no queue bound for the routing key, publish fails instead of losing the message.
pub async fn unroutable_publish_is_an_error(bus: Arc<dyn Bus>, topo: Topology) {
    bus.declare(&topo).await.expect("declare");
    let result = bus
        .publish(outgoing(&topo.events_exchange(), "alert.new", &job(1)))
        .await;
    assert!(
        matches!(result, Err(BusError::Unroutable { .. })),
        "{result:?}"
    );
    let result = bus
        .publish(outgoing(&topo.scan_exchange(), "not-job", &job(1)))
        .await;
    assert!(
        matches!(result, Err(BusError::Unroutable { .. })),
        "{result:?}"
    );
    let result = bus
        .publish_all(vec![
            scan(&topo, &job(2)),
            outgoing(&topo.scan_exchange(), "nope", &job(3)),
        ])
        .await;
    assert!(
        matches!(result, Err(BusError::Unroutable { .. })),
        "{result:?}"
    );
    // The routable one of the batch went through.
    wait_for_depth(&bus, &topo.scan_jobs_queue(), 1).await;
}

/// Publishing to a missing exchange fails, and later publishes still work (the
/// RabbitMQ publisher channel the broker closed is replaced).
pub async fn missing_exchange_is_an_error_and_publishing_recovers(
    bus: Arc<dyn Bus>,
    topo: Topology,
) {
    bus.declare(&topo).await.expect("declare");
    let missing = format!("{}.missing", topo.namespace());
    let result = bus.publish(outgoing(&missing, "job", &job(1))).await;
    assert!(
        matches!(result, Err(BusError::NotFound { .. })),
        "{result:?}"
    );
    bus.publish(scan(&topo, &job(2)))
        .await
        .expect("publishing works again");
    wait_for_depth(&bus, &topo.scan_jobs_queue(), 1).await;
}

/// A body that does not decode is dead-lettered with the reason; the good messages
/// around it are all handled.
pub async fn malformed_message_is_dead_lettered_and_nothing_else_lost(
    bus: Arc<dyn Bus>,
    topo: Topology,
) {
    bus.declare(&topo).await.expect("declare");
    let garbage = Outgoing {
        exchange: topo.scan_exchange(),
        routing_key: bus::ROUTE_JOB.into(),
        message_id: "garbage-1".into(),
        message_type: "scan_job".into(),
        body: b"{not json".to_vec(),
        headers: [("x-origin".to_owned(), "test".to_owned())].into(),
    };
    let mut future_version = serde_json::to_value(job(99)).expect("json");
    future_version["version"] = serde_json::json!(2);
    let future_version = Outgoing {
        message_id: "v2-1".into(),
        body: serde_json::to_vec(&future_version).expect("json"),
        headers: Default::default(),
        ..garbage.clone()
    };
    bus.publish(scan(&topo, &job(1))).await.expect("publish");
    bus.publish(garbage).await.expect("publish");
    bus.publish(scan(&topo, &job(2))).await.expect("publish");
    bus.publish(future_version).await.expect("publish");
    bus.publish(scan(&topo, &job(3))).await.expect("publish");

    let recorder = Recorder::new(|| Ok(()));
    let (shutdown, task) = spawn_consumer(&bus, &topo, 4, recorder.clone());
    wait_for("three good jobs", || recorder.seen().len() == 3).await;
    wait_for_depth(&bus, &topo.dead_queue(&topo.scan_jobs_queue()), 2).await;
    stop(shutdown, task).await;

    let handled: BTreeSet<String> = recorder.seen().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        handled,
        ["run-1:tenant-1", "run-1:tenant-2", "run-1:tenant-3"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        bus.queue_depth(&topo.scan_jobs_queue())
            .await
            .expect("depth"),
        0
    );

    let mut dead = bus
        .subscribe(&topo.dead_queue(&topo.scan_jobs_queue()), 4)
        .await
        .expect("subscribe to the dead queue");
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let letter = recv(&mut dead).await;
        assert_eq!(
            letter.headers.get(HEADER_DEAD_QUEUE),
            Some(&topo.scan_jobs_queue())
        );
        let reason = letter
            .headers
            .get(HEADER_DEAD_REASON)
            .cloned()
            .expect("reason header");
        assert!(reason.contains("undecodable"), "{reason}");
        if letter.message_id.as_deref() == Some("garbage-1") {
            assert_eq!(letter.body, b"{not json", "the body is kept as it was");
            assert_eq!(
                letter.headers.get("x-origin").map(String::as_str),
                Some("test")
            );
        }
        reasons.push((letter.message_id.clone().unwrap_or_default(), reason));
        letter.ack().await.expect("ack");
    }
    reasons.sort();
    assert_eq!(reasons[0].0, "garbage-1");
    assert!(
        reasons[0].1.contains("not a valid scan_job"),
        "{}",
        reasons[0].1
    );
    assert_eq!(reasons[1].0, "v2-1");
    assert!(
        reasons[1].1.contains("unsupported version 2"),
        "{}",
        reasons[1].1
    );
}

/// A delivery whose consumer goes away without acking goes to another consumer,
/// marked redelivered.
pub async fn unacked_delivery_is_redelivered_to_another_consumer(
    bus: Arc<dyn Bus>,
    topo: Topology,
) {
    bus.declare(&topo).await.expect("declare");
    let sent = job(7);
    bus.publish(scan(&topo, &sent)).await.expect("publish");

    let mut first = bus
        .subscribe(&topo.scan_jobs_queue(), 1)
        .await
        .expect("subscribe");
    let taken = recv(&mut first).await;
    assert!(!taken.redelivered);
    let mut second = bus
        .subscribe(&topo.scan_jobs_queue(), 1)
        .await
        .expect("subscribe");
    expect_nothing(&mut second, Duration::from_millis(200)).await;

    // The first consumer dies: its channel closes with the delivery unsettled.
    drop(taken);
    drop(first);

    let again = recv(&mut second).await;
    assert!(again.redelivered, "{again:?}");
    assert_eq!(again.delivery_count, 1);
    assert_eq!(decode::<ScanJob>(&again.body).expect("decodes"), sent);
    again.ack().await.expect("ack");
    expect_nothing(&mut second, Duration::from_millis(200)).await;
}

/// A handler that keeps answering Retry sees the message `delivery_limit` times,
/// then it lands in `<queue>.dead` carrying the handler's reason.
pub async fn handler_retry_ends_in_dead_queue_at_the_limit(bus: Arc<dyn Bus>, topo: Topology) {
    bus.declare(&topo).await.expect("declare");
    bus.publish(scan(&topo, &job(5))).await.expect("publish");

    let recorder = Recorder::new(|| Err(HandleError::Retry(anyhow::anyhow!("graph answered 503"))));
    let (shutdown, task) = spawn_consumer(&bus, &topo, 2, recorder.clone());
    let dead_queue = topo.dead_queue(&topo.scan_jobs_queue());
    wait_for_depth(&bus, &dead_queue, 1).await;
    stop(shutdown, task).await;

    let counts: Vec<u32> = recorder
        .seen()
        .into_iter()
        .map(|(_, count)| count)
        .collect();
    assert_eq!(
        counts,
        vec![0, 1, 2],
        "delivery limit is {}",
        topo.delivery_limit()
    );
    let mut dead = bus.subscribe(&dead_queue, 1).await.expect("subscribe");
    let letter = recv(&mut dead).await;
    let reason = letter
        .headers
        .get(HEADER_DEAD_REASON)
        .cloned()
        .expect("reason");
    assert!(reason.contains("graph answered 503"), "{reason}");
    assert!(reason.contains("after 3 deliveries"), "{reason}");
    assert_eq!(letter.message_id.as_deref(), Some("run-1:tenant-5"));
    assert_eq!(decode::<ScanJob>(&letter.body).expect("decodes"), job(5));
    letter.ack().await.expect("ack");
    assert_eq!(
        bus.queue_depth(&topo.scan_jobs_queue())
            .await
            .expect("depth"),
        0
    );
}

/// Reject dead-letters at once, with the reason.
pub async fn handler_reject_goes_straight_to_dead_queue(bus: Arc<dyn Bus>, topo: Topology) {
    bus.declare(&topo).await.expect("declare");
    bus.publish(scan(&topo, &job(6))).await.expect("publish");

    let recorder = Recorder::new(|| {
        Err(HandleError::Reject(anyhow::anyhow!(
            "tenant id is not a GUID"
        )))
    });
    let (shutdown, task) = spawn_consumer(&bus, &topo, 2, recorder.clone());
    let dead_queue = topo.dead_queue(&topo.scan_jobs_queue());
    wait_for_depth(&bus, &dead_queue, 1).await;
    stop(shutdown, task).await;

    assert_eq!(
        recorder.seen().len(),
        1,
        "a rejected message is not retried"
    );
    let mut dead = bus.subscribe(&dead_queue, 1).await.expect("subscribe");
    let letter = recv(&mut dead).await;
    assert_eq!(
        letter.headers.get(HEADER_DEAD_REASON).map(String::as_str),
        Some("tenant id is not a GUID")
    );
    assert!(letter.headers.contains_key(bus::HEADER_DEAD_AT));
    letter.ack().await.expect("ack");
}

/// Without our runner, plain requeues stop at the queue's delivery limit: the broker
/// dead-letters the message itself (reason `delivery_limit`).
pub async fn broker_dead_letters_past_the_delivery_limit(bus: Arc<dyn Bus>, topo: Topology) {
    bus.declare(&topo).await.expect("declare");
    bus.publish(scan(&topo, &job(8))).await.expect("publish");
    let mut sub = bus
        .subscribe(&topo.scan_jobs_queue(), 1)
        .await
        .expect("subscribe");
    // Returns are counted 0, 1, 2, 3; the return after the limit (3) dead-letters.
    for expected in 0..=topo.delivery_limit() {
        let got = recv(&mut sub).await;
        assert_eq!(got.delivery_count, expected);
        assert_eq!(got.redelivered, expected > 0);
        got.retry().await.expect("retry");
    }
    let dead_queue = topo.dead_queue(&topo.scan_jobs_queue());
    wait_for_depth(&bus, &dead_queue, 1).await;
    expect_nothing(&mut sub, Duration::from_millis(200)).await;
    let mut dead = bus.subscribe(&dead_queue, 1).await.expect("subscribe");
    let letter = recv(&mut dead).await;
    assert_eq!(
        letter
            .headers
            .get(HEADER_FIRST_DEATH_REASON)
            .map(String::as_str),
        Some("delivery_limit"),
        "{:?}",
        letter.headers
    );
    assert_eq!(decode::<ScanJob>(&letter.body).expect("decodes"), job(8));
    letter.ack().await.expect("ack");
}

/// At most `prefetch` deliveries are unsettled at once; settling one frees a slot.
pub async fn prefetch_bounds_unsettled_deliveries(bus: Arc<dyn Bus>, topo: Topology) {
    bus.declare(&topo).await.expect("declare");
    bus.publish_all((0..3).map(|n| scan(&topo, &job(n))).collect())
        .await
        .expect("publish_all");
    let mut sub = bus
        .subscribe(&topo.scan_jobs_queue(), 2)
        .await
        .expect("subscribe");
    let a = recv(&mut sub).await;
    let b = recv(&mut sub).await;
    expect_nothing(&mut sub, Duration::from_millis(300)).await;
    a.ack().await.expect("ack");
    let c = recv(&mut sub).await;
    b.ack().await.expect("ack");
    c.ack().await.expect("ack");
}

/// The consumer's `process <queue>` span continues the publisher's trace.
pub async fn trace_context_survives_a_hop(bus: Arc<dyn Bus>, topo: Topology) {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bus-test")));

    bus.declare(&topo).await.expect("declare");
    async {
        let publish_span = tracing::info_span!("enumerate tenants");
        let message = publish_span.in_scope(|| scan(&topo, &job(11)));
        assert!(
            message.headers.contains_key("traceparent"),
            "{:?}",
            message.headers
        );
        bus.publish(message).await.expect("publish");
        drop(publish_span);

        let recorder = Recorder::new(|| Ok(()));
        let (shutdown, task) = spawn_consumer(&bus, &topo, 1, recorder.clone());
        wait_for("the job to be handled", || recorder.seen().len() == 1).await;
        stop(shutdown, task).await;
    }
    .with_subscriber(subscriber)
    .await;

    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let publisher = spans
        .iter()
        .find(|s| s.name == "enumerate tenants")
        .expect("publisher span exported");
    let process_name = format!("process {}", topo.scan_jobs_queue());
    let consumer = spans
        .iter()
        .find(|s| s.name == process_name)
        .unwrap_or_else(|| {
            panic!(
                "no {process_name:?} span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        consumer.span_context.trace_id(),
        publisher.span_context.trace_id(),
        "same trace"
    );
    assert_eq!(
        consumer.parent_span_id,
        publisher.span_context.span_id(),
        "publisher is the parent"
    );
    assert!(
        consumer
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "messaging.system" && kv.value.as_str() == "rabbitmq"),
        "{:?}",
        consumer.attributes
    );
}

/// Cancelling the token while a handler runs lets it finish and ack: the message
/// is not delivered again afterwards.
pub async fn shutdown_lets_in_flight_work_finish_and_ack(bus: Arc<dyn Bus>, topo: Topology) {
    struct Slow {
        started: Notify,
        release: Notify,
        finished: AtomicUsize,
    }
    #[async_trait]
    impl Handler<ScanJob> for Slow {
        async fn handle(&self, _job: ScanJob, _delivery: &DeliveryInfo) -> Result<(), HandleError> {
            self.started.notify_one();
            self.release.notified().await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    bus.declare(&topo).await.expect("declare");
    bus.publish(scan(&topo, &job(9))).await.expect("publish");
    let slow = Arc::new(Slow {
        started: Notify::new(),
        release: Notify::new(),
        finished: AtomicUsize::new(0),
    });
    let (shutdown, task) = spawn_consumer(&bus, &topo, 4, slow.clone());
    tokio::time::timeout(WAIT, slow.started.notified())
        .await
        .expect("handler started");

    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !task.is_finished(),
        "run_consumer waits for the handler in flight"
    );
    // Published after shutdown began: must stay in the queue.
    bus.publish(scan(&topo, &job(10))).await.expect("publish");
    slow.release.notify_one();
    stop(shutdown, task).await;
    assert_eq!(slow.finished.load(Ordering::SeqCst), 1);

    // Only the job published during shutdown is left; the handled one was acked.
    wait_for_depth(&bus, &topo.scan_jobs_queue(), 1).await;
    let mut sub = bus
        .subscribe(&topo.scan_jobs_queue(), 4)
        .await
        .expect("subscribe");
    let left = recv(&mut sub).await;
    assert_eq!(decode::<ScanJob>(&left.body).expect("decodes"), job(10));
    assert!(!left.redelivered);
    left.ack().await.expect("ack");
    expect_nothing(&mut sub, Duration::from_millis(300)).await;
}
