//! The bodies of fwdwatch's fuzz targets: every decoder of input that comes from
//! outside the process, fed whatever libFuzzer makes up.
//!
//! | target | what it feeds | besides "no panic, no hang" it checks |
//! |---|---|---|
//! | `queue_message` | every queue message contract, the notifier's `Finding` | a decoded message re-encodes and decodes to itself |
//! | `exchange_answer` | Exchange `InvokeCommand` pages and `$batch` answers, then the scan's row readers, domains, recipients and resolution | a read cmdlet's answer without `value` is never "no rows"; a listing with a next page is not truncated |
//! | `graph_answer` | Graph pages, GDAP relationships, token answers, error envelopes | error messages stay bounded |
//! | `resolve_targets` | a made-up tenant directory and a target as Exchange writes it | an outside delivery is never in an accepted domain; every delivery has a target |
//! | `link_token` | approve / remove tokens, mutated from a genuine one | nothing but the genuine claims ever verifies |
//! | `slack_interaction` | Slack interaction bodies, correctly signed, through the actioner's router | never a 5xx |
//! | `api_command` | `POST /v1/commands` bodies with a valid bearer, and `GET` ids | never a 5xx; a command with an invalid id is refused |
//! | `actioner_http` | any method, path, headers and body to the actioner's router (links, console, API) | never a 5xx |
//! | `audit_content` | Management Activity API content listings and blobs, through the record decoder, classification and the rescan's `audit_event` forwards | no record is dropped (a garbled one is kept as unreadable and reported); every kept string is bounded; a decoded record survives the wire |
//!
//! Each `fuzz_targets/<name>.rs` is one line calling the function of that name;
//! `fuzz/seeds/<name>/` holds the realistic inputs the runs start from.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use tower::ServiceExt;

use fwdwatch_shared::bus::{Bus, MemoryBus};
use fwdwatch_shared::classify::{self, TenantDomains};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{
    self, AlertEvent, AuditEvent, Command, CommandAction, CommandResult, Detection, Message,
    ScanJob, Signal, TenantSummary,
};
use fwdwatch_shared::forwards::directory::Directory;
use fwdwatch_shared::forwards::resolve::{Form, Outcome};
use fwdwatch_shared::forwards::rows::{RecipientRow, RuleRow, TenantRow};
use fwdwatch_shared::forwards::{
    Resolver, connectors, inbox_rules, journal_rules, mailbox_forwarding, scan, transport_rules,
};
use fwdwatch_shared::links::{ActionClaims, LinkSigner};
use fwdwatch_shared::m365;
use fwdwatch_shared::store::{MemoryStore, Store};

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Decodes `data` as `M`; when it decodes, encoding and decoding again gives the same.
fn round_trip<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(message) = contracts::decode::<M>(data) {
        let again = serde_json::to_vec(&message).expect("a decoded message encodes");
        let back = contracts::decode::<M>(&again).expect("an encoded message decodes");
        assert_eq!(back, message, "round trip changed the message");
    }
}

/// Every contract that arrives on a queue.
pub fn queue_message(data: &[u8]) {
    round_trip::<ScanJob>(data);
    round_trip::<Detection>(data);
    round_trip::<TenantSummary>(data);
    round_trip::<Command>(data);
    round_trip::<CommandResult>(data);
    round_trip::<AlertEvent>(data);
    round_trip::<AuditEvent>(data);
    let _ = contracts::decode::<fwdwatch_notifier::finding::Finding>(data);
}

/// The cmdlets of the tenant batch, in the order the sub-request ids name them.
const TENANT_CMDLETS: [&str; 9] = [
    "Get-AcceptedDomain",
    "Get-Mailbox",
    "Get-TransportRule",
    "Get-Recipient",
    "Get-RemoteDomain",
    "Get-JournalRule",
    "Get-OutboundConnector",
    "Get-HostedOutboundSpamFilterPolicy",
    "Get-HostedOutboundSpamFilterRule",
];

fn check_listing<T>(
    cmdlet: &str,
    decoded: &Result<(m365::Listing<T>, Option<String>), m365::M365Error>,
) {
    if let Ok((listing, next)) = decoded {
        assert!(
            next.is_none() || listing.truncated.is_none(),
            "{cmdlet}: a listing that goes on is not truncated"
        );
    }
}

