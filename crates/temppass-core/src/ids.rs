//! Identifier newtypes: the only way in is `parse`, which applies the limits of SPEC.md §3–§4.

use std::fmt;

/// Why a raw identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("contains a character outside [A-Za-z0-9_.-]")]
    BadCharacter,
    #[error("contains a control character")]
    ControlCharacter,
    #[error("contains a NUL character")]
    Nul,
}

fn check_len(raw: &str, max: usize) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > max {
        return Err(IdError::TooLong { max });
    }
    Ok(())
}

fn is_plain_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A service provider (requestor) id, e.g. `REF30`.
    ServiceProviderId
);
string_newtype!(
    /// An MVPD id, e.g. `TempPass` or `Cablevision`.
    MvpdId
);
string_newtype!(
    /// The decoded value of `AP-Device-Identifier`.
    DeviceId
);
string_newtype!(
    /// A resource (title or channel) id named in a decision request.
    ResourceId
);

/// A service provider or MVPD id: at most 128 plain characters.
fn plain_id(raw: &str) -> Result<String, IdError> {
    check_len(raw, PLAIN_ID_MAX_LEN)?;
    if !raw.chars().all(is_plain_id_char) {
        return Err(IdError::BadCharacter);
    }
    Ok(raw.to_owned())
}

const PLAIN_ID_MAX_LEN: usize = 128;

impl ServiceProviderId {
    pub const MAX_LEN: usize = PLAIN_ID_MAX_LEN;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        plain_id(raw).map(Self)
    }
}

impl MvpdId {
    pub const MAX_LEN: usize = PLAIN_ID_MAX_LEN;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        plain_id(raw).map(Self)
    }
}

impl DeviceId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check_len(raw, Self::MAX_LEN)?;
        if raw.chars().any(char::is_control) {
            return Err(IdError::ControlCharacter);
        }
        Ok(Self(raw.to_owned()))
    }
}

impl ResourceId {
    /// Resources may be MRSS documents, so the limit is generous but finite.
    pub const MAX_LEN: usize = 4096;

    /// Any text but NUL, which no store can hold (PostgreSQL refuses it in `text`).
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check_len(raw, Self::MAX_LEN)?;
        if raw.contains('\0') {
            return Err(IdError::Nul);
        }
        Ok(Self(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mvpd_ids_follow_the_plain_alphabet_and_length_limit() {
        assert!(MvpdId::parse("TempPass").is_ok());
        assert!(MvpdId::parse("a.b-c_9").is_ok());
        assert_eq!(MvpdId::parse(""), Err(IdError::Empty));
        assert_eq!(MvpdId::parse("a b"), Err(IdError::BadCharacter));
        assert_eq!(MvpdId::parse(&"a".repeat(129)), Err(IdError::TooLong { max: 128 }));
        assert!(MvpdId::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn device_ids_are_limited_to_256_bytes_without_control_characters() {
        assert!(DeviceId::parse("device-1").is_ok());
        assert!(DeviceId::parse(&"d".repeat(256)).is_ok());
        assert_eq!(DeviceId::parse(&"d".repeat(257)), Err(IdError::TooLong { max: 256 }));
        assert_eq!(DeviceId::parse("a\nb"), Err(IdError::ControlCharacter));
        assert_eq!(DeviceId::parse(""), Err(IdError::Empty));
        assert_eq!(DeviceId::parse("a\0b"), Err(IdError::ControlCharacter));
    }

    #[test]
    fn resource_ids_may_hold_any_text_but_nul() {
        assert!(ResourceId::parse("<rss><item>\n\t</item></rss>").is_ok());
        assert_eq!(ResourceId::parse("res\u{0}01"), Err(IdError::Nul));
    }
}
