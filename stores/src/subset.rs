//! The referentially complete subset of one district, across stores.
//!
//! Algorithm (to a fixpoint, in each store's single read snapshot):
//! 1. Seed: rows whose district column equals the district; reference tables whole.
//! 2. Repeat while new rows appeared: for each new row, its parents through every FK (declared or
//!    virtual) are selected — always, or the subset would not load; and rows of the tables listed in
//!    `follow_children` that reference it are selected — only there, or the subset balloons.
//!
//! Keys are queried in batches (`= ANY` / `IN (VALUES …)`), never through temp tables, so PROD may
//! be a read-only replica. The key sets are held by wf, one text tuple per selected row, and stay
//! bounded in memory: past `keyset::memory_limit()` entries (default 250,000, env
//! `WF_SUBSET_MEMORY_KEYS`) key sets and the rows still to follow move to a temporary database on
//! disk; seed rows are streamed, and rows are followed `FOLLOW_BATCH` at a time.

use crate::config::{ColumnRef, Config};
use crate::error::StoreError;
use crate::keyset::{key_hash_of, memory_limit, HashSet128, KeyQueue, KeySet, Spill};
use crate::schema::{ForeignKey, Table};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub use crate::keyset::Key;
use crate::snapshot::SnapshotReader;

/// Keys asked for per query.
pub const KEY_BATCH: usize = 1000;

/// Keys followed per query while selecting the subset: most of a follow's time is the round
/// trip, not the keys (5,000 student ids: 9 ms in PostgreSQL, 1,000: 3 ms). `rows_in` splits
/// them where its engine binds fewer at once.
const FOLLOW_BATCH: usize = 5000;

/// What was selected, per table (`store.table`).
pub struct Subset {
    /// Key tuples (primary key, else all columns) of the selected rows; on disk past the limit.
    pub keys: BTreeMap<String, KeySet>,
    /// Tables copied whole.
    pub whole: BTreeSet<String>,
    /// Tables whose rows all came from the district seed (extractable with one filter).
    pub seed_only: BTreeSet<String>,
    /// Row counts of seed tables that nothing references: their keys are never needed, so only the
    /// count is kept (this is what keeps large fact tables out of memory).
    pub counted: BTreeMap<String, u64>,
}

impl Subset {
    pub fn rows(&self, table: &str) -> usize {
        self.keys.get(table).map(KeySet::len).unwrap_or(0)
            + self.counted.get(table).copied().unwrap_or(0) as usize
    }
}

/// The key columns of a table: its primary key, else all its columns.
pub fn key_columns(t: &Table) -> Vec<String> {
    if t.primary_key.is_empty() {
        t.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        t.primary_key.clone()
    }
}

struct Edges<'a> {
    /// FKs out of each table (to parents in scope).
    parents: HashMap<String, Vec<&'a ForeignKey>>,
    /// FKs into each table that `follow_children` asks to follow: (child table, fk).
    children: HashMap<String, Vec<(String, &'a ForeignKey)>>,
    /// Columns to project per table: key ∪ own FK columns ∪ columns that followed FKs reference.
    project: HashMap<String, Vec<String>>,
}

fn edges<'a>(tables: &'a [Table], cfg: &Config) -> Edges<'a> {
    let ids: HashSet<String> = tables.iter().map(Table::id).collect();
    let follow: HashSet<ColumnRef> = cfg
        .follow_children
        .iter()
        .filter_map(|f| ColumnRef::parse(f))
        .collect();
    let mut e = Edges {
        parents: HashMap::new(),
        children: HashMap::new(),
        project: HashMap::new(),
    };
    let mut project: HashMap<String, BTreeSet<String>> = HashMap::new();
    for t in tables {
        let p = project.entry(t.id()).or_default();
        p.extend(key_columns(t));
        for fk in t.foreign_keys.iter().filter(|f| ids.contains(&f.ref_table)) {
            p.extend(fk.columns.iter().cloned());
            e.parents.entry(t.id()).or_default().push(fk);
            let followed = fk.columns.iter().any(|c| {
                follow.contains(&ColumnRef {
                    store: t.store.clone(),
                    table: t.name.clone(),
                    column: c.clone(),
                })
            });
            if followed {
                e.children
                    .entry(fk.ref_table.clone())
                    .or_default()
                    .push((t.id(), fk));
            }
        }
    }
    for t in tables {
        for fk in t.foreign_keys.iter().filter(|f| ids.contains(&f.ref_table)) {
            project
                .entry(fk.ref_table.clone())
                .or_default()
                .extend(fk.ref_columns.iter().cloned());
        }
    }
    // Keep the key columns first, then the rest by name, so a row's key is its prefix.
    for t in tables {
        let key = key_columns(t);
        let rest = project.remove(&t.id()).unwrap_or_default();
        let mut cols = key.clone();
        cols.extend(rest.into_iter().filter(|c| !key.contains(c)));
        e.project.insert(t.id(), cols);
    }
    e
}

