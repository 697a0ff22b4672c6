//! Which agents a capture goes to: `--select role=prefill,tp=0,label.zone=a`.
//!
//! Keys are ANDed; several values of one key are alternatives (OR).

use std::collections::BTreeMap;
use std::fmt;

use rankline_proto::{AgentIdentity, Role, Selector};
use thiserror::Error;

/// The keys a selector may use, for error messages.
pub const SELECT_KEYS: &str = "role, worker, host, tp, ep, dp, pp, agent, label.<name>";

/// Why a selector was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("selector {0:?} is not key=value; write e.g. role=prefill,tp=0")]
    NotKeyValue(String),
    #[error("unknown selector key {0:?}; use {SELECT_KEYS}")]
    UnknownKey(String),
    #[error("selector {key}={value:?}: {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SelectKey {
    Role,
    Worker,
    Host,
    Tp,
    Ep,
    Dp,
    Pp,
    Agent,
    Label(String),
}

impl SelectKey {
    fn parse(key: &str) -> Result<SelectKey, SelectError> {
        let key = key.trim();
        Ok(match key {
            "role" => SelectKey::Role,
            "worker" => SelectKey::Worker,
            "host" => SelectKey::Host,
            "tp" => SelectKey::Tp,
            "ep" => SelectKey::Ep,
            "dp" => SelectKey::Dp,
            "pp" => SelectKey::Pp,
            "agent" => SelectKey::Agent,
            _ => match key.strip_prefix("label.") {
                Some(name) if !name.is_empty() => SelectKey::Label(name.to_string()),
                _ => return Err(SelectError::UnknownKey(key.to_string())),
            },
        })
    }

    fn name(&self) -> String {
        match self {
            SelectKey::Role => "role".into(),
            SelectKey::Worker => "worker".into(),
            SelectKey::Host => "host".into(),
            SelectKey::Tp => "tp".into(),
            SelectKey::Ep => "ep".into(),
            SelectKey::Dp => "dp".into(),
            SelectKey::Pp => "pp".into(),
            SelectKey::Agent => "agent".into(),
            SelectKey::Label(name) => format!("label.{name}"),
        }
    }

    /// Checks a value's form so a typo fails at once instead of matching nothing.
    fn check_value(&self, value: &str) -> Result<(), SelectError> {
        let expected = match self {
            SelectKey::Role if Role::from_word(value).is_none() => "use unified, prefill or decode",
            SelectKey::Worker | SelectKey::Tp | SelectKey::Ep | SelectKey::Dp | SelectKey::Pp
                if value.parse::<u32>().is_err() =>
            {
                "use a whole number"
            }
            _ if value.is_empty() => "the value is empty",
            _ => return Ok(()),
        };
        Err(SelectError::BadValue {
            key: self.name(),
            value: value.to_string(),
            expected,
        })
    }

    /// The agent's value for this key, `None` when the agent has none
    /// (no dp rank, no such label).
    fn value_of(&self, agent: &AgentIdentity) -> Option<String> {
        match self {
            SelectKey::Role => Some(agent.role().word().to_string()),
            SelectKey::Worker => Some(agent.worker.to_string()),
            SelectKey::Host => Some(agent.host.clone()),
            SelectKey::Tp => Some(agent.tp_rank.to_string()),
            SelectKey::Ep => Some(agent.ep_rank.to_string()),
            SelectKey::Dp => agent.dp_rank.map(|v| v.to_string()),
            SelectKey::Pp => agent.pp_rank.map(|v| v.to_string()),
            SelectKey::Agent => Some(agent.agent_id.clone()),
            SelectKey::Label(name) => agent.labels.get(name).cloned(),
        }
    }
}

/// A parsed, checked selection. Empty selects every agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    alternatives: BTreeMap<SelectKey, Vec<String>>,
}

