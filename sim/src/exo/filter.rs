//! A small OPATH `-Filter` parser and evaluator, enough for the filters a scanner
//! sends: `ForwardingSmtpAddress -ne $null`, `(A -ne $null) -or (B -ne $null)`,
//! `LegacyExchangeDN -eq '<dn>'`, `ExternalEmailAddress -like '*@evil.com'`, `-not`.
//!
//! Properties are the row's keys (case-insensitive); `-and` and `-or` bind equally and
//! associate left, as in PowerShell.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp { prop: String, op: Op, value: Lit },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Like,
    NotLike,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Dash(String),
    Word(String),
    Quoted(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '\'' | '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string at position {i}")),
                        // A doubled quote is an escaped quote.
                        Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                            v.push(c);
                            i += 2;
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            v.push(other);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Quoted(v));
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"()'\"".contains(chars[i]) {
                    i += 1;
                }
                let w: String = chars[start..i].iter().collect();
                if let Some(op) = w.strip_prefix('-') {
                    out.push(Tok::Dash(op.to_ascii_lowercase()));
                } else {
                    out.push(Tok::Word(w));
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while let Some(Tok::Dash(op)) = self.peek() {
            let op = op.clone();
            if op != "and" && op != "or" {
                return Err(format!("unexpected operator -{op} at token {}", self.pos));
            }
            self.pos += 1;
            let right = self.unary()?;
            left = if op == "and" {
                Expr::And(Box::new(left), Box::new(right))
            } else {
                Expr::Or(Box::new(left), Box::new(right))
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Dash(op)) if op == "not" => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Tok::Open) => {
                let e = self.expr()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("missing ')'".to_string()),
                }
            }
            Some(Tok::Word(prop)) => {
                let op = match self.next() {
                    Some(Tok::Dash(o)) => match o.as_str() {
                        "eq" => Op::Eq,
                        "ne" => Op::Ne,
                        "like" => Op::Like,
                        "notlike" => Op::NotLike,
                        other => return Err(format!("unsupported operator -{other}")),
                    },
                    _ => return Err(format!("expected an operator after '{prop}'")),
                };
                let value = match self.next() {
                    Some(Tok::Quoted(s)) => Lit::Str(s),
                    Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                        "$null" => Lit::Null,
                        "$true" => Lit::Bool(true),
                        "$false" => Lit::Bool(false),
                        _ => Lit::Str(w),
                    },
                    _ => return Err(format!("expected a value after '{prop}'")),
                };
                Ok(Expr::Cmp { prop, op, value })
            }
            _ => Err(format!("unexpected token at position {}", self.pos)),
        }
    }
}

/// Parses a filter; the error text goes into Exchange's "Invalid filter syntax" message.
pub(crate) fn parse(s: &str) -> Result<Expr, String> {
    let toks = tokenize(s)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.expr()?;
    if p.pos < p.toks.len() {
        return Err(format!("unexpected text after token {}", p.pos));
    }
    Ok(e)
}

/// Every property the filter names.
pub(crate) fn properties(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            properties(a, out);
            properties(b, out);
        }
        Expr::Not(a) => properties(a, out),
        Expr::Cmp { prop, .. } => out.push(prop.clone()),
    }
}

/// Case-insensitive `*`/`?` wildcard match.
fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matcher with backtracking to the last `*`.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn scalar_matches(v: &Value, op: Op, lit: &Lit) -> bool {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    match (op, lit) {
        (_, Lit::Null) => false,
        (Op::Eq | Op::Ne, Lit::Bool(b)) => v.as_bool() == Some(*b),
        (Op::Eq | Op::Ne, Lit::Str(s)) => text.eq_ignore_ascii_case(s),
        (Op::Like | Op::NotLike, Lit::Str(s)) => like(s, &text),
        (Op::Like | Op::NotLike, Lit::Bool(b)) => v.as_bool() == Some(*b),
    }
}

fn lookup<'a>(row: &'a Map<String, Value>, prop: &str) -> &'a Value {
    row.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(prop))
        .map_or(&Value::Null, |(_, v)| v)
}

pub(crate) fn eval(e: &Expr, row: &Map<String, Value>) -> bool {
    match e {
        Expr::And(a, b) => eval(a, row) && eval(b, row),
        Expr::Or(a, b) => eval(a, row) || eval(b, row),
        Expr::Not(a) => !eval(a, row),
        Expr::Cmp { prop, op, value } => {
            let v = lookup(row, prop);
            let is_null = match v {
                Value::Null => true,
                Value::Array(a) => a.is_empty(),
                Value::String(s) => s.is_empty(),
                _ => false,
            };
            if *value == Lit::Null {
                return match op {
                    Op::Eq | Op::Like => is_null,
                    Op::Ne | Op::NotLike => !is_null,
                };
            }
            let any = match v {
                Value::Array(a) => a.iter().any(|x| scalar_matches(x, *op, value)),
                other => scalar_matches(other, *op, value),
            };
            match op {
                Op::Eq | Op::Like => any,
                Op::Ne | Op::NotLike => !any,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn forwarding_filters() {
        let fwd = row(json!({"ForwardingSmtpAddress": "smtp:a@b.c", "ForwardingAddress": null}));
        let none = row(json!({"ForwardingSmtpAddress": null, "ForwardingAddress": null}));
        let both =
            parse("(ForwardingSmtpAddress -ne $null) -or (ForwardingAddress -ne $null)").unwrap();
        assert!(eval(&both, &fwd));
        assert!(!eval(&both, &none));
        let one = parse("forwardingaddress -ne $NULL").unwrap();
        assert!(!eval(&one, &fwd));
        let like_f = parse("ForwardingSmtpAddress -like 'smtp:a*'").unwrap();
        assert!(eval(&like_f, &fwd));
        assert!(parse("ForwardingSmtpAddress -gt 3").is_err());
        assert!(parse("(ForwardingSmtpAddress -ne $null").is_err());
    }

    #[test]
    fn quoted_values_and_not() {
        let r = row(json!({"LegacyExchangeDN": "/o=X/cn=Recipients/cn=ab-it's"}));
        let f = parse("LegacyExchangeDN -eq '/o=X/cn=Recipients/cn=ab-it''s'").unwrap();
        assert!(eval(&f, &r));
        assert!(!eval(
            &parse("-not (LegacyExchangeDN -eq '/o=X/cn=Recipients/cn=ab-it''s')").unwrap(),
            &r
        ));
    }
}