fn pick(row: &Key, project: &[String], cols: &[String]) -> Option<Key> {
    let out: Key = cols
        .iter()
        .map(|c| {
            project
                .iter()
                .position(|p| p == c)
                .and_then(|i| row[i].clone())
        })
        .collect();
    // A NULL anywhere in an FK means no reference.
    out.iter().all(Option::is_some).then_some(out)
}

/// Selects the district's subset. `readers` has one snapshot reader per store named in `tables`.
/// Memory is bounded: key sets and the rows still to follow move to a temporary database on disk
/// past `keyset::memory_limit()` entries, and rows are followed `FOLLOW_BATCH` at a time.
pub async fn select<S: SnapshotReader>(
    readers: &mut HashMap<String, S>,
    tables: &[Table],
    cfg: &Config,
    district: &str,
) -> Result<Subset, StoreError> {
    select_with_limit(readers, tables, cfg, district, memory_limit()).await
}

/// `select` with an explicit in-memory limit (tests force spilling with a tiny one).
pub async fn select_with_limit<S: SnapshotReader>(
    readers: &mut HashMap<String, S>,
    tables: &[Table],
    cfg: &Config,
    district: &str,
    limit: usize,
) -> Result<Subset, StoreError> {
    let by_id: HashMap<String, &Table> = tables.iter().map(|t| (t.id(), t)).collect();
    let e = edges(tables, cfg);
    let mut st = State {
        subset: Subset {
            keys: BTreeMap::new(),
            whole: BTreeSet::new(),
            seed_only: BTreeSet::new(),
            counted: BTreeMap::new(),
        },
        spill: Spill::new()?,
        limit,
    };
    let mut frontier: BTreeMap<String, KeyQueue> = BTreeMap::new();
    let leaf_parents = seed(readers, &mut st, &mut frontier, tables, cfg, district, &e).await?;
    for (fk, values) in leaf_parents {
        let parent = by_id[&fk.ref_table];
        if st.subset.whole.contains(&parent.id()) {
            continue;
        }
        let refs_key = fk.ref_columns == key_columns(parent);
        for chunk in values.chunks(FOLLOW_BATCH)? {
            let wanted = st.unknown(parent, refs_key, chunk?.into_iter())?;
            let project = &e.project[&parent.id()];
            fetch(
                readers,
                &mut st,
                &mut frontier,
                parent,
                &fk.ref_columns,
                wanted,
                project,
            )
            .await?;
        }
    }
    while !frontier.is_empty() {
        let mut next: BTreeMap<String, KeyQueue> = BTreeMap::new();
        for (id, queue) in std::mem::take(&mut frontier) {
            for rows in queue.drain_chunks(FOLLOW_BATCH) {
                let step = Follow {
                    by_id: &by_id,
                    e: &e,
                    id: &id,
                };
                step.rows(readers, &mut st, &mut next, &rows?).await?;
            }
        }
        frontier = next;
    }
    Ok(st.subset)
}

/// The seed rows: every reference table whole, and the district's rows of every table with the
/// district column. Seeded leaves (tables nothing references or follows) are only counted; the
/// distinct values of their FKs are returned, to be followed to their parents.
async fn seed<'a, S: SnapshotReader>(
    readers: &mut HashMap<String, S>,
    st: &mut State,
    frontier: &mut BTreeMap<String, KeyQueue>,
    tables: &'a [Table],
    cfg: &Config,
    district: &str,
    e: &Edges<'a>,
) -> Result<Vec<(&'a ForeignKey, KeySet)>, StoreError> {
    let reference: BTreeSet<String> = cfg.reference_tables.iter().cloned().collect();
    let referenced: HashSet<String> = e
        .parents
        .values()
        .flatten()
        .map(|fk| fk.ref_table.clone())
        .collect();
    let mut leaves = Vec::new();
    for t in tables {
        let id = t.id();
        let project = &e.project[&id];
        let leaf = !referenced.contains(&id) && !e.children.contains_key(&id);
        if leaf && !reference.contains(&id) && t.column(&cfg.district_column).is_some() {
            leaves.push(t);
            continue;
        }
        let whole = reference.contains(&id);
        if !whole && t.column(&cfg.district_column).is_none() {
            continue;
        }
        if whole {
            st.subset.whole.insert(id.clone());
        } else {
            st.subset.seed_only.insert(id.clone());
        }
        let r = reader(readers, &t.store)?;
        let key_len = key_columns(t).len();
        let (keys, queue) = st.slot(frontier, &id)?;
        let mut sink = |row: Key| -> Result<(), StoreError> {
            if keys.insert(row[..key_len].to_vec())? {
                queue.push(row)?;
            }
            Ok(())
        };
        if whole {
            r.rows_all(t, project, &mut sink).await?;
        } else {
            r.rows_eq(t, &cfg.district_column, district, project, &mut sink)
                .await?;
        }
    }
    let mut leaf_parents = Vec::new();
    for (t, n, parents) in seed_leaves(readers, st, &leaves, cfg, district, e).await? {
        st.subset.seed_only.insert(t.id());
        st.subset.counted.insert(t.id(), n);
        leaf_parents.extend(parents);
    }
    Ok(leaf_parents)
}

