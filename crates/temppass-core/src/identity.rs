//! Identity hashes for promotional trials (SPEC.md §4).
//!
//! A 64- or 128-character hex value (SHA-256 / SHA-512 computed by the app)
//! is taken as is, lower-cased; anything else is trimmed, lower-cased and
//! hashed with SHA-256 here, so the raw value never travels further.

use sha2::{Digest, Sha256};

/// Why an identity value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the identity value is empty")]
    Empty,
    #[error("the identity value is longer than {max} bytes")]
    TooLong { max: usize },
}

/// A lower-case hex SHA-256 or SHA-512 of a viewer's identity (e.g. an e-mail address).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityHash(String);

impl IdentityHash {
    /// No e-mail address or account id is this long; a longer value is an attack or a bug.
    pub const MAX_VALUE_LEN: usize = 1024;

    /// Normalises a value from the `AP-TempPass-Identity` header or the reset API's `key`.
    pub fn from_value(raw: &str) -> Result<Self, IdentityError> {
        if raw.len() > Self::MAX_VALUE_LEN {
            return Err(IdentityError::TooLong { max: Self::MAX_VALUE_LEN });
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(IdentityError::Empty);
        }
        if matches!(trimmed.len(), 64 | 128) && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self(trimmed.to_ascii_lowercase()));
        }
        let digest = Sha256::digest(trimmed.to_lowercase().as_bytes());
        Ok(Self(hex::encode(digest)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for IdentityHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Even the hash is personal data in the eyes of some regulators: print a prefix only.
        write!(f, "IdentityHash({}…)", &self.0[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "f7ee5ec7312165148b69fcca1d29075b14b8aef0b5048a332b18b88d09069fb7";

    #[test]
    fn an_email_is_trimmed_lowercased_and_hashed_as_in_the_spec_example() {
        let hash = IdentityHash::from_value("user@domain.com").map(|h| h.as_str().to_owned());
        assert_eq!(hash.as_deref(), Ok(SPEC_EXAMPLE));
        let messy = IdentityHash::from_value("  User@Domain.COM ").map(|h| h.as_str().to_owned());
        assert_eq!(messy.as_deref(), Ok(SPEC_EXAMPLE));
    }

    #[test]
    fn a_hex_hash_is_used_as_given_in_lower_case() {
        let upper = SPEC_EXAMPLE.to_ascii_uppercase();
        assert_eq!(IdentityHash::from_value(&upper).map(|h| h.as_str().to_owned()).as_deref(), Ok(SPEC_EXAMPLE));
        let sha512 = "A".repeat(128);
        assert_eq!(IdentityHash::from_value(&sha512).map(|h| h.as_str().to_owned()), Ok("a".repeat(128)));
    }

    #[test]
    fn empty_and_absurdly_long_values_are_refused() {
        assert_eq!(IdentityHash::from_value(""), Err(IdentityError::Empty));
        assert_eq!(IdentityHash::from_value("   "), Err(IdentityError::Empty));
        assert_eq!(IdentityHash::from_value(&"x".repeat(1025)), Err(IdentityError::TooLong { max: 1024 }));
    }

    #[test]
    fn a_65_character_hex_string_is_hashed_not_trusted() {
        let odd = "a".repeat(65);
        let hash = IdentityHash::from_value(&odd).map(|h| h.as_str().to_owned());
        assert_ne!(hash, Ok(odd));
    }
}
