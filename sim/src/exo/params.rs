//! Cmdlet parameters as PowerShell binds them: names without case, unknown names and
//! wrong types refused with a ParameterBindingException, the way Exchange answers.

use serde_json::{Map, Value};

use crate::reply::{Reply, exo_error};

pub(crate) const BINDING: &str = "System.Management.Automation.ParameterBindingException";
pub(crate) const NOT_FOUND: &str =
    "Microsoft.Exchange.Management.Tasks.ManagementObjectNotFoundException";
pub(crate) const VALIDATION: &str = "Microsoft.Exchange.Configuration.Tasks.ValidationException";

/// Common parameters every cmdlet accepts and the sim ignores.
const COMMON: &[&str] = &[
    "Confirm",
    "Force",
    "ErrorAction",
    "WarningAction",
    "Verbose",
    "Debug",
    "WhatIf",
    "DomainController",
];

/// `ResultSize`: absent, `Unlimited`, or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultSize {
    Default,
    Unlimited,
    Limit(usize),
}

pub(crate) struct Params<'a> {
    map: &'a Map<String, Value>,
}

pub(crate) fn binding_error(message: &str) -> Reply {
    exo_error(BINDING, message)
}

impl<'a> Params<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Self { map }
    }

    /// Refuses any parameter not in `allowed` (nor common).
    pub(crate) fn check(&self, allowed: &[&str]) -> Result<(), Reply> {
        for k in self.map.keys() {
            let known = allowed
                .iter()
                .chain(COMMON)
                .any(|a| a.eq_ignore_ascii_case(k));
            if !known {
                return Err(binding_error(&format!(
                    "A parameter cannot be found that matches parameter name '{k}'."
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A string parameter; numbers bind as their decimal text, null as absent.
    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, Reply> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(if *b { "True" } else { "False" }.to_string())),
            Some(other) => Err(binding_error(&format!(
                "Cannot bind parameter '{name}'. Cannot convert the \"{other}\" value of type \"{}\" to type \"System.String\".",
                type_name(other)
            ))),
        }
    }

    pub(crate) fn required(&self, name: &str) -> Result<String, Reply> {
        match self.string(name)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(binding_error(&format!(
                "Cannot process command because of one or more missing mandatory parameters: {name}."
            ))),
        }
    }

    /// A switch or boolean: `true`, `false`, `"True"`, `"False"`; absent is false.
    pub(crate) fn flag(&self, name: &str) -> Result<bool, Reply> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s == "$true" => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s == "$false" => Ok(false),
            Some(other) => Err(binding_error(&format!(
                "Cannot bind parameter '{name}'. Cannot convert value \"{other}\" to type \"System.Boolean\". Boolean parameters accept only Boolean values and numbers, such as $True, $False, 1 or 0."
            ))),
        }
    }

    /// A string or an array of strings (multi-valued parameters).
    pub(crate) fn list(&self, name: &str) -> Result<Option<Vec<String>>, Reply> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                Ok(Some(s.split(',').map(|p| p.trim().to_string()).collect()))
            }
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    binding_error(&format!(
                        "Cannot bind parameter '{name}': every element must be a string."
                    ))
                }),
            Some(other) => Err(binding_error(&format!(
                "Cannot bind parameter '{name}'. Cannot convert the \"{other}\" value of type \"{}\" to type \"System.String[]\".",
                type_name(other)
            ))),
        }
    }

    pub(crate) fn result_size(&self) -> Result<ResultSize, Reply> {
        let bad = |v: &Value| {
            binding_error(&format!(
                "Cannot bind parameter 'ResultSize'. Cannot convert value \"{v}\" to type \"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]\". Error: \"The value must be a positive number or 'Unlimited'.\""
            ))
        };
        match self.get("ResultSize") {
            None | Some(Value::Null) => Ok(ResultSize::Default),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("unlimited") => {
                Ok(ResultSize::Unlimited)
            }
            Some(v @ Value::String(s)) => match s.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(ResultSize::Limit(n)),
                _ => Err(bad(v)),
            },
            Some(v @ Value::Number(n)) => match n.as_u64() {
                Some(n) if n > 0 => Ok(ResultSize::Limit(n as usize)),
                _ => Err(bad(v)),
            },
            Some(v) => Err(bad(v)),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "System.Object[]",
        Value::Object(_) => "System.Collections.Hashtable",
        Value::Bool(_) => "System.Boolean",
        Value::Number(_) => "System.Int64",
        Value::String(_) => "System.String",
        Value::Null => "null",
    }
}

/// Exchange's "object not found" error.
pub(crate) fn not_found(object: &str, server: &str) -> Reply {
    exo_error(
        NOT_FOUND,
        &format!(
            "The operation couldn't be performed because object '{object}' couldn't be found on '{server}'."
        ),
    )
}