/// A seeded leaf with district rows: their count, and the distinct values of each FK.
type Leaf<'a> = (&'a Table, u64, Vec<(&'a ForeignKey, KeySet)>);

/// Counts the district's rows of each seeded leaf and collects the distinct values of its FKs: the
/// stores at once (each in its own snapshot, a store's leaves one after another), since these
/// scans of the largest tables are most of a plan's time. In the order of `leaves`.
async fn seed_leaves<'a, S: SnapshotReader>(
    readers: &mut HashMap<String, S>,
    st: &State,
    leaves: &[&'a Table],
    cfg: &Config,
    district: &str,
    e: &Edges<'a>,
) -> Result<Vec<Leaf<'a>>, StoreError> {
    if let Some(t) = leaves.iter().find(|t| !readers.contains_key(&t.store)) {
        reader(readers, &t.store)?;
    }
    let col = cfg.district_column.as_str();
    let per_store = readers.iter_mut().map(|(store, r)| async move {
        let mut out = Vec::new();
        for (i, t) in leaves.iter().enumerate().filter(|(_, t)| &t.store == store) {
            let fks = e.parents.get(&t.id()).map(Vec::as_slice).unwrap_or(&[]);
            let (n, parents) = scan_leaf(r, st, t, (col, district), fks).await?;
            if n > 0 {
                out.push((i, (*t, n, parents)));
            }
        }
        Ok::<_, StoreError>(out)
    });
    let mut all: Vec<(usize, Leaf<'a>)> = futures_util::future::try_join_all(per_store)
        .await?
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, l)| l).collect())
}

