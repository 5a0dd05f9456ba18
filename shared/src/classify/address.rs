//! Address normalisation: every form Exchange and Graph use, down to `local@a-label`.
//!
//! Rules (DESIGN.md): strip `smtp:`/`SMTP:` and display names, split lists, case-fold
//! and IDNA-encode the domain, drop a trailing dot, keep the local part exactly
//! (plus-addressing and case in the local part make a different address).

use std::fmt;

/// A normalised SMTP address: the local part exactly as written, the domain as a
/// lower-case IDNA A-label without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// One target found in a raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Smtp(Address),
    /// `[EX:/o=ExchangeLabs/…]`: an Exchange recipient known only by its legacy DN.
    Exchange(String),
    /// Text that is not an address in any form we know: perhaps a recipient's name.
    Unparsed(String),
    /// Text that claims to be an SMTP address (`[SMTP:…]`, `<…>`, `x@y`) but whose
    /// address cannot be read: an address literal, an IDNA-invalid domain. Never a
    /// name to look up; reported as written.
    Invalid(String),
}

/// Normalises a domain: trims, drops one trailing dot, IDNA-encodes (which also
/// case-folds). Returns `None` for something that is not a usable domain name.
pub fn normalize_domain(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
        return None;
    }
    let ascii = idna::domain_to_ascii(trimmed).ok()?;
    if ascii.is_empty() || ascii.starts_with('.') || ascii.ends_with('.') || ascii.contains("..") {
        return None;
    }
    // A mail domain is letters, digits and hyphens once IDNA-encoded: an address
    // literal (`[203.0.113.5]`) or anything stranger cannot be classified by its
    // domain, so it is not a domain here (the caller reports it as unreadable).
    if !ascii
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        || ascii.len() > 253
        || ascii.split('.').any(|label| label.len() > 63)
    {
        return None;
    }
    Some(ascii)
}

/// Normalises one bare address (`smtp:` prefix allowed, no display name).
pub fn normalize_address(raw: &str) -> Option<Address> {
    let text = strip_smtp_prefix(raw.trim()).trim();
    let text = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(text)
        .trim();
    // The domain is after the last `@`: a quoted local part may contain one.
    let (local, domain) = text.rsplit_once('@')?;
    if local.is_empty() || local.contains(char::is_whitespace) && !local.starts_with('"') {
        return None;
    }
    let domain = normalize_domain(domain)?;
    Some(Address {
        local: local.to_owned(),
        domain,
    })
}

fn strip_smtp_prefix(text: &str) -> &str {
    match text.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("smtp:") => &text[5..],
        _ => text,
    }
}

/// Parses a raw value that may hold several targets.
pub fn parse_targets(raw: &str) -> Vec<Target> {
    split_list(raw)
        .into_iter()
        .filter_map(|item| {
            let item = item.trim();
            (!item.is_empty()).then(|| parse_one(item))
        })
        .collect()
}

fn parse_one(item: &str) -> Target {
    // `"Name" [SMTP:x@y]` or `Name [EX:/o=…]`: the bracketed routing part is the
    // truth; the display half can say anything (it can be spoofed), so it is ignored.
    if let Some(open) = find_unquoted(item, '[')
        && let Some(close) = item.rfind(']')
        && close > open
    {
        let routed = &item[open + 1..close];
        return match routed.split_once(':') {
            Some((kind, value)) if kind.eq_ignore_ascii_case("smtp") => normalize_address(value)
                .map(Target::Smtp)
                .unwrap_or_else(|| Target::Invalid(item.to_owned())),
            Some((kind, value)) if kind.eq_ignore_ascii_case("ex") => {
                Target::Exchange(value.trim().to_owned())
            }
            _ => Target::Unparsed(item.to_owned()),
        };
    }
    // `Name <x@y>`: RFC 5322 display form.
    if let Some(open) = find_unquoted(item, '<')
        && let Some(close) = item.rfind('>')
        && close > open
    {
        return normalize_address(&item[open + 1..close])
            .map(Target::Smtp)
            .unwrap_or_else(|| Target::Invalid(item.to_owned()));
    }
    if item.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ex:")) {
        return Target::Exchange(item[3..].trim().to_owned());
    }
    match normalize_address(item) {
        Some(address) => Target::Smtp(address),
        None if item.contains('@') && !item.contains(char::is_whitespace) => {
            Target::Invalid(item.to_owned())
        }
        None => Target::Unparsed(item.to_owned()),
    }
}

/// Splits on `;` outside quotes and brackets (display names may contain one). Commas
/// are not separators: Exchange lists are `;`-joined, and `Doe, John` is one name.
fn split_list(raw: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in raw.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '[' | '<' if !in_quotes => depth += 1,
            ']' | '>' if !in_quotes => depth = depth.saturating_sub(1),
            ';' if !in_quotes && depth == 0 => {
                parts.push(&raw[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&raw[start..]);
    parts
}

fn find_unquoted(text: &str, needle: char) -> Option<usize> {
    let mut in_quotes = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c == needle && !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}