/// Exchange answers, then everything the scan does with their rows.
pub fn exchange_answer(data: &[u8]) {
    // A single page to a read cmdlet: an answer without `value` is an error.
    if let Ok(page) = serde_json::from_slice::<Value>(data)
        && page.is_object()
        && page.get("value").is_none()
    {
        assert!(
            m365::decode_page::<Value>("Get-InboxRule", data).is_err(),
            "a read without rows must not pass as empty"
        );
    }
    check_listing(
        "Get-InboxRule",
        &m365::decode_page::<RuleRow>("Get-InboxRule", data),
    );
    check_listing(
        "Set-Mailbox",
        &m365::decode_page::<Value>("Set-Mailbox", data),
    );

    // The tenant batch, typed as the scan reads it.
    let Ok(answers) = m365::decode_batch::<TenantRow>(&TENANT_CMDLETS, data) else {
        // The same bytes as a batch of inbox-rule reads.
        if let Ok(answers) = m365::decode_batch::<RuleRow>(&["Get-InboxRule"; 10], data) {
            for (_, rows) in answers {
                if let Ok((listing, _)) = rows {
                    let _ = inbox_rules::from_rows(listing.rows);
                }
            }
        }
        return;
    };
    let mut tables: [Vec<TenantRow>; 9] = Default::default();
    for (i, answer) in answers {
        check_listing(TENANT_CMDLETS[i], &answer);
        if let Ok((listing, _)) = answer {
            tables[i].extend(listing.rows);
        }
    }
    let [
        domains,
        mailboxes,
        transport,
        recipients,
        _remote,
        journal,
        connectors_rows,
        _,
        _,
    ] = tables;
    let domain_rows: Vec<_> = domains.into_iter().map(TenantRow::into_domain).collect();
    let Ok(domains) = scan::tenant_domains(&domain_rows, Some("fuzz.onmicrosoft.com")) else {
        return;
    };
    let directory = Directory::from_typed(
        recipients
            .into_iter()
            .map(TenantRow::into_recipient)
            .collect::<Vec<RecipientRow>>(),
    );
    let resolver = Resolver {
        domains: &domains,
        directory: &directory,
    };
    let mailboxes =
        mailbox_forwarding::from_rows(mailboxes.into_iter().map(TenantRow::into_mailbox).collect());
    let transport = transport_rules::from_rows(
        transport
            .into_iter()
            .map(TenantRow::into_transport)
            .collect(),
    );
    let journal =
        journal_rules::from_rows(journal.into_iter().map(TenantRow::into_journal).collect());
    let connectors = connectors::from_rows(
        connectors_rows
            .into_iter()
            .map(TenantRow::into_connector)
            .collect(),
    );
    let mut forwards = mailbox_forwarding::forwards(&mailboxes, &resolver);
    forwards.extend(transport_rules::forwards(&transport, &resolver));
    forwards.extend(journal_rules::forwards(&journal, &resolver));
    forwards.extend(connectors::forwards(&connectors, &transport, &domains));
    for forward in forwards {
        assert!(
            !forward.deliveries.is_empty(),
            "a forward without a delivery is not a forward"
        );
    }
}

/// Graph answers and the token endpoint's.
pub fn graph_answer(data: &[u8]) {
    if let Ok((items, _next)) = m365::decode_graph_page(data) {
        let _ = m365::gdap_relationships_from(&items);
        let _ = m365::gdap_customers_from(&items);
    }
    let _ = m365::decode_token_answer(data);
    for status in [400, 401, 403, 404, 429, 500, 503] {
        let error = m365::api_error(status, data);
        assert!(error.message.len() <= 4096, "error messages stay bounded");
        let _ = m365::token_error(status, data);
    }
    let _ = m365::parse_retry_after(&text(data));
}

/// A made-up tenant: accepted domains, recipients (guests, mail users, groups and
/// their members), then one target resolved in every form.
pub fn resolve_targets(data: &[u8]) {
    // `domains \n target \n recipients JSON` (missing parts are empty).
    let raw = text(data);
    let mut parts = raw.splitn(3, '\n');
    let domain_list = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let recipients: Vec<Value> = parts
        .next()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let accepted: Vec<classify::AcceptedDomain> = domain_list
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| classify::AcceptedDomain {
            name: d.to_owned(),
            domain_type: classify::DomainType::Authoritative,
            match_subdomains: d.len() % 2 == 0,
        })
        .collect();
    let domains = TenantDomains::new(&accepted).with_tenant_domain("fuzz.onmicrosoft.com");
    let rows = |skip: usize| -> Vec<RecipientRow> {
        fwdwatch_shared::forwards::rows::from_values(recipients.get(skip..).unwrap_or(&[]))
    };
    let mut directory = Directory::default();
    let indexes = directory.add_typed(rows(0));
    // Groups' members: every group gets the recipients from itself on as members,
    // so nesting and cycles come for free.
    for (n, index) in indexes.into_iter().enumerate() {
        if let Some(group) = index {
            directory.add_members(group, rows(n), n % 3 == 0);
        }
    }
    let resolver = Resolver {
        domains: &domains,
        directory: &directory,
    };
    for form in [Form::Any, Form::Smtp, Form::Identity] {
        for outcome in resolver.resolve(target, form) {
            if let Outcome::External(delivery) = &outcome {
                assert!(
                    !delivery.target.is_empty(),
                    "an outside delivery has a target"
                );
                let domain = delivery
                    .domain
                    .as_deref()
                    .expect("an outside address has a domain");
                assert!(
                    !domains.is_internal_domain(domain),
                    "{} delivered outside but its domain is accepted",
                    delivery.target
                );
            }
        }
    }
    for target in classify::parse_targets(target) {
        let _ = target;
    }
    let _ = classify::classify(target, &domains);
}

