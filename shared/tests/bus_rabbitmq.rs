//! The bus contract (`common/mod.rs`) against the real RabbitMQ, plus what only a
//! broker connection has: reachability errors and credentials hygiene.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest), or `FWDWATCH_TEST_AMQP_URL`.
//! When it is not reachable the tests FAIL, saying how to start it; they never skip.
//! Each test uses its own namespace (`t-<uuid>`) and deletes its queues and
//! exchanges afterwards, also when it fails.

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use fwdwatch_shared::bus::{Bus, BusError, RabbitBus, Topology};
use fwdwatch_shared::config::AmqpSettings;
use secrecy::SecretString;

fn settings(url: &str, topo: &Topology) -> AmqpSettings {
    AmqpSettings {
        url: SecretString::from(url.to_owned()),
        prefetch: 8,
        namespace: topo.namespace().to_owned(),
        delivery_limit: topo.delivery_limit(),
    }
}

fn broker_url() -> String {
    std::env::var("FWDWATCH_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

async fn connect(topo: &Topology) -> RabbitBus {
    RabbitBus::connect(&settings(&broker_url(), topo))
        .await
        .unwrap_or_else(|error| panic!("these tests need RabbitMQ: {error}"))
}

/// Runs one contract on a fresh connection and namespace, then deletes what it
/// declared whatever the outcome, and re-raises its failure.
async fn run<F, Fut>(contract: F)
where
    F: FnOnce(Arc<dyn Bus>, Topology) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let topo = common::unique_topology();
    let rabbit = connect(&topo).await;
    let bus: Arc<dyn Bus> = Arc::new(rabbit.clone());
    let outcome = AssertUnwindSafe(contract(bus, topo.clone()))
        .catch_unwind()
        .await;
    let extra = common::extra_queues(&topo);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    if let Err(error) = rabbit.teardown(&topo, &extra).await {
        eprintln!("cleanup of {} failed: {error}", topo.namespace());
    }
    let _ = rabbit.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run(common::$name).await;
            }
        )*
    };
}

for_each_contract!(contract_tests);

