//! Extended attributes as an entry carries them (protocol 6, `--xattrs`):
//! the `user.` namespace only, names to values, within Syncthing's limits
//! (a value of at most 1 KiB, at most 4 KiB in all), values as hex in JSON.
//!
//! Owns: the type, its limits and its encoding. Must not: read or write
//! attributes (`fs::xattrs` does) or decide anything about a version.

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The one namespace carried: the others hold the system's and the
/// security modules' state, which is not the user's data to copy.
pub const XATTR_NAMESPACE: &str = "user.";
/// The largest value carried.
pub const MAX_XATTR_VALUE: usize = 1024;
/// The most carried for one path, names and values together.
pub const MAX_XATTRS_TOTAL: usize = 4096;

/// A path's `user.` attributes, names in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xattrs(pub BTreeMap<String, Vec<u8>>);

impl Xattrs {
    /// Names and values together, in bytes.
    pub fn total(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// Why these attributes are not ones a node carries, if they are not:
    /// a name outside `user.`, an empty or NUL-holding name, a value or a
    /// total over the limits.
    pub fn fault(&self) -> Option<&'static str> {
        if self
            .0
            .keys()
            .any(|n| !n.starts_with(XATTR_NAMESPACE) || n.len() == XATTR_NAMESPACE.len() || n.contains('\0'))
        {
            return Some("an extended attribute outside the user. namespace");
        }
        if self.0.values().any(|v| v.len() > MAX_XATTR_VALUE) || self.total() > MAX_XATTRS_TOTAL {
            return Some("extended attributes over the size limits");
        }
        None
    }
}

impl Serialize for Xattrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            map.serialize_entry(name, &hex)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Xattrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Attrs;
        impl<'de> Visitor<'de> for Attrs {
            type Value = Xattrs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("extended attributes: names to hex values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Xattrs, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((name, hex)) = access.next_entry::<String, String>()? {
                    if hex.len() % 2 != 0 || hex.len() > 2 * MAX_XATTR_VALUE || !hex.is_ascii() {
                        return Err(de::Error::custom("an extended attribute value must be at most 1024 bytes in hex"));
                    }
                    let value = (0..hex.len() / 2)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                        .collect::<Result<Vec<u8>, _>>()
                        .map_err(de::Error::custom)?;
                    out.insert(name, value);
                }
                Ok(Xattrs(out))
            }
        }
        d.deserialize_map(Attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_travel_as_hex_and_the_limits_hold() {
        let x = Xattrs(BTreeMap::from([("user.tag".to_string(), vec![0, 0xff, b'a'])]));
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, r#"{"user.tag":"00ff61"}"#);
        assert_eq!(serde_json::from_str::<Xattrs>(&json).unwrap(), x);
        assert_eq!(x.fault(), None);
        assert!(serde_json::from_str::<Xattrs>(r#"{"user.tag":"0"}"#).is_err());
        assert!(serde_json::from_str::<Xattrs>(r#"{"user.tag":"zz"}"#).is_err());
        let outside = Xattrs(BTreeMap::from([("security.selinux".to_string(), vec![1])]));
        assert!(outside.fault().is_some());
        let big = Xattrs(BTreeMap::from([("user.big".to_string(), vec![0; MAX_XATTR_VALUE + 1])]));
        assert!(big.fault().is_some());
        let many = Xattrs((0..5).map(|i| (format!("user.{i}"), vec![0; 1000])).collect());
        assert!(many.fault().is_some(), "over 4 KiB in all");
    }
}
