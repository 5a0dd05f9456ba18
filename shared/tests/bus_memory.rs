//! The bus contract (`common/mod.rs`) against `MemoryBus`, the in-process twin the
//! CLI's all-in-one mode uses: the same tests as `bus_rabbitmq.rs`, no broker.

mod common;

use std::sync::Arc;

use fwdwatch_shared::bus::{Bus, MemoryBus};

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
                common::$name(bus, common::unique_topology()).await;
            }
        )*
    };
}

for_each_contract!(contract_tests);

/// Queues of one namespace are invisible to another on the same bus.
#[tokio::test]
async fn namespaces_do_not_mix() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let (a, b) = (common::unique_topology(), common::unique_topology());
    bus.declare(&a).await.expect("declare a");
    bus.declare(&b).await.expect("declare b");
    bus.publish(fwdwatch_shared::bus::outgoing(
        &a.scan_exchange(),
        fwdwatch_shared::bus::ROUTE_JOB,
        &common::job(1),
    ))
    .await
    .expect("publish");
    assert_eq!(
        bus.queue_depth(&a.scan_jobs_queue()).await.expect("depth"),
        1
    );
    assert_eq!(
        bus.queue_depth(&b.scan_jobs_queue()).await.expect("depth"),
        0
    );
}