fn genuine_claims() -> ActionClaims {
    ActionClaims {
        v: 1,
        action: CommandAction::Remove,
        tenant_id: "11111111-2222-3333-4444-555555555555".into(),
        mailbox: "victim@contoso.com".into(),
        signal: Signal::InboxRule,
        fingerprint: "a".repeat(64),
        target: "eve@evil.example".into(),
        rule_id: Some("123".into()),
        exp: Utc::now().timestamp() + 3600,
        nonce: "0123456789abcdef0123456789abcdef".into(),
        channel: "teams".into(),
    }
}

/// Tokens: anything made up, and a genuine token with bytes changed.
pub fn link_token(data: &[u8]) {
    let signer = LinkSigner::new("fuzz-link-secret-0123456789abcdef");
    let claims = genuine_claims();
    let now = Utc::now();
    // Made up from nothing: never verifies (the fuzzer cannot know the key).
    assert!(
        signer.verify(&text(data), now).is_err(),
        "a made-up token verified"
    );
    // A genuine token, changed at the places and to the bytes `data` says.
    let mut token = signer.sign(&claims).into_bytes();
    for pair in data.chunks(2) {
        if let [at, byte] = pair
            && !token.is_empty()
        {
            let at = usize::from(*at) % token.len();
            token[at] = *byte;
        }
    }
    if let Ok(changed) = std::str::from_utf8(&token)
        && let Ok(verified) = signer.verify(changed, now)
    {
        assert_eq!(
            verified, claims,
            "a changed token verified with other claims"
        );
    }
}

const SLACK_SECRET: &str = "fuzz-slack-signing-secret";
const API_TOKEN: &str = "fuzz-api-token-0123456789";

struct Actioner {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

/// One actioner (in-memory bus and store, no executor: nothing is carried out),
/// built once per fuzzing process.
fn actioner() -> &'static Actioner {
    static ACTIONER: OnceLock<Actioner> = OnceLock::new();
    ACTIONER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let settings = Settings::load_from(
            None,
            [
                (
                    "FWDWATCH__SECURITY__LINK_SECRET",
                    "fuzz-link-secret-0123456789abcdef",
                ),
                ("FWDWATCH__ACTIONER__SLACK__SIGNING_SECRET", SLACK_SECRET),
                ("FWDWATCH__ACTIONER__OPERATORS__SLACK_USER_IDS", "U1,U2"),
                ("FWDWATCH__ACTIONER__API_TOKENS__OPSBOT", API_TOKEN),
                ("FWDWATCH__NOTIFIER__LINK_BASE_URL", "http://127.0.0.1:8080"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .expect("fuzz settings load");
        let router = runtime.block_on(async {
            let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let context = fwdwatch_actioner::Context::new(settings, bus, store).expect("a context");
            context
                .bus
                .declare(&context.topology)
                .await
                .expect("the topology");
            fwdwatch_actioner::http::router(context)
        });
        Actioner { runtime, router }
    })
}

/// Sends `request` to the actioner and asserts it did not fail inside.
fn send(mut request: Request<Body>) -> StatusCode {
    let actioner = actioner();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let status = actioner.runtime.block_on(async {
        match actioner.router.clone().oneshot(request).await {
            Ok(response) => response.status(),
            Err(never) => match never {},
        }
    });
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "the actioner failed inside: {status}"
    );
    status
}