/// One leaf's district rows, read once: their count, and per FK its distinct non-NULL values.
/// One scan of the FK columns, made distinct by wf, costs PostgreSQL less than a count and a
/// sorted `DISTINCT` per FK (at scale 100, attendance's 2.4 M rows: 0.65 s against 1.3 s). A
/// set of value hashes (at most the memory limit of them) skips repeats before the key set,
/// which spills past the limit as before.
async fn scan_leaf<'a, S: SnapshotReader>(
    r: &mut S,
    st: &State,
    t: &Table,
    (col, district): (&str, &str),
    fks: &[&'a ForeignKey],
) -> Result<(u64, Vec<(&'a ForeignKey, KeySet)>), StoreError> {
    if fks.is_empty() {
        return Ok((r.count_eq(t, col, district).await?, Vec::new()));
    }
    // The FKs' columns, each once, and where each FK's are among them.
    let mut project: Vec<String> = Vec::new();
    let mut at: Vec<Vec<usize>> = Vec::new();
    for fk in fks {
        let mut pos = Vec::new();
        for c in &fk.columns {
            pos.push(match project.iter().position(|p| p == c) {
                Some(i) => i,
                None => {
                    project.push(c.clone());
                    project.len() - 1
                }
            });
        }
        at.push(pos);
    }
    let mut sets: Vec<(KeySet, HashSet128)> = fks
        .iter()
        .map(|_| (KeySet::new(&st.spill, st.limit), HashSet128::default()))
        .collect();
    let mut n = 0u64;
    let mut each = |row: &[Option<&[u8]>]| -> Result<(), StoreError> {
        n += 1;
        for (cols, (set, seen)) in at.iter().zip(sets.iter_mut()) {
            // A NULL anywhere in an FK means no reference.
            if cols.iter().any(|&i| row[i].is_none()) {
                continue;
            }
            let h = key_hash_of(cols.iter().map(|&i| row[i]));
            let repeat = match seen.len() < st.limit {
                true => !seen.insert(h),
                false => seen.contains(&h),
            };
            if !repeat {
                let text = |i: &usize| row[*i].map(|b| String::from_utf8_lossy(b).into_owned());
                set.insert(cols.iter().map(text).collect())?;
            }
        }
        Ok(())
    };
    r.keys_eq(t, col, district, &project, &mut each).await?;
    let parents = fks.iter().copied().zip(sets.into_iter().map(|(s, _)| s));
    Ok((n, parents.collect()))
}

/// Following one chunk of new rows of table `id`: to their parents always, to their children
/// where configured.
struct Follow<'a, 'b> {
    by_id: &'b HashMap<String, &'a Table>,
    e: &'b Edges<'a>,
    id: &'b str,
}

impl Follow<'_, '_> {
    async fn rows<S: SnapshotReader>(
        &self,
        readers: &mut HashMap<String, S>,
        st: &mut State,
        next: &mut BTreeMap<String, KeyQueue>,
        rows: &[Key],
    ) -> Result<(), StoreError> {
        let (e, id) = (self.e, self.id);
        let project = &e.project[id];
        for fk in e.parents.get(id).map(Vec::as_slice).unwrap_or(&[]) {
            let parent = self.by_id[&fk.ref_table];
            if st.subset.whole.contains(&parent.id()) {
                continue;
            }
            let refs_key = fk.ref_columns == key_columns(parent);
            let wanted = st.unknown(
                parent,
                refs_key,
                rows.iter().filter_map(|r| pick(r, project, &fk.columns)),
            )?;
            let pproject = &e.project[&parent.id()];
            fetch(readers, st, next, parent, &fk.ref_columns, wanted, pproject).await?;
        }
        for (child_id, fk) in e.children.get(id).map(Vec::as_slice).unwrap_or(&[]) {
            let child = self.by_id[child_id];
            let wanted: BTreeSet<Key> = rows
                .iter()
                .filter_map(|r| pick(r, project, &fk.ref_columns))
                .collect();
            let cproject = &e.project[child_id];
            fetch(readers, st, next, child, &fk.columns, wanted, cproject).await?;
        }
        Ok(())
    }
}

struct State {
    subset: Subset,
    spill: Spill,
    limit: usize,
}

impl State {
    /// The key set and the frontier queue of table `id`, created on first use.
    fn slot<'a>(
        &'a mut self,
        frontier: &'a mut BTreeMap<String, KeyQueue>,
        id: &str,
    ) -> Result<(&'a mut KeySet, &'a mut KeyQueue), StoreError> {
        let (spill, limit) = (&self.spill, self.limit);
        let keys = self
            .subset
            .keys
            .entry(id.to_string())
            .or_insert_with(|| KeySet::new(spill, limit));
        let queue = frontier
            .entry(id.to_string())
            .or_insert_with(|| KeyQueue::new(spill, limit));
        Ok((keys, queue))
    }

    /// The candidate references not already known to be selected (when they are `parent`'s key).
    fn unknown(
        &self,
        parent: &Table,
        refs_key: bool,
        candidates: impl Iterator<Item = Key>,
    ) -> Result<BTreeSet<Key>, StoreError> {
        let known = self.subset.keys.get(&parent.id());
        let mut out = BTreeSet::new();
        for k in candidates {
            let seen = match (refs_key, known) {
                (true, Some(set)) => set.contains(&k)?,
                _ => false,
            };
            if !seen {
                out.insert(k);
            }
        }
        Ok(out)
    }
}

fn reader<'a, S: SnapshotReader>(
    readers: &'a mut HashMap<String, S>,
    store: &str,
) -> Result<&'a mut S, StoreError> {
    readers.get_mut(store).ok_or_else(|| StoreError::Query {
        store: store.into(),
        message: "no snapshot open for this store".into(),
    })
}

async fn fetch<S: SnapshotReader>(
    readers: &mut HashMap<String, S>,
    st: &mut State,
    next: &mut BTreeMap<String, KeyQueue>,
    table: &Table,
    columns: &[String],
    wanted: BTreeSet<Key>,
    project: &[String],
) -> Result<(), StoreError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let r = reader(readers, &table.store)?;
    let wanted: Vec<Key> = wanted.into_iter().collect();
    let id = table.id();
    let key_len = key_columns(table).len();
    for chunk in wanted.chunks(FOLLOW_BATCH) {
        let rows = r.rows_in(table, columns, chunk, project).await?;
        let mut fresh = false;
        {
            let (keys, queue) = st.slot(next, &id)?;
            for row in rows {
                if keys.insert(row[..key_len].to_vec())? {
                    queue.push(row)?;
                    fresh = true;
                }
            }
        }
        if fresh {
            st.subset.seed_only.remove(&id);
        }
    }
    Ok(())
}
