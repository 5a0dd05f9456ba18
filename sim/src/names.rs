//! Word lists and seeded helpers the generator draws names, ids and dates from.
//!
//! Everything here is a pure function of its inputs: the same seed always gives the
//! same words, GUIDs and timestamps, which is what makes a fleet reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

pub(crate) const FIRST_NAMES: &[&str] = &[
    "Adele", "Alex", "Amir", "Anna", "Ben", "Bianca", "Carlos", "Chen", "Dana", "David", "Elena",
    "Emma", "Farid", "Fatima", "George", "Grace", "Hannah", "Hugo", "Ines", "Isaac", "Jana",
    "Jonas", "Julia", "Kenji", "Lara", "Leo", "Lidia", "Lucas", "Maya", "Megan", "Mohamed",
    "Nadia", "Nestor", "Nora", "Oliver", "Olga", "Pablo", "Patti", "Priya", "Quinn", "Rafael",
    "Rob", "Sara", "Sven", "Tariq", "Tess", "Umar", "Vera", "Victor", "Wei", "Yara", "Zoe",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "Adams",
    "Berg",
    "Bianchi",
    "Brown",
    "Castro",
    "Chowdhury",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hansen",
    "Haddad",
    "Ito",
    "Jansen",
    "Kowalski",
    "Larsen",
    "Lopez",
    "Meyer",
    "Moreau",
    "Nakamura",
    "Novak",
    "Okafor",
    "Olsen",
    "Patel",
    "Petrov",
    "Quinlan",
    "Rossi",
    "Santos",
    "Schmidt",
    "Silva",
    "Smith",
    "Tanaka",
    "Varga",
    "Weber",
    "Wilson",
    "Yilmaz",
    "Zhang",
];

pub(crate) const COMPANY_A: &[&str] = &[
    "Alpine", "Amber", "Atlas", "Beacon", "Birch", "Blue", "Cedar", "Cobalt", "Coral", "Crest",
    "Delta", "Ember", "Fable", "Falcon", "Granite", "Harbor", "Iris", "Juniper", "Kestrel",
    "Linden", "Lumen", "Maple", "Meridian", "North", "Oak", "Onyx", "Orbit", "Pine", "Quartz",
    "River", "Sage", "Silver", "Summit", "Tidal", "Vale", "Willow",
];

pub(crate) const COMPANY_B: &[&str] = &[
    "Accounting",
    "Bakery",
    "Builders",
    "Clinic",
    "Consulting",
    "Dental",
    "Design",
    "Foods",
    "Freight",
    "Health",
    "Labs",
    "Law",
    "Logistics",
    "Media",
    "Motors",
    "Partners",
    "Realty",
    "Robotics",
    "Studio",
    "Supply",
    "Systems",
    "Travel",
    "Ventures",
    "Works",
];

pub(crate) const COMPANY_SUFFIX: &[&str] = &["Ltd", "Inc", "GmbH", "BV", "LLC", "SA", "AB", ""];

pub(crate) const TLDS: &[&str] = &["com", "co.uk", "de", "nl", "io", "net", "fr", "se"];

/// Unicode labels for tenants whose accepted domain is an IDN (written in Unicode by
/// Exchange, so a forward typed in punycode must still count as internal).
pub(crate) const IDN_LABELS: &[&str] = &["müllerbau", "bäckerei", "façade", "smørrebrød", "café"];

/// Consumer mail domains: the usual destination of a personal forward.
pub(crate) const CONSUMER_DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "proton.me",
    "icloud.com",
    "gmx.de",
    "hotmail.co.uk",
    "mail.ru",
    "yandex.com",
    "aol.com",
];

/// External IDN domains, always generated in Unicode; the punycode variant is derived.
pub(crate) const IDN_EXTERNAL: &[&str] = &["bücher.example", "déjà-vu.example", "münchen.example"];

