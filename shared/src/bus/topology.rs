//! The names and shape of fwdwatch's exchanges and queues, as plain data.
//!
//! Both bus implementations (RabbitMQ and the in-memory twin) declare exactly what
//! [`Topology::exchanges`] and [`Topology::queues`] describe, so the routing rules
//! live in one place and the twin cannot drift from production. Every name is
//! derived from a namespace (`fwdwatch` in production, `t-<uuid>` in tests), which
//! lets several deployments or test runs share one broker without seeing each other.

use crate::config::AmqpSettings;
use crate::contracts::Signal;

/// Routing key of scan jobs on the scan exchange.
pub const ROUTE_JOB: &str = "job";
/// Routing key of commands on the commands exchange.
pub const ROUTE_COMMAND: &str = "command";
/// Routing key of the per-tenant scan summary on the findings exchange.
pub const ROUTE_SUMMARY: &str = "summary";
/// Routing key of command results on the events exchange.
pub const ROUTE_COMMAND_RESULT: &str = "command.result";

/// Deliveries of one message before it is dead-lettered, when nothing else is
/// configured (matches the `amqp.delivery_limit` default in `config::DEFAULTS`).
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;

/// Routing key of a detection of one signal: `detection.<signal>`, so a consumer
/// interested in one kind of forward can bind `detection.inbox_rule` alone.
pub fn detection_route(signal: Signal) -> String {
    format!("detection.{}", signal.as_str())
}

/// Routing key of an alert event: `alert.<kind>` (e.g. `alert.new`).
pub fn alert_route(kind: &str) -> String {
    format!("alert.{kind}")
}

/// Routing key of an audit event: `audit.<action>` (e.g. `audit.remove`).
pub fn audit_route(action: &str) -> String {
    format!("audit.{action}")
}

/// How an exchange matches routing keys against its bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// The binding key must equal the routing key.
    Direct,
    /// Dot-separated words; in a binding key `*` matches one word and `#` zero or more.
    Topic,
}

/// An exchange to declare (always durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeKind,
}

/// One binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: String,
    pub routing_key: String,
}

/// A durable quorum queue to declare, with its bindings and its dead-letter route.
///
/// Built by [`Topology::queue`] so that every queue gets the delivery limit and
/// the `{ns}.dead` route; declaring it also declares `<name>.dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub bindings: Vec<Binding>,
    /// `x-delivery-limit`: returns (requeues, lost consumers) before the broker
    /// dead-letters the message.
    pub delivery_limit: u32,
    /// `x-dead-letter-exchange`; the routing key is the queue's own name.
    pub dead_letter_exchange: String,
}

impl QueueSpec {
    /// Adds a binding (builder style).
    #[must_use]
    pub fn bind(mut self, exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        self.bindings.push(Binding {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
        });
        self
    }

    /// The queue that collects this queue's dead letters.
    pub fn dead_queue(&self) -> String {
        dead_queue_name(&self.name)
    }
}

fn dead_queue_name(queue: &str) -> String {
    format!("{queue}.dead")
}

/// fwdwatch's exchanges and queues under one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    delivery_limit: u32,
}

impl Topology {
    /// The topology under `namespace`, with [`DEFAULT_DELIVERY_LIMIT`].
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }

    /// The topology the settings describe (`amqp.namespace`, `amqp.delivery_limit`).
    pub fn from_settings(settings: &AmqpSettings) -> Self {
        Self::new(settings.namespace.clone()).with_delivery_limit(settings.delivery_limit)
    }

    /// Sets the `x-delivery-limit` of every queue declared from this topology.
    ///
    /// RabbitMQ refuses to redeclare an existing queue with another limit
    /// (`PRECONDITION_FAILED - inequivalent arg`): changing it on a live
    /// deployment means deleting the queue or using a policy.
    #[must_use]
    pub fn with_delivery_limit(mut self, delivery_limit: u32) -> Self {
        self.delivery_limit = delivery_limit;
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.namespace)
    }

    /// `{ns}.scan` (direct): scan jobs, routing key [`ROUTE_JOB`].
    pub fn scan_exchange(&self) -> String {
        self.name("scan")
    }

    /// `{ns}.scan.jobs`: the scanners' work queue.
    pub fn scan_jobs_queue(&self) -> String {
        self.name("scan.jobs")
    }

    /// `{ns}.findings` (topic): `detection.<signal>` and `summary`.
    pub fn findings_exchange(&self) -> String {
        self.name("findings")
    }

    /// `{ns}.notifier.findings`: everything on the findings exchange (`#`), and the
    /// actioner's `command.result` events.
    pub fn notifier_findings_queue(&self) -> String {
        self.name("notifier.findings")
    }

    /// `{ns}.commands` (direct): commands, routing key [`ROUTE_COMMAND`].
    pub fn commands_exchange(&self) -> String {
        self.name("commands")
    }

    /// `{ns}.actioner.commands`: the actioner's work queue.
    pub fn actioner_commands_queue(&self) -> String {
        self.name("actioner.commands")
    }

    /// `{ns}.events` (topic): `alert.<kind>`, `command.result`, `audit.<action>`.
    /// No queue of ours is bound; observers bind their own (see [`Topology::queue`]).
    pub fn events_exchange(&self) -> String {
        self.name("events")
    }

    /// `{ns}.dead` (direct): dead letters, routing key = the queue they died in.
    pub fn dead_exchange(&self) -> String {
        self.name("dead")
    }

    /// `<queue>.dead`: where the messages of `queue` end when they cannot be processed.
    pub fn dead_queue(&self, queue: &str) -> String {
        dead_queue_name(queue)
    }

    /// Every exchange of the topology.
    pub fn exchanges(&self) -> Vec<ExchangeSpec> {
        let spec = |name: String, kind| ExchangeSpec { name, kind };
        vec![
            spec(self.scan_exchange(), ExchangeKind::Direct),
            spec(self.findings_exchange(), ExchangeKind::Topic),
            spec(self.commands_exchange(), ExchangeKind::Direct),
            spec(self.events_exchange(), ExchangeKind::Topic),
            spec(self.dead_exchange(), ExchangeKind::Direct),
        ]
    }

    /// The work queues of the pipeline (their `.dead` queues are implied).
    pub fn queues(&self) -> Vec<QueueSpec> {
        vec![
            self.queue(self.scan_jobs_queue())
                .bind(self.scan_exchange(), ROUTE_JOB),
            self.queue(self.notifier_findings_queue())
                .bind(self.findings_exchange(), "#")
                // Verified removals take forwards off the notifier's open list.
                .bind(self.events_exchange(), ROUTE_COMMAND_RESULT),
            self.queue(self.actioner_commands_queue())
                .bind(self.commands_exchange(), ROUTE_COMMAND),
        ]
    }

    /// A quorum queue named `name` with this topology's delivery limit and dead-letter
    /// route and no binding yet: add them with [`QueueSpec::bind`], then pass it to
    /// [`Bus::declare_queue`](super::Bus::declare_queue). Used for extra observers,
    /// e.g. a SIEM export on the findings exchange or the CLI watching `{ns}.events`.
    pub fn queue(&self, name: impl Into<String>) -> QueueSpec {
        QueueSpec {
            name: name.into(),
            bindings: Vec::new(),
            delivery_limit: self.delivery_limit,
            dead_letter_exchange: self.dead_exchange(),
        }
    }
}

