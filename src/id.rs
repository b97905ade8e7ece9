//! Typed identifiers: [`ChunkId`], [`PackId`] and [`SnapshotId`].
//!
//! All three are 32-byte blake3 digests of the thing they name (a chunk's
//! uncompressed bytes, a pack file's bytes, a snapshot file's bytes), written as
//! 64 lowercase hex digits. Keeping them apart in the type system means a pack id
//! can never be looked up as a chunk id by mistake.

use std::fmt;
use std::str::FromStr;

macro_rules! digest_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The blake3 digest of `data`.
            pub fn of(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, as shown in listings.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = hex::FromHexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)?;
                Ok(Self(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_id!(
    /// blake3 of a chunk's uncompressed bytes.
    ///
    /// ```
    /// use rewindb::id::ChunkId;
    /// let id = ChunkId::of(b"page");
    /// assert_eq!(id.to_hex(), blake3::hash(b"page").to_hex().as_str());
    /// assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
    /// ```
    ChunkId
);
digest_id!(
    /// blake3 of a whole pack file; the pack's file name.
    PackId
);
digest_id!(
    /// blake3 of a snapshot file's bytes; the snapshot's file name.
    SnapshotId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_short_form() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
        assert_eq!(id.short(), &id.to_hex()[..8]);
        assert!("xyz".parse::<ChunkId>().is_err());
    }

    #[test]
    fn serde_as_hex_string() {
        let id = SnapshotId::of(b"s");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<SnapshotId>(&json).unwrap(), id);
    }
}