/// Slack interactions with a valid signature: the payload itself is the attack.
pub fn slack_interaction(data: &[u8]) {
    let timestamp = Utc::now().timestamp().to_string();
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(SLACK_SECRET.as_bytes()).expect("any key");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(data);
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    let Ok(request) = Request::builder()
        .method(Method::POST)
        .uri("/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &timestamp)
        .header("x-slack-signature", signature)
        .body(Body::from(data.to_vec()))
    else {
        return;
    };
    send(request);
}

/// API commands with a valid bearer token, and status look-ups by any id.
pub fn api_command(data: &[u8]) {
    let Ok(request) = Request::builder()
        .method(Method::POST)
        .uri("/v1/commands")
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
    else {
        return;
    };
    let status = send(request);
    if let Ok(body) = serde_json::from_slice::<Value>(data)
        && let Some(id) = body.get("command_id").and_then(Value::as_str)
        && (id.is_empty() || id.len() > 128 || id.contains(['/', ' ', '\n', '%']))
    {
        assert_eq!(status, StatusCode::BAD_REQUEST, "id {id:?} accepted");
    }
    let id: String = text(data)
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '/' && *c != '?' && *c != '#')
        .take(200)
        .collect();
    if let Ok(request) = Request::builder()
        .method(Method::GET)
        .uri(format!(
            "/v1/commands/{}",
            if id.is_empty() { "x" } else { &id }
        ))
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .body(Body::empty())
    {
        send(request);
    }
}

/// Anything to the actioner's router: `METHOD path\nheader: value\n…\n\nbody`.
pub fn actioner_http(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = text(head);
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("");
    let (method, path) = first.split_once(' ').unwrap_or(("GET", first));
    let method = match method {
        "POST" => Method::POST,
        "HEAD" => Method::HEAD,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        _ => Method::GET,
    };
    let path = if path.starts_with('/') { path } else { "/" };
    let mut builder = Request::builder().method(method).uri(path);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    if let Ok(request) = builder.body(Body::from(body.to_vec())) {
        send(request);
    }
}

/// The Management Activity API's answers: a content listing, a content blob (or a
/// single record), decoded, classified and turned into `audit_event` forwards.
pub fn audit_content(data: &[u8]) {
    use fwdwatch_shared::forwards::audit::{
        self, Change, MAX_FIELD, MAX_PARAMETERS, MAX_RECORDS, MAX_VALUE,
    };
    // "…" marks a cut string: three bytes more than the bound.
    const MARK: usize = 3;
    let _ = m365::decode_content_list(data, Some("https://manage.office.com/next"));
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let records = match &value {
        Value::Array(items) => {
            let records = audit::decode_blob("fuzz", items);
            assert!(
                records.len() >= items.len().min(MAX_RECORDS),
                "a record was dropped"
            );
            records
        }
        one => vec![audit::decode_record(one)],
    };
    for r in &records {
        assert!(!r.id.trim().is_empty(), "every record has an id");
        for (what, s) in [
            ("id", &r.id),
            ("actor", &r.actor),
            ("client_ip", &r.client_ip),
            ("object_id", &r.object_id),
            ("operation", &r.operation),
        ] {
            assert!(s.len() <= MAX_FIELD + MARK + 32, "{what} is not bounded");
        }
        assert!(r.parameters.len() <= MAX_PARAMETERS);
        for p in &r.parameters {
            assert!(p.value.len() <= MAX_VALUE + MARK);
        }
        let change = audit::classify(r);
        assert_eq!(
            r.unreadable.is_some(),
            change == Change::Unreadable,
            "a record that could not be read is always reported"
        );
        if r.unreadable.is_none() {
            assert!(r.created_at.is_some() && !r.operation.is_empty());
        }
        let wire = serde_json::to_vec(r).expect("a record encodes");
        let back: contracts::AuditRecord = serde_json::from_slice(&wire).expect("and decodes");
        assert_eq!(&back, r, "a record survives the wire");
        let _ = r.describe();
        let _ = audit::record_mailbox(r);
    }
    // The rescan: a tenant owning contoso.com, nothing left of any forward.
    let domains = TenantDomains::new(&[classify::AcceptedDomain {
        name: "contoso.com".into(),
        domain_type: classify::DomainType::Authoritative,
        match_subdomains: false,
    }]);
    let directory = Directory::default();
    let resolver = Resolver {
        domains: &domains,
        directory: &directory,
    };
    let found = audit::audit_forwards(&records, Some(&resolver), &[], &[]);
    let unreadable = records
        .iter()
        .filter(|r| r.unreadable.is_some())
        .map(|r| r.id.as_str())
        .collect::<std::collections::BTreeSet<_>>();
    for id in &unreadable {
        assert!(
            found
                .iter()
                .any(|(f, r)| r.id == *id && f.deliveries.iter().all(|d| d.unreadable)),
            "an unreadable record is an audit event of its own"
        );
    }
    for (f, r) in &found {
        assert_eq!(f.signal, Signal::AuditEvent);
        assert_eq!(f.rule_id.as_deref(), Some(r.id.as_str()));
        assert!(
            !f.deliveries.is_empty(),
            "an audit event names where mail went"
        );
        for d in &f.deliveries {
            if let Some(domain) = &d.domain {
                assert!(
                    !domains.is_internal_domain(domain),
                    "{} is inside the tenant",
                    d.target
                );
            }
        }
    }
}
