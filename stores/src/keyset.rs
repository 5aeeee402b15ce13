//! Key sets and queues for subsetting that stay bounded in memory: in a `BTreeSet` / `Vec` up to a
//! limit, then in a temporary sled database on disk (deleted when dropped).

use crate::error::StoreError;
use std::collections::BTreeSet;

/// Column values of one row, as text (`None` for NULL), in the order of the projection asked for.
pub type Key = Vec<Option<String>>;

/// Keys held in memory per set or queue before spilling to disk (`WF_SUBSET_MEMORY_KEYS` overrides).
/// At about 100-200 bytes an entry, 250,000 keeps a set plus its queue well under 100 MB.
pub fn memory_limit() -> usize {
    std::env::var("WF_SUBSET_MEMORY_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250_000)
}

/// Page cache of the spill database (sled's default is 1 GB).
const SPILL_CACHE_BYTES: u64 = 16 << 20;

fn spill_err(e: sled::Error) -> StoreError {
    StoreError::Staging {
        path: std::env::temp_dir(),
        message: format!("subset spill file: {e}"),
    }
}

/// The on-disk side shared by the sets and queues of one selection: a temporary database, opened
/// only when something first spills (most subsets never do), removed when the last handle drops.
#[derive(Clone, Default)]
pub struct Spill {
    db: std::sync::Arc<std::sync::OnceLock<sled::Db>>,
}

impl Spill {
    pub fn new() -> Result<Spill, StoreError> {
        Ok(Spill::default())
    }

    fn tree(&self) -> Result<sled::Tree, StoreError> {
        let db = match self.db.get() {
            Some(db) => db,
            None => {
                // sled caches up to 1 GB of pages by default: a spill that kept its keys in
                // that cache would hold in memory what it spilled to stay out of it.
                let opened = sled::Config::new()
                    .temporary(true)
                    .cache_capacity(SPILL_CACHE_BYTES)
                    .open()
                    .map_err(spill_err)?;
                self.db.get_or_init(|| opened)
            }
        };
        let id = db.generate_id().map_err(spill_err)?;
        db.open_tree(id.to_be_bytes()).map_err(spill_err)
    }
}

/// A key's bytes: per value a tag (0 null, 1 text), a big-endian length and the text.
fn encode(k: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * k.len());
    for v in k {
        match v {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

fn decode(mut b: &[u8]) -> Key {
    let mut k = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        if tag == 0 {
            k.push(None);
            b = rest;
        } else {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            k.push(Some(
                String::from_utf8_lossy(&rest[4..4 + len]).into_owned(),
            ));
            b = &rest[4 + len..];
        }
    }
    k
}

/// A set of keys; moves to disk past the memory limit.
pub struct KeySet {
    mem: BTreeSet<Key>,
    disk: Option<sled::Tree>,
    spill: Spill,
    limit: usize,
    len: usize,
}

impl KeySet {
    pub fn new(spill: &Spill, limit: usize) -> KeySet {
        KeySet {
            mem: BTreeSet::new(),
            disk: None,
            spill: spill.clone(),
            limit: limit.max(1),
            len: 0,
        }
    }

    /// Adds `k`; true if it was not there.
    pub fn insert(&mut self, k: Key) -> Result<bool, StoreError> {
        let fresh = match &self.disk {
            Some(t) => t.insert(encode(&k), &[]).map_err(spill_err)?.is_none(),
            None => self.mem.insert(k),
        };
        if fresh {
            self.len += 1;
        }
        if self.disk.is_none() && self.mem.len() > self.limit {
            let t = self.spill.tree()?;
            for k in std::mem::take(&mut self.mem) {
                t.insert(encode(&k), &[]).map_err(spill_err)?;
            }
            self.disk = Some(t);
        }
        Ok(fresh)
    }

    pub fn contains(&self, k: &Key) -> Result<bool, StoreError> {
        match &self.disk {
            Some(t) => t.contains_key(encode(k)).map_err(spill_err),
            None => Ok(self.mem.contains(k)),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `n` keys following `after` (from the start when `None`), in the set's own order:
    /// a cursor that holds nothing between calls.
    pub fn chunk_after(&self, after: Option<&Key>, n: usize) -> Result<Vec<Key>, StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        match &self.disk {
            Some(t) => {
                let iter = match after {
                    Some(k) => t.range::<Vec<u8>, _>((Excluded(encode(k)), Unbounded)),
                    None => t.iter(),
                };
                iter.keys()
                    .take(n)
                    .map(|r| r.map(|b| decode(&b)).map_err(spill_err))
                    .collect()
            }
            None => Ok(match after {
                Some(k) => self
                    .mem
                    .range::<Key, _>((Excluded(k), Unbounded))
                    .take(n)
                    .cloned()
                    .collect(),
                None => self.mem.iter().take(n).cloned().collect(),
            }),
        }
    }
}

/// A FIFO of rows (projected keys); moves to disk past the memory limit.
pub struct KeyQueue {
    mem: Vec<Key>,
    disk: Option<sled::Tree>,
    spill: Spill,
    limit: usize,
    next: u64,
}

impl KeyQueue {
    pub fn new(spill: &Spill, limit: usize) -> KeyQueue {
        KeyQueue {
            mem: Vec::new(),
            disk: None,
            spill: spill.clone(),
            limit: limit.max(1),
            next: 0,
        }
    }

    pub fn push(&mut self, k: Key) -> Result<(), StoreError> {
        match &self.disk {
            Some(t) => {
                t.insert(self.next.to_be_bytes(), encode(&k))
                    .map_err(spill_err)?;
                self.next += 1;
            }
            None => {
                self.mem.push(k);
                if self.mem.len() > self.limit {
                    let t = self.spill.tree()?;
                    for k in std::mem::take(&mut self.mem) {
                        t.insert(self.next.to_be_bytes(), encode(&k))
                            .map_err(spill_err)?;
                        self.next += 1;
                    }
                    self.disk = Some(t);
                }
            }
        }
        Ok(())
    }

    /// Takes every queued row out, `n` at a time, in order.
    pub fn drain_chunks(self, n: usize) -> impl Iterator<Item = Result<Vec<Key>, StoreError>> {
        let KeyQueue { mem, disk, .. } = self;
        let disk_iter = disk.into_iter().flat_map(|t| t.iter().values());
        let mem_iter = mem.into_iter().map(Ok);
        let all = mem_iter.chain(disk_iter.map(|v| v.map(|b| decode(&b)).map_err(spill_err)));
        Chunks {
            inner: Box::new(all),
            n,
        }
    }
}

struct Chunks {
    inner: Box<dyn Iterator<Item = Result<Key, StoreError>> + Send>,
    n: usize,
}

impl Iterator for Chunks {
    type Item = Result<Vec<Key>, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut chunk = Vec::with_capacity(self.n);
        for item in self.inner.by_ref() {
            match item {
                Ok(k) => chunk.push(k),
                Err(e) => return Some(Err(e)),
            }
            if chunk.len() == self.n {
                break;
            }
        }
        (!chunk.is_empty()).then_some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        vec![
            Some(format!("k{i}")),
            if i.is_multiple_of(3) {
                None
            } else {
                Some(format!("{i}"))
            },
        ]
    }

    #[test]
    fn sets_and_queues_behave_the_same_on_disk() {
        let spill = Spill::new().unwrap();
        let mut set = KeySet::new(&spill, 5);
        let mut queue = KeyQueue::new(&spill, 5);
        for i in 0..50 {
            assert!(set.insert(key(i)).unwrap());
            assert!(!set.insert(key(i)).unwrap());
            queue.push(key(i)).unwrap();
        }
        assert!(set.disk.is_some() && queue.disk.is_some(), "both spilled");
        assert_eq!(set.len(), 50);
        assert!(set.contains(&key(7)).unwrap() && !set.contains(&key(70)).unwrap());
        let (mut seen, mut after) = (0, None);
        loop {
            let chunk = set.chunk_after(after.as_ref(), 8).unwrap();
            let Some(last) = chunk.last().cloned() else {
                break;
            };
            seen += chunk.len();
            after = Some(last);
        }
        assert_eq!(seen, 50, "the cursor visits every key once");
        let drained: Vec<Key> = queue.drain_chunks(7).flat_map(|c| c.unwrap()).collect();
        assert_eq!(
            drained,
            (0..50).map(key).collect::<Vec<_>>(),
            "FIFO order kept"
        );
    }
}
