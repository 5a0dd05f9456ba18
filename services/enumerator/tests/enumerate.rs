//! The enumerator against the simulator's GDAP endpoints and a real RabbitMQ
//! (fresh `t-<uuid>` namespace per test): paging, inactive relationships,
//! exclusions, confirmed publishing, failures that are reported rather than
//! turned into empty runs, and the schedule.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); fails, never skips, without it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fwdwatch_enumerator::{EnumerateError, ListPolicy, list_tenants, run_once, run_once_with};
use fwdwatch_shared::bus::{Bus, RabbitBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{ErrorKind, ScanJob, decode};
use fwdwatch_shared::m365::{M365Client, RequestKind, RetryPolicy};
use fwdwatch_shared::shutdown::CancellationToken;
use m365_sim::{RunningSim, SimArgs};

async fn start_sim(args: SimArgs) -> RunningSim {
    m365_sim::start(args, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

fn settings(sim: &RunningSim, extra: &[(&str, &str)], file: Option<&std::path::Path>) -> Settings {
    let mut env: Vec<(String, String)> = [
        (
            "FWDWATCH__AMQP__NAMESPACE",
            format!("t-{}", uuid::Uuid::new_v4()),
        ),
        ("FWDWATCH__M365__MAX_ATTEMPTS", "2".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(sim.fwdwatch_env())
    .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Settings::load_from(file, env).expect("settings")
}

fn client(settings: &Settings) -> M365Client {
    M365Client::with_policy(
        &settings.m365,
        RetryPolicy {
            max_attempts: settings.m365.max_attempts,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
    )
    .expect("client")
}

const QUICK: ListPolicy = ListPolicy {
    attempts: 2,
    wait: Duration::from_millis(20),
};

async fn rabbit(settings: &Settings) -> Arc<RabbitBus> {
    match RabbitBus::connect(&settings.amqp).await {
        Ok(bus) => Arc::new(bus),
        Err(e) => panic!(
            "RabbitMQ is needed at 127.0.0.1:5672 (guest/guest) for this test: {e}\n\
             start it with `rabbitmq-server -detached && rabbitmqctl await_startup`"
        ),
    }
}

async fn teardown(bus: &RabbitBus, settings: &Settings) {
    let _ = bus
        .teardown(&Topology::from_settings(&settings.amqp), &[])
        .await;
    let _ = bus.close().await;
}

/// Reads every job waiting on the scan queue.
async fn drain_jobs(bus: &dyn Bus, topology: &Topology, expected: usize) -> Vec<ScanJob> {
    let mut sub = bus
        .subscribe(&topology.scan_jobs_queue(), 500)
        .await
        .expect("subscribe");
    let mut jobs = Vec::new();
    while jobs.len() < expected {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a job within 10 s")
            .expect("subscription open")
            .expect("delivery");
        jobs.push(decode::<ScanJob>(&m.body).expect("a valid ScanJob"));
        m.ack().await.expect("ack");
    }
    sub.cancel().await;
    jobs
}

/// More than one page of relationships (300 per page), several per customer,
/// inactive ones skipped, exclusions honoured.
#[tokio::test]
async fn gdap_listing_pages_groups_skips_inactive_and_excludes() {
    let args = SimArgs {
        tenants: 700,
        ..Default::default()
    };
    let sim = start_sim(args).await;
    let infos = sim.tenants();
    let relationships: usize = infos
        .iter()
        .map(|t| {
            t.relationships
                .iter()
                .filter(|r| r.status == "active")
                .count()
        })
        .sum();
    assert!(
        relationships > 600,
        "more than two pages of active relationships"
    );
    assert!(
        infos.iter().any(|t| t.relationships.len() > 1),
        "some customers have several"
    );
    let inactive: BTreeSet<String> = infos
        .iter()
        .filter(|t| !t.gdap_active)
        .map(|t| t.tenant_id.clone())
        .collect();
    assert!(!inactive.is_empty(), "the fleet has inactive customers");
    let active: Vec<String> = infos
        .iter()
        .filter(|t| t.gdap_active)
        .map(|t| t.tenant_id.clone())
        .collect();
    let excluded = format!("{},{}", active[0].to_uppercase(), active[1]);
    let s = settings(
        &sim,
        &[("FWDWATCH__ENUMERATOR__EXCLUDE_TENANTS", &excluded)],
        None,
    );
    let client = client(&s);
    let (tenants, dropped) = list_tenants(Some(&client), &s.enumerator, QUICK)
        .await
        .expect("listing");
    let got: BTreeSet<String> = tenants.iter().map(|t| t.id.clone()).collect();
    assert_eq!(got.len(), tenants.len(), "one entry per customer");
    let want: BTreeSet<String> = active[2..].iter().cloned().collect();
    assert_eq!(got, want);
    assert_eq!(dropped, 2);
    assert!(got.is_disjoint(&inactive));
    assert!(tenants.iter().all(|t| !t.display_name.is_empty()));
    assert!(
        client.stats().requests_of(RequestKind::GraphGet) >= 3,
        "paged"
    );
}

/// A run publishes one confirmed job per tenant, all carrying the run id.
#[tokio::test]
async fn a_run_publishes_one_confirmed_job_per_tenant() {
    let args = SimArgs {
        tenants: 30,
        ..Default::default()
    };
    let sim = start_sim(args).await;
    let s = settings(&sim, &[], None);
    let bus = rabbit(&s).await;
    let client = client(&s);
    let report = run_once(bus.clone(), Some(&client), &s).await.expect("run");
    let topology = Topology::from_settings(&s.amqp);
    let jobs = drain_jobs(bus.as_ref(), &topology, report.tenants.len()).await;
    let ids: BTreeSet<String> = jobs.iter().map(|j| j.tenant.id.clone()).collect();
    let want: BTreeSet<String> = report.tenants.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, want);
    assert!(
        jobs.iter()
            .all(|j| j.run_id == report.run_id
                && j.job_id == format!("{}:{}", j.run_id, j.tenant.id))
    );
    assert_eq!(
        bus.queue_depth(&topology.scan_jobs_queue())
            .await
            .expect("depth"),
        0
    );
    teardown(&bus, &s).await;
}

/// The static source needs no Microsoft credentials; excluding everything is an
/// error, not a silent empty run.
#[tokio::test]
async fn static_tenants_and_no_silent_empty_run() {
    let sim = start_sim(SimArgs::default()).await;
    let dir = std::env::temp_dir().join(format!("fwdwatch-enum-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("fwdwatch.toml");
    std::fs::write(
        &file,
        r#"
[enumerator]
source = "static"
exclude_tenants = ["c"]
tenants = [
  { id = "a", display_name = "Alpha", default_domain = "alpha.onmicrosoft.com" },
  { id = "b", display_name = "Beta" },
  { id = "c", display_name = "Gamma" },
]
"#,
    )
    .expect("write");
    let s = settings(&sim, &[], Some(&file));
    let bus = rabbit(&s).await;
    let report = run_once(bus.clone(), None, &s).await.expect("static run");
    let names: Vec<&str> = report
        .tenants
        .iter()
        .map(|t| t.display_name.as_str())
        .collect();
    assert_eq!(names, vec!["Alpha", "Beta"]);
    assert_eq!(report.excluded, 1);
    let jobs = drain_jobs(bus.as_ref(), &Topology::from_settings(&s.amqp), 2).await;
    assert_eq!(
        jobs[0].tenant.default_domain.as_deref(),
        Some("alpha.onmicrosoft.com")
    );

    let mut all_excluded = s.clone();
    all_excluded.enumerator.exclude_tenants = vec!["a".into(), "b".into(), "c".into()];
    let err = list_tenants(None, &all_excluded.enumerator, QUICK)
        .await
        .expect_err("nothing to scan");
    assert!(matches!(err, EnumerateError::Empty(_)), "{err}");
    let err = run_once(bus.clone(), None, &all_excluded)
        .await
        .expect_err("reported");
    assert!(format!("{err:#}").contains("no tenant to scan"), "{err:#}");
    teardown(&bus, &s).await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Graph failing: the listing is retried, then the run fails loudly with nothing
/// published. A refused credential is not retried at all.
#[tokio::test]
async fn listing_failures_are_retried_and_reported() {
    let mut args = SimArgs {
        tenants: 5,
        ..Default::default()
    };
    args.faults.error_rate = 1.0;
    let sim = start_sim(args).await;
    let s = settings(&sim, &[], None);
    let bus = rabbit(&s).await;
    let client = client(&s);
    let err = run_once_with(bus.clone(), Some(&client), &s, QUICK)
        .await
        .expect_err("run fails");
    let root = err
        .chain()
        .find_map(|e| e.downcast_ref::<EnumerateError>())
        .expect("typed");
    match root {
        EnumerateError::Listing { attempts, source } => {
            assert_eq!(*attempts, 2);
            assert_eq!(source.kind, ErrorKind::Upstream);
        }
        other => panic!("unexpected {other}"),
    }
    // 2 listing attempts × 2 HTTP attempts each.
    assert_eq!(client.stats().requests_of(RequestKind::GraphGet), 4);
    let topology = Topology::from_settings(&s.amqp);
    assert_eq!(
        bus.queue_depth(&topology.scan_jobs_queue())
            .await
            .expect("depth"),
        0
    );

    let mut wrong = s.clone();
    wrong.m365.client_secret = Some(secrecy::SecretString::from("wrong".to_owned()));
    let refused = client_of(&wrong);
    let err = list_tenants(Some(&refused), &wrong.enumerator, QUICK)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, EnumerateError::Listing { attempts: 1, source } if source.kind == ErrorKind::Unauthorized),
        "{err}"
    );
    teardown(&bus, &s).await;
}

fn client_of(s: &Settings) -> M365Client {
    client(s)
}

/// On a schedule that fires every second, each tick is a run with its own id;
/// shutdown stops the loop.
#[tokio::test]
async fn the_schedule_runs_on_every_tick_until_shutdown() {
    let args = SimArgs {
        tenants: 3,
        ..Default::default()
    };
    let sim = start_sim(args).await;
    let s = settings(
        &sim,
        &[("FWDWATCH__ENUMERATOR__SCHEDULE", "* * * * * *")],
        None,
    );
    let bus = rabbit(&s).await;
    let client = client(&s);
    let topology = Topology::from_settings(&s.amqp);
    bus.declare(&topology).await.expect("declare");
    let shutdown = CancellationToken::new();
    let loop_bus: Arc<dyn Bus> = bus.clone();
    let loop_settings = s.clone();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        fwdwatch_enumerator::run_scheduled(loop_bus, Some(client), &loop_settings, token).await
    });
    let per_run = sim.tenants().iter().filter(|t| t.gdap_active).count();
    let jobs = drain_jobs(bus.as_ref(), &topology, per_run * 2).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .expect("join")
        .expect("clean exit");
    let runs: BTreeSet<&str> = jobs.iter().map(|j| j.run_id.as_str()).collect();
    assert_eq!(runs.len(), 2, "two ticks, two runs");
    teardown(&bus, &s).await;
}

/// A tenant listed before whose GDAP relationship ended (an attacker or the
/// customer terminated it) still gets a job, marked not listed, so its lost
/// coverage is reported; every listed job carries when its relationship ends.
#[tokio::test]
async fn a_tenant_that_drops_out_of_the_listing_is_still_scheduled_and_marked() {
    let sim = start_sim(SimArgs {
        tenants: 6,
        ..Default::default()
    })
    .await;
    let prefix = format!("t-{}:", uuid::Uuid::new_v4().simple());
    let s = settings(
        &sim,
        &[("FWDWATCH__REDIS__KEY_PREFIX", prefix.as_str())],
        None,
    );
    let bus = rabbit(&s).await;
    let client = client(&s);
    let store = fwdwatch_shared::store::connect(&s.redis)
        .await
        .expect("Redis at 127.0.0.1:6379");
    let topology = Topology::from_settings(&s.amqp);
    let first =
        fwdwatch_enumerator::run_once_with_store(bus.clone(), Some(&client), store.as_ref(), &s)
            .await
            .expect("run");
    let jobs = drain_jobs(bus.as_ref(), &topology, first.tenants.len()).await;
    assert!(first.unlisted.is_empty());
    assert!(
        jobs.iter().all(|j| j
            .relationship
            .as_ref()
            .is_some_and(|r| r.listed && r.ends_at.is_some())),
        "listed jobs carry the relationship's end"
    );
    let gone = first.tenants[0].id.clone();
    reqwest::Client::new()
        .post(format!("{}/_sim/tenants/{gone}/access", sim.base_url))
        .json(&serde_json::json!({"relationship": "terminated"}))
        .send()
        .await
        .expect("terminate")
        .error_for_status()
        .expect("terminated");
    let second =
        fwdwatch_enumerator::run_once_with_store(bus.clone(), Some(&client), store.as_ref(), &s)
            .await
            .expect("run");
    assert_eq!(second.unlisted, vec![gone.to_lowercase()]);
    let jobs = drain_jobs(bus.as_ref(), &topology, second.tenants.len()).await;
    let marked = jobs
        .iter()
        .find(|j| j.tenant.id.eq_ignore_ascii_case(&gone))
        .expect("still scheduled");
    assert!(!marked.relationship.as_ref().expect("relationship").listed);
    let keys = fwdwatch_shared::store::Keys::from_settings(&s.redis);
    for key in store.scan_keys(&keys.all()).await.unwrap_or_default() {
        let _ = store.delete(&key).await;
    }
    teardown(&bus, &s).await;
}