impl Selection {
    /// Checks the selectors of a request.
    pub fn new(selectors: &[Selector]) -> Result<Selection, SelectError> {
        let mut selection = Selection::default();
        for selector in selectors {
            let key = SelectKey::parse(&selector.key)?;
            let value = normalize_value(&key, selector.value.trim());
            key.check_value(&value)?;
            let values = selection.alternatives.entry(key).or_default();
            if !values.contains(&value) {
                values.push(value);
            }
        }
        Ok(selection)
    }

    pub fn is_empty(&self) -> bool {
        self.alternatives.is_empty()
    }

    /// True when the agent matches every key (any of that key's values).
    pub fn matches(&self, agent: &AgentIdentity) -> bool {
        self.alternatives.iter().all(|(key, values)| {
            key.value_of(agent)
                .is_some_and(|have| values.contains(&have))
        })
    }
}

/// Roles compare by their canonical word, so `role=PREFILL` works.
fn normalize_value(key: &SelectKey, value: &str) -> String {
    match (key, Role::from_word(value)) {
        (SelectKey::Role, Some(role)) => role.word().to_string(),
        _ => value.to_string(),
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("all agents");
        }
        let mut first = true;
        for (key, values) in &self.alternatives {
            for value in values {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{}={value}", key.name())?;
            }
        }
        Ok(())
    }
}

/// Parses command-line selections (`role=prefill,tp=0`, one or more
/// arguments) into request selectors, checking them on the way.
pub fn parse_selectors<S: AsRef<str>>(args: &[S]) -> Result<Vec<Selector>, SelectError> {
    let mut selectors = Vec::new();
    for part in args
        .iter()
        .flat_map(|arg| arg.as_ref().split(','))
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| SelectError::NotKeyValue(part.to_string()))?;
        selectors.push(Selector {
            key: key.trim().to_string(),
            value: value.trim().to_string(),
        });
    }
    Selection::new(&selectors)?;
    Ok(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(role: Role, tp: u32, host: &str) -> AgentIdentity {
        let mut identity = AgentIdentity {
            agent_id: format!("{host}/{}/{tp}", role.word()),
            host: host.into(),
            tp_rank: tp,
            ..Default::default()
        };
        identity.set_role(role);
        identity.labels.insert("zone".into(), "a".into());
        identity
    }

    #[test]
    fn and_across_keys_or_within_a_key() {
        let selection = Selection::new(
            &parse_selectors(&["role=prefill,tp=0", "tp=1", "label.zone=a"]).unwrap(),
        )
        .unwrap();
        assert!(selection.matches(&agent(Role::Prefill, 0, "h")));
        assert!(selection.matches(&agent(Role::Prefill, 1, "h")));
        assert!(!selection.matches(&agent(Role::Prefill, 2, "h")));
        assert!(!selection.matches(&agent(Role::Decode, 0, "h")));
        assert_eq!(selection.to_string(), "role=prefill,tp=0,tp=1,label.zone=a");
    }

    #[test]
    fn empty_selects_everyone_and_missing_values_never_match() {
        assert!(Selection::default().matches(&agent(Role::Unified, 0, "h")));
        let dp = Selection::new(&parse_selectors(&["dp=0"]).unwrap()).unwrap();
        assert!(!dp.matches(&agent(Role::Unified, 0, "h")));
    }

    #[test]
    fn bad_selectors_say_what_to_write() {
        assert_eq!(
            parse_selectors(&["rolle=prefill"]),
            Err(SelectError::UnknownKey("rolle".into()))
        );
        assert!(matches!(
            parse_selectors(&["tp=first"]),
            Err(SelectError::BadValue { .. })
        ));
        assert!(matches!(
            parse_selectors(&["role=both"]),
            Err(SelectError::BadValue { .. })
        ));
        assert_eq!(
            parse_selectors(&["prefill"]),
            Err(SelectError::NotKeyValue("prefill".into()))
        );
        assert!(parse_selectors(&["role=PREFILL"]).is_ok());
    }
}