/// Whether a topic binding key matches a routing key (AMQP 0-9-1 topic rules).
pub(crate) fn topic_matches(binding: &str, routing_key: &str) -> bool {
    fn go(pattern: &[&str], words: &[&str]) -> bool {
        match pattern.split_first() {
            None => words.is_empty(),
            // `#` swallows zero words, or one word and stays in place.
            Some((&"#", rest)) => {
                go(rest, words) || (!words.is_empty() && go(pattern, &words[1..]))
            }
            Some((&"*", rest)) => !words.is_empty() && go(rest, &words[1..]),
            Some((word, rest)) => words.first() == Some(word) && go(rest, &words[1..]),
        }
    }
    let pattern: Vec<&str> = binding.split('.').collect();
    // An empty routing key has zero words, not one empty word.
    let words: Vec<&str> = if routing_key.is_empty() {
        Vec::new()
    } else {
        routing_key.split('.').collect()
    };
    go(&pattern, &words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace() {
        let t = Topology::new("fwdwatch");
        assert_eq!(t.scan_exchange(), "fwdwatch.scan");
        assert_eq!(t.scan_jobs_queue(), "fwdwatch.scan.jobs");
        assert_eq!(t.findings_exchange(), "fwdwatch.findings");
        assert_eq!(t.notifier_findings_queue(), "fwdwatch.notifier.findings");
        assert_eq!(t.commands_exchange(), "fwdwatch.commands");
        assert_eq!(t.actioner_commands_queue(), "fwdwatch.actioner.commands");
        assert_eq!(t.events_exchange(), "fwdwatch.events");
        assert_eq!(t.dead_exchange(), "fwdwatch.dead");
        assert_eq!(
            t.dead_queue(&t.scan_jobs_queue()),
            "fwdwatch.scan.jobs.dead"
        );
        assert_eq!(detection_route(Signal::InboxRule), "detection.inbox_rule");
    }

    #[test]
    fn every_queue_has_a_dead_route_and_limit() {
        let t = Topology::new("ns").with_delivery_limit(7);
        for q in t.queues() {
            assert_eq!(q.delivery_limit, 7);
            assert_eq!(q.dead_letter_exchange, "ns.dead");
            assert_eq!(q.dead_queue(), format!("{}.dead", q.name));
            assert!(!q.bindings.is_empty());
        }
        let notifier = t
            .queues()
            .into_iter()
            .find(|q| q.name == t.notifier_findings_queue())
            .expect("the notifier's queue");
        assert!(
            notifier
                .bindings
                .iter()
                .any(|b| b.exchange == t.events_exchange() && b.routing_key == ROUTE_COMMAND_RESULT),
            "verified removals reach the notifier"
        );
    }

    #[test]
    fn topic_rules() {
        assert!(topic_matches("#", "detection.inbox_rule"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("detection.*", "detection.inbox_rule"));
        assert!(!topic_matches("detection.*", "detection"));
        assert!(!topic_matches("detection.*", "detection.a.b"));
        assert!(topic_matches("detection.#", "detection"));
        assert!(topic_matches("detection.#", "detection.a.b"));
        assert!(topic_matches("*.result", "command.result"));
        assert!(topic_matches("a.#.z", "a.z"));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
        assert!(!topic_matches("a.#.z", "a.b.c"));
        assert!(topic_matches("summary", "summary"));
        assert!(!topic_matches("summary", "summary.x"));
    }
}
