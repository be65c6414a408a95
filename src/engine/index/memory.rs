//! An index database in memory: sorted maps, no file. For tests, fuzzing
//! and the benches; what it holds goes with it.
//!
//! Owns: `MemoryDb`. Must not: be used where the index must survive a
//! restart.

use super::db::{IndexDb, IndexError, OnDisk, Rows, Table, Write};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

#[derive(Debug, Default, Clone)]
pub struct MemoryDb {
    tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl IndexDb for MemoryDb {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.tables.get(&table).and_then(|t| t.get(key)).cloned())
    }

    fn range(&self, table: Table, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Result<Rows<'_>, IndexError> {
        let Some(t) = self.tables.get(&table) else {
            return Ok(Box::new(std::iter::empty()));
        };
        // An empty range (lo past hi) is no rows, not a panic.
        let empty = match (lo, hi) {
            (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => {
                l > h || (l == h && !(matches!(lo, Bound::Included(_)) && matches!(hi, Bound::Included(_))))
            }
            _ => false,
        };
        if empty {
            return Ok(Box::new(std::iter::empty()));
        }
        Ok(Box::new(t.range::<[u8], _>((lo, hi)).map(|(k, v)| Ok((k.clone(), v.clone())))))
    }

    fn commit(&mut self, writes: Vec<Write>, _durable: bool) -> Result<(), IndexError> {
        for w in writes {
            match w {
                Write::Put(t, k, v) => {
                    self.tables.entry(t).or_default().insert(k, v);
                }
                Write::Delete(t, k) => {
                    if let Some(t) = self.tables.get_mut(&t) {
                        t.remove(&k);
                    }
                }
                Write::Clear(t) => {
                    self.tables.remove(&t);
                }
            }
        }
        Ok(())
    }

    fn on_disk(&self) -> Result<OnDisk, IndexError> {
        Ok(OnDisk::Memory)
    }

    fn path(&self) -> Option<&Path> {
        None
    }

    fn rewrite(&mut self) -> Result<(), IndexError> {
        Ok(())
    }
}
