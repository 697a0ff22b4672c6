//! Profile ids: what a valid one is, and how the coordinator makes one.
//!
//! A [`ProfileId`] is checked once, where it enters (a request, a flag, a
//! stored record); code holding one need not check it again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A checked profile id: 1 to 128 of `[A-Za-z0-9._-]`, starting with a
/// letter or digit. Serialized as the bare string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProfileId(String);

/// Shown as the quoted id, as the `String` it replaced was: messages that
/// say `capture {id:?}` read the same.
impl fmt::Debug for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl ProfileId {
    /// Checks `id` and takes it.
    pub fn parse(id: impl Into<String>) -> Result<ProfileId, ProfileIdError> {
        let id = id.into();
        validate_profile_id(&id)?;
        Ok(ProfileId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProfileId {
    type Error = ProfileIdError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        ProfileId::parse(id)
    }
}

impl From<ProfileId> for String {
    fn from(id: ProfileId) -> String {
        id.0
    }
}

impl FromStr for ProfileId {
    type Err = ProfileIdError;
    fn from_str(id: &str) -> Result<Self, Self::Err> {
        ProfileId::parse(id)
    }
}

impl AsRef<str> for ProfileId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ProfileId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Compared with text, so code and tests can say `manifest.profile_id == "cap"`.
impl PartialEq<str> for ProfileId {
    fn eq(&self, id: &str) -> bool {
        self.0 == id
    }
}

impl PartialEq<&str> for ProfileId {
    fn eq(&self, id: &&str) -> bool {
        self.0 == *id
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a profile id was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProfileIdError {
    #[error("profile id is empty")]
    Empty,
    #[error("profile id is {0} characters long; at most 128 are allowed")]
    TooLong(usize),
    #[error("profile id {id:?} contains {bad:?}; use only letters, digits, '.', '_' and '-'")]
    BadCharacter { id: String, bad: char },
    #[error("profile id {0:?} must start with a letter or digit")]
    BadStart(String),
}

/// Checks a profile id: 1 to 128 of `[A-Za-z0-9._-]`, starting with a letter
/// or digit (so it is never `.`, `..` or a flag-like `-x`).
fn validate_profile_id(id: &str) -> Result<(), ProfileIdError> {
    let first = id.chars().next().ok_or(ProfileIdError::Empty)?;
    if id.len() > 128 {
        return Err(ProfileIdError::TooLong(id.len()));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ProfileIdError::BadCharacter {
            id: id.to_string(),
            bad,
        });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(ProfileIdError::BadStart(id.to_string()));
    }
    Ok(())
}

/// A fresh id such as `rl-20261122-223355-7f3a`: sortable by time, readable,
/// and unique enough that two captures started in the same second differ.
/// Valid by construction.
pub fn generate_profile_id(unix_ns: i64) -> ProfileId {
    let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let stamp = when
        .format(time::macros::format_description!(
            "[year][month][day]-[hour][minute][second]"
        ))
        .unwrap_or_default();
    let suffix: u16 = rand::random();
    ProfileId(format!("rl-{stamp}-{suffix:04x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        validate_profile_id("tp4_test-1.2").unwrap();
        validate_profile_id("1763850000.123").unwrap();
    }

    #[test]
    fn refuses_paths_and_odd_characters() {
        assert_eq!(validate_profile_id(""), Err(ProfileIdError::Empty));
        assert!(matches!(
            validate_profile_id("../etc"),
            Err(ProfileIdError::BadCharacter { bad: '/', .. })
        ));
        assert!(matches!(
            validate_profile_id("a b"),
            Err(ProfileIdError::BadCharacter { bad: ' ', .. })
        ));
        assert!(matches!(
            validate_profile_id(".."),
            Err(ProfileIdError::BadStart(_))
        ));
        assert!(matches!(
            validate_profile_id("-rf"),
            Err(ProfileIdError::BadStart(_))
        ));
        assert!(matches!(
            validate_profile_id(&"a".repeat(129)),
            Err(ProfileIdError::TooLong(129))
        ));
    }

    #[test]
    fn a_profile_id_is_checked_where_it_enters() {
        assert_eq!("cap-1".parse::<ProfileId>().unwrap().as_str(), "cap-1");
        assert!(matches!(
            ProfileId::parse("../x"),
            Err(ProfileIdError::BadCharacter { bad: '/', .. })
        ));
        let stored: ProfileId = serde_json::from_str("\"cap-1\"").unwrap();
        assert_eq!(serde_json::to_string(&stored).unwrap(), "\"cap-1\"");
        let refused = serde_json::from_str::<ProfileId>("\"a b\"").unwrap_err();
        assert!(
            refused.to_string().contains("use only letters"),
            "{refused}"
        );
    }

    #[test]
    fn generated_ids_are_valid_and_dated() {
        // 2026-11-22T22:33:55Z
        let id = generate_profile_id(1_795_386_835_000_000_000);
        validate_profile_id(&id).unwrap();
        assert!(id.starts_with("rl-20261122-223355-"), "{id}");
    }
}