/// A refused port fails at once, says how to start the broker, and hides the password.
#[tokio::test]
async fn unreachable_broker_says_how_to_start_it() {
    let topo = common::unique_topology();
    let started = std::time::Instant::now();
    let error = RabbitBus::connect(&settings("amqp://guest:s3cret-pw@127.0.0.1:1/%2f", &topo))
        .await
        .expect_err("nothing listens on port 1");
    let text = error.to_string();
    assert!(matches!(error, BusError::Unreachable { .. }), "{text}");
    assert!(text.contains("rabbitmq-server -detached"), "{text}");
    assert!(text.contains("amqp://127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(!format!("{error:?}").contains("s3cret-pw"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "fails fast"
    );
}

/// A malformed URL is refused without echoing it (it may hold the password).
#[tokio::test]
async fn invalid_url_is_not_echoed() {
    let topo = common::unique_topology();
    let error = RabbitBus::connect(&settings("http://guest:s3cret-pw@host/", &topo))
        .await
        .expect_err("not amqp");
    let text = error.to_string();
    assert!(matches!(error, BusError::InvalidUrl(_)), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}

/// Wrong credentials fail with a handshake error, not a hang, and no password.
#[tokio::test]
async fn wrong_credentials_fail_cleanly() {
    let topo = common::unique_topology();
    let mut url = url::Url::parse(&broker_url()).expect("test URL");
    url.set_password(Some("wrong-s3cret")).expect("password");
    let started = std::time::Instant::now();
    let error = RabbitBus::connect(&settings(url.as_str(), &topo))
        .await
        .expect_err("bad password");
    let text = error.to_string();
    assert!(matches!(error, BusError::Handshake { .. }), "{text}");
    assert!(!text.contains("wrong-s3cret"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
}

/// Declaring a topology over queues made with another delivery limit is refused
/// (RabbitMQ: inequivalent arg), and the bus stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_limit_is_refused() {
    run(|bus, topo| async move {
        bus.declare(&topo).await.expect("declare");
        let other = topo.clone().with_delivery_limit(topo.delivery_limit() + 1);
        assert!(bus.declare(&other).await.is_err());
        bus.declare(&topo).await.expect("still usable");
        bus.health().await.expect("healthy");
    })
    .await;
}

/// Closes this test's own broker connection (found by the namespace in its name)
/// the way a broker restart or a network cut would: `rabbitmqctl close_connection`.
async fn force_close_connection(topo: &Topology) {
    let rabbitmqctl = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        async move {
            let output = tokio::process::Command::new("rabbitmqctl")
                .args(&args)
                .output()
                .await
                .unwrap_or_else(|e| {
                    panic!("this test drives the local broker with rabbitmqctl: {e}")
                });
            assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    let listing = rabbitmqctl(&["list_connections", "pid", "client_properties"]).await;
    let pid = listing
        .lines()
        .find(|line| line.contains(topo.namespace()))
        .and_then(|line| line.split('\t').next())
        .unwrap_or_else(|| {
            panic!(
                "no connection named after {} in {listing}",
                topo.namespace()
            )
        })
        .to_owned();
    rabbitmqctl(&[
        "close_connection",
        &pid,
        "fwdwatch test: simulated connection loss",
    ])
    .await;
}

/// After the connection is lost, lapin's recovery brings it back: the next publish
/// succeeds (retried after `wait_for_recovery`), the subscription keeps delivering,
/// and a delivery held across the loss can no longer be acked but is redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_loss_is_recovered() {
    use fwdwatch_shared::bus::{ROUTE_JOB, outgoing};
    use fwdwatch_shared::contracts::{ScanJob, decode};

    run(|bus, topo| async move {
        bus.declare(&topo).await.expect("declare");
        let mut sub = bus
            .subscribe(&topo.scan_jobs_queue(), 4)
            .await
            .expect("subscribe");
        bus.publish(outgoing(&topo.scan_exchange(), ROUTE_JOB, &common::job(1)))
            .await
            .expect("publish");
        let held = common::recv(&mut sub).await;

        force_close_connection(&topo).await;

        bus.publish(outgoing(&topo.scan_exchange(), ROUTE_JOB, &common::job(2)))
            .await
            .expect("publish is retried once the connection is back");
        let stale = held.ack().await;
        assert!(
            matches!(stale, Err(BusError::Unsettled { .. })),
            "{stale:?}"
        );

        let mut seen = Vec::new();
        for _ in 0..2 {
            let got = common::recv(&mut sub).await;
            let job: ScanJob = decode(&got.body).expect("decodes");
            seen.push((job.tenant.id.clone(), got.redelivered));
            got.ack().await.expect("ack on the recovered channel");
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("tenant-1".to_owned(), true),
                ("tenant-2".to_owned(), false)
            ]
        );
        bus.health().await.expect("healthy again");
    })
    .await;
}

/// A consumer whose channel the broker closed — here its queue deleted and then
/// declared again, as when a restarted broker answers the consumer's
/// re-registration before its quorum queues are back — consumes again instead of
/// going deaf: the message published afterwards arrives on the same subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_channel_closed_consumes_again() {
    use fwdwatch_shared::bus::{ROUTE_JOB, outgoing};
    use fwdwatch_shared::contracts::{ScanJob, decode};

    run(|bus, topo| async move {
        bus.declare(&topo).await.expect("declare");
        let mut sub = bus
            .subscribe(&topo.scan_jobs_queue(), 4)
            .await
            .expect("subscribe");
        let other = connect(&topo).await;
        other.teardown(&topo, &[]).await.expect("delete the queues");
        let receiving = tokio::spawn(async move {
            let got = common::recv(&mut sub).await;
            let job: ScanJob = decode(&got.body).expect("decodes");
            got.ack().await.expect("ack on the new channel");
            job.tenant.id
        });
        // Long enough for the consumer to notice and fail to consume at least once.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        other.declare(&topo).await.expect("declare again");
        other
            .publish(outgoing(&topo.scan_exchange(), ROUTE_JOB, &common::job(7)))
            .await
            .expect("publish");
        let tenant = receiving.await.expect("the subscription kept consuming");
        assert_eq!(tenant, "tenant-7");
        let _ = other.close().await;
    })
    .await;
}

/// A TCP relay in front of the broker that can cut every connection through it and
/// then swallow new ones (accept them and never answer): the stand-in for a
/// connection lapin's recovery never brings back (lapin 4.12's IO loop can block
/// for good after a connection reset, reporting `Reconnecting` forever).
struct Relay {
    port: u16,
    swallowing: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        // host:port of the broker, from amqp://user:pass@host:port/vhost.
        let url = broker_url();
        let target = url
            .rsplit_once('@')
            .and_then(|(_, rest)| rest.split('/').next())
            .expect("the broker URL names host:port")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay port");
        let port = listener.local_addr().expect("relay address").port();
        let swallowing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, handles) = (swallowing.clone(), links.clone());
        let accepting = tokio::spawn(async move {
            let mut swallowed = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    swallowed.push(client); // held open, never answered
                    continue;
                }
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                handles.lock().expect("links").push(link);
            }
        });
        Self {
            port,
            swallowing,
            links,
            accepting,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Drops every relayed connection; connections made from now on are swallowed.
    fn cut_and_swallow(&self) {
        self.swallowing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    /// Relays new connections again (the swallowed ones stay silent).
    fn heal(&self) {
        self.swallowing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }
}

/// A connection lapin's recovery does not bring back is replaced: the relay cuts the
/// connection and swallows lapin's reconnection attempt, so only a new connection
/// gets through. The subscription then receives what is published afterwards, and
/// publishing through the same bus works again, without restarting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_recover_is_replaced() {
    use fwdwatch_shared::bus::{ROUTE_JOB, Subscription, outgoing};
    use fwdwatch_shared::contracts::{ScanJob, decode};

    async fn tenant_of(sub: &mut Box<dyn Subscription>, wait: std::time::Duration) -> String {
        let got = match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(Ok(got))) => got,
            other => panic!("no delivery within {wait:?}: {other:?}"),
        };
        let job: ScanJob = decode(&got.body).expect("decodes");
        got.ack().await.expect("ack");
        job.tenant.id
    }

    run(|bus, topo| async move {
        bus.declare(&topo).await.expect("declare");
        let relay = Relay::start().await;
        let relayed = RabbitBus::connect(&settings(&relay.url(), &topo))
            .await
            .expect("connects through the relay");
        let mut sub = relayed
            .subscribe(&topo.scan_jobs_queue(), 4)
            .await
            .expect("subscribe");
        let job = |n| outgoing(&topo.scan_exchange(), ROUTE_JOB, &common::job(n));
        bus.publish(job(1)).await.expect("publish");
        let short = std::time::Duration::from_secs(10);
        assert_eq!(tenant_of(&mut sub, short).await, "tenant-1");

        relay.cut_and_swallow();
        // Long enough for lapin's first reconnection attempt to be swallowed.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        relay.heal();

        bus.publish(job(2)).await.expect("publish");
        // The watchdog replaces the connection after 15 s down. The ack of job 1 may
        // have been cut on its way: then job 1 comes again first (at least once).
        let replaced = std::time::Duration::from_secs(45);
        let mut tenant = tenant_of(&mut sub, replaced).await;
        if tenant == "tenant-1" {
            tenant = tenant_of(&mut sub, short).await;
        }
        assert_eq!(tenant, "tenant-2");
        tokio::time::timeout(short, relayed.publish(job(3)))
            .await
            .expect("a publish does not wait on the dead connection")
            .expect("publishes on the new connection");
        assert_eq!(tenant_of(&mut sub, short).await, "tenant-3");
        relayed.health().await.expect("healthy again");
        let _ = relayed.close().await;
    })
    .await;
}