pub(crate) const LOOKALIKE_PREFIXES: &[&str] = &["evil", "secure", "mail"];
pub(crate) const LOOKALIKE_SUFFIXES: &[&str] = &["evil.net", "mailrelay.io"];
pub(crate) const PLUS_TAGS: &[&str] = &["fwd", "inbox", "archive", "2026"];

pub(crate) const SHARED_MAILBOXES: &[&str] = &[
    "info",
    "sales",
    "accounting",
    "support",
    "billing",
    "hr",
    "reception",
    "invoices",
    "office",
    "jobs",
];
pub(crate) const ROOMS: &[&str] = &["Boardroom", "Atrium", "Studio", "Lab", "Garden", "Loft"];

/// Names attackers give forwarding rules (short, blank-looking, or filing-like).
pub(crate) const ATTACKER_RULE_NAMES: &[&str] = &[
    ".", "..", "...", " ", "-", "_", "RSS", "Clean", "Sync", "ooo", "Archive", "a",
];
/// Names of rules users create themselves.
pub(crate) const BENIGN_FORWARD_RULE_NAMES: &[&str] = &[
    "Forward to personal",
    "Copy to assistant",
    "Invoices to accounting",
    "Holiday cover",
    "Send to phone",
    "Backup",
];
pub(crate) const BENIGN_RULE_NAMES: &[&str] = &[
    "Newsletters",
    "Receipts",
    "From boss",
    "Project Atlas",
    "Notifications",
    "Mark read",
];

/// Subject keywords of keyword-scoped rules (technique 3 of forwarding-techniques.md).
pub(crate) const KEYWORDS: &[&str] = &[
    "invoice",
    "payment",
    "wire",
    "bank",
    "password",
    "phish",
    "hacked",
    "do not click",
    "urgent",
];

/// Folders a hiding rule moves mail to (technique 2).
pub(crate) const HIDING_FOLDERS: &[&str] = &[
    "RSS Feeds",
    "RSS Subscriptions",
    "Archive",
    "Deleted Items",
    "Conversation History",
];
pub(crate) const BENIGN_FOLDERS: &[&str] = &["Newsletters", "Receipts", "Projects"];

/// Names of OOF / system rules that CIPP-style scanners skip by name (technique 17).
pub(crate) const SYSTEM_LIKE_RULE_NAMES: &[&str] = &[
    "Microsoft.Exchange.OOF.KnownSenders.Global",
    "Microsoft.Exchange.OOF.AllExternalSenders.Global",
];

/// Base instant of the fleet's timestamps (2026-06-01T00:00:00Z); dates are derived from
/// the seed relative to it, never from the wall clock, so answers stay byte-identical.
pub(crate) const EPOCH: i64 = 1_780_272_000;

/// A seeded RNG for one purpose of one tenant. Mixing `seed`, `index` and a purpose tag
/// through SHA-256 gives independent streams, so a tenant is generated without touching
/// any other, and adding a stream never shifts an existing one.
pub(crate) fn rng_for(seed: u64, index: u64, purpose: &str) -> StdRng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(index.to_le_bytes());
    h.update(purpose.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    StdRng::from_seed(digest)
}

/// Picks one element of a non-empty static list.
pub(crate) fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// A random version-4 GUID from the stream.
pub(crate) fn guid(rng: &mut StdRng) -> u128 {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .as_u128()
}

/// The canonical hyphenated lower-case form of a GUID.
pub(crate) fn guid_str(g: u128) -> String {
    uuid::Uuid::from_u128(g).hyphenated().to_string()
}

/// Seconds before [`EPOCH`], up to `max_days` days.
pub(crate) fn past(rng: &mut StdRng, max_days: i64) -> i64 {
    EPOCH - rng.random_range(0..max_days * 86_400)
}

/// Exchange's date format: `2025-08-08T18:39:16.0000000+00:00`.
pub(crate) fn exo_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S.0000000+00:00")
        .to_string()
}

/// Graph's date format: `2022-02-10T11:26:44Z`.
pub(crate) fn graph_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Lower-case ASCII letters and digits only: turns display words into DNS labels.
pub(crate) fn slugify(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}
