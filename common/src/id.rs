//! [`MemberId`]: the persistent identity of one member (one `hivemind agent` process).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A member's persistent id: a random nonzero u64, shown as 16 lowercase hex digits.
///
/// Human-readable formats (JSON, TOML) carry the hex string; binary formats carry the u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(u64);

/// Why a string or number is not a [`MemberId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberIdError {
    #[error("member id must be 16 hex digits, got {0:?}")]
    NotHex(String),
    #[error("member id must be nonzero")]
    Zero,
}

impl MemberId {
    /// Wraps a raw value; zero is reserved for "no member".
    pub fn new(raw: u64) -> Result<Self, MemberIdError> {
        if raw == 0 {
            Err(MemberIdError::Zero)
        } else {
            Ok(Self(raw))
        }
    }

    /// A fresh random id.
    pub fn random<R: rand::Rng>(rng: &mut R) -> Self {
        loop {
            let raw: u64 = rng.gen();
            if raw != 0 {
                return Self(raw);
            }
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for MemberId {
    type Err = MemberIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MemberIdError::NotHex(s.to_string()));
        }
        let raw = u64::from_str_radix(s, 16).map_err(|_| MemberIdError::NotHex(s.to_string()))?;
        Self::new(raw)
    }
}

impl Serialize for MemberId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for MemberId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let raw = u64::deserialize(deserializer)?;
            MemberId::new(raw).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_is_not_an_id() {
        assert_eq!(MemberId::new(0), Err(MemberIdError::Zero));
        assert!("0000000000000000".parse::<MemberId>().is_err());
    }

    #[test]
    fn non_hex_is_rejected() {
        for bad in ["", "xyz", "12345678901234567", "-1", "0x10"] {
            assert!(bad.parse::<MemberId>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn hex_round_trip(raw in 1u64..) {
            let id = MemberId::new(raw).unwrap();
            let shown = id.to_string();
            prop_assert_eq!(shown.len(), 16);
            prop_assert_eq!(shown.parse::<MemberId>().unwrap(), id);
        }

        #[test]
        fn binary_and_json_round_trip(raw in 1u64..) {
            let id = MemberId::new(raw).unwrap();
            prop_assert_eq!(crate::decode::<MemberId>(&crate::encode(&id)).unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(&json, &format!("\"{id}\""));
            prop_assert_eq!(serde_json::from_str::<MemberId>(&json).unwrap(), id);
        }
    }
}
