//! From discovered schemas to a load plan: the FK graph across stores (declared and virtual keys),
//! every cycle with the edge chosen to break it, and a topological load order.
//!
//! Cycles (including self references such as `staff.manager_id`) are found as strongly connected
//! components. In each, the break point is chosen in this order: a virtual FK (CERT does not
//! enforce it, so nothing needs doing), a nullable FK (rows load with it NULL and a later UPDATE
//! fills it in), a deferrable FK (checked at commit). A cycle with none of these cannot load, and
//! is reported with what to change.

use crate::config::{ColumnRef, Config};
use crate::schema::{ForeignKey, StoreSchema, Table};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One edge of the dependency graph: `child` references `parent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub child: String,
    pub parent: String,
    pub columns: Vec<String>,
    pub fk: String,
    pub nullable: bool,
    pub is_virtual: bool,
    /// Checked at commit (PostgreSQL `DEFERRABLE`).
    #[serde(default)]
    pub deferrable: bool,
}

/// A cycle and how it is broken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cycle {
    pub tables: Vec<String>,
    /// The FK loaded NULL first and set by a later UPDATE; `None` if no FK in the cycle is nullable.
    pub break_fk: Option<Edge>,
    pub reason: String,
}

/// The analysis written to `analysis/extraction-order.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Tables (`store.table`) parents first: the load order; deletes go in reverse.
    pub order: Vec<String>,
    pub cycles: Vec<Cycle>,
    pub edges: Vec<Edge>,
}

/// Adds the config's virtual FKs to the tables they start from; unknown tables or columns are errors.
pub fn add_virtual_fks(schemas: &mut [StoreSchema], cfg: &Config) -> Result<(), String> {
    for v in &cfg.virtual_fks {
        let (from, to) = match (ColumnRef::parse(&v.from), ColumnRef::parse(&v.to)) {
            (Some(f), Some(t)) => (f, t),
            _ => {
                return Err(format!(
                    "virtual FK {} → {} is not store.table.column",
                    v.from, v.to
                ))
            }
        };
        let target_ok = schemas
            .iter()
            .flat_map(|s| &s.tables)
            .any(|t| t.id() == to.table_id() && t.column(&to.column).is_some());
        if !target_ok {
            return Err(format!("virtual FK target {} does not exist", v.to));
        }
        let table = schemas
            .iter_mut()
            .flat_map(|s| s.tables.iter_mut())
            .find(|t| t.id() == from.table_id() && t.column(&from.column).is_some())
            .ok_or_else(|| format!("virtual FK source {} does not exist", v.from))?;
        table.foreign_keys.push(ForeignKey {
            name: format!("virtual:{}", v.from),
            columns: vec![from.column.clone()],
            ref_table: to.table_id(),
            ref_columns: vec![to.column.clone()],
            deferrable: false,
            is_virtual: true,
        });
    }
    Ok(())
}

fn edges_of(tables: &[&Table]) -> Vec<Edge> {
    let known: BTreeSet<String> = tables.iter().map(|t| t.id()).collect();
    let mut edges = Vec::new();
    for t in tables {
        for fk in &t.foreign_keys {
            if !known.contains(&fk.ref_table) {
                continue;
            }
            let nullable = fk
                .columns
                .iter()
                .all(|c| t.column(c).is_some_and(|c| c.nullable));
            edges.push(Edge {
                child: t.id(),
                parent: fk.ref_table.clone(),
                columns: fk.columns.clone(),
                fk: fk.name.clone(),
                nullable,
                is_virtual: fk.is_virtual,
                deferrable: fk.deferrable,
            });
        }
    }
    edges.sort_by(|a, b| (&a.child, &a.fk).cmp(&(&b.child, &b.fk)));
    edges
}

/// Tarjan's strongly connected components over `nodes` with `succ` (child → parents).
fn components(nodes: &[String], succ: &BTreeMap<&str, Vec<&str>>) -> Vec<Vec<String>> {
    struct St<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a str, succ: &BTreeMap<&'a str, Vec<&'a str>>, st: &mut St<'a>) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on.insert(v);
        for &w in succ.get(v).map(Vec::as_slice).unwrap_or(&[]) {
            if !st.index.contains_key(w) {
                visit(w, succ, st);
                let lw = st.low[w];
                let lv = st.low[v];
                st.low.insert(v, lv.min(lw));
            } else if st.on.contains(w) {
                let iw = st.index[w];
                let lv = st.low[v];
                st.low.insert(v, lv.min(iw));
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            comp.sort();
            st.out.push(comp);
        }
    }
    let mut st = St {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !st.index.contains_key(n.as_str()) {
            visit(n, succ, &mut st);
        }
    }
    st.out
}

/// The loop that `e` closes: `e.child`, `e.parent`, then the shortest way back to `e.child` along
/// `edges` (all inside one strongly connected component, so the way exists).
fn cycle_through(e: &Edge, edges: &[&Edge]) -> Vec<String> {
    if e.child == e.parent {
        return vec![e.child.clone(), e.parent.clone()];
    }
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([e.parent.as_str()]);
    while let Some(n) = queue.pop_front() {
        if n == e.child {
            break;
        }
        for x in edges.iter().filter(|x| x.child == n) {
            if x.parent != e.parent && !prev.contains_key(x.parent.as_str()) {
                prev.insert(x.parent.as_str(), n);
                queue.push_back(x.parent.as_str());
            }
        }
    }
    let mut back = vec![e.child.as_str()];
    let mut at = e.child.as_str();
    while let Some(p) = prev.get(at) {
        back.push(p);
        at = p;
    }
    back.reverse();
    let mut path = vec![e.child.clone()];
    path.extend(back.into_iter().map(String::from));
    path
}

/// Whether `e` is one of the FKs `wf.toml`'s `cycle_breaks` names (`store.table.column`).
fn named(e: &Edge, breaks: &[String]) -> bool {
    e.columns
        .iter()
        .any(|c| breaks.contains(&format!("{}.{c}", e.child)))
}

/// The edge that breaks a cycle, with why: the one `cycle_breaks` names, else a virtual FK first
/// (CERT does not enforce it), then a nullable one (self references first), then a deferrable
/// one; ties by name for stable output. `Err` says why the cycle cannot be loaded.
fn pick_break<'a>(inside: &[&'a Edge], breaks: &[String]) -> Result<(&'a Edge, String), String> {
    let loadable = |e: &Edge| e.is_virtual || e.nullable || e.deferrable;
    if let Some(e) = inside.iter().find(|e| named(e, breaks)) {
        if !loadable(e) {
            return Err(format!(
                "cannot load: cycle_breaks names {}.({}), which is declared, NOT NULL and not DEFERRABLE, so rows cannot load before {}; name another FK of the cycle, make it DEFERRABLE or its column nullable",
                e.child,
                e.columns.join(", "),
                e.parent
            ));
        }
        let (_, why) = pick_break(&[*e], &[])?;
        return Ok((e, format!("named in cycle_breaks; {why}")));
    }
    let by_name = |e: &&&'a Edge| (e.child != e.parent, e.child.clone(), e.fk.clone());
    if let Some(e) = inside.iter().filter(|e| e.is_virtual).min_by_key(by_name) {
        let why = format!(
            "{}.({}) is a virtual FK, which CERT does not enforce: rows load in any order",
            e.child,
            e.columns.join(", ")
        );
        return Ok((e, why));
    }
    if let Some(e) = inside.iter().filter(|e| e.nullable).min_by_key(by_name) {
        let why = format!(
            "{}.({}) is nullable: rows load with it NULL, then an UPDATE sets it once {} is loaded",
            e.child,
            e.columns.join(", "),
            e.parent
        );
        return Ok((e, why));
    }
    if let Some(e) = inside.iter().filter(|e| e.deferrable).min_by_key(by_name) {
        let why = format!(
            "{}.({}) is DEFERRABLE: checked at commit, once both sides are loaded",
            e.child,
            e.columns.join(", ")
        );
        return Ok((e, why));
    }
    Err(format!(
        "cannot load: every foreign key of this cycle is declared, NOT NULL and checked per row ({}); make one DEFERRABLE (ALTER TABLE … ALTER CONSTRAINT … DEFERRABLE) or its column nullable",
        inside.iter().map(|e| format!("{}.({})", e.child, e.columns.join(", "))).collect::<Vec<_>>().join(", ")
    ))
}

/// Builds the dependency graph, finds and breaks cycles (at the FKs `breaks` names where it can,
/// `store.table.column` of the child), and orders the tables parents first.
pub fn analyze(schemas: &[StoreSchema], breaks: &[String]) -> Analysis {
    let tables: Vec<&Table> = schemas.iter().flat_map(|s| &s.tables).collect();
    let mut nodes: Vec<String> = tables.iter().map(|t| t.id()).collect();
    nodes.sort();
    let edges = edges_of(&tables);
    let mut cycles = Vec::new();
    let mut broken: BTreeSet<(String, String)> = BTreeSet::new();
    // Break cycles until none is left: each round breaks one edge per strongly connected component.
    loop {
        let mut succ: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for e in &edges {
            if !broken.contains(&(e.child.clone(), e.fk.clone())) {
                succ.entry(e.child.as_str())
                    .or_default()
                    .push(e.parent.as_str());
            }
        }
        let mut progressed = false;
        for comp in components(&nodes, &succ) {
            let set: BTreeSet<&str> = comp.iter().map(String::as_str).collect();
            let inside: Vec<&Edge> = edges
                .iter()
                .filter(|e| set.contains(e.child.as_str()) && set.contains(e.parent.as_str()))
                .filter(|e| !broken.contains(&(e.child.clone(), e.fk.clone())))
                .collect();
            if inside.is_empty() {
                continue;
            }
            let cycle = match pick_break(&inside, breaks) {
                Ok((e, reason)) => {
                    let tables = cycle_through(e, &inside);
                    broken.insert((e.child.clone(), e.fk.clone()));
                    progressed = true;
                    Cycle {
                        tables,
                        break_fk: Some(e.clone()),
                        reason,
                    }
                }
                Err(reason) => {
                    for e in &inside {
                        broken.insert((e.child.clone(), e.fk.clone()));
                    }
                    progressed = true;
                    Cycle {
                        tables: comp.clone(),
                        break_fk: None,
                        reason,
                    }
                }
            };
            cycles.push(cycle);
        }
        if !progressed {
            break;
        }
    }
    // Kahn's algorithm over the unbroken edges, smallest name first for a stable order.
    let mut parents: BTreeMap<&str, BTreeSet<&str>> = nodes
        .iter()
        .map(|n| (n.as_str(), BTreeSet::new()))
        .collect();
    for e in &edges {
        if !broken.contains(&(e.child.clone(), e.fk.clone())) && e.child != e.parent {
            if let Some(p) = parents.get_mut(e.child.as_str()) {
                p.insert(e.parent.as_str());
            }
        }
    }
    let mut order = Vec::with_capacity(nodes.len());
    let mut ready: BTreeSet<&str> = parents
        .iter()
        .filter(|(_, p)| p.is_empty())
        .map(|(n, _)| *n)
        .collect();
    while let Some(n) = ready.pop_first() {
        order.push(n.to_string());
        parents.remove(n);
        for (child, ps) in parents.iter_mut() {
            if ps.remove(n) && ps.is_empty() {
                ready.insert(child);
            }
        }
    }
    Analysis {
        order,
        cycles,
        edges,
    }
}

/// The graph in Graphviz dot: dashed edges are virtual FKs, red ones are cycle break points.
pub fn to_dot(a: &Analysis) -> String {
    let mut s = String::from("digraph wf {\n  rankdir=LR;\n  node [shape=box];\n");
    for n in &a.order {
        s.push_str(&format!("  \"{n}\";\n"));
    }
    let breaks: BTreeSet<(&str, &str)> = a
        .cycles
        .iter()
        .filter_map(|c| c.break_fk.as_ref())
        .map(|e| (e.child.as_str(), e.fk.as_str()))
        .collect();
    for e in &a.edges {
        let mut attrs = vec![format!("label=\"{}\"", e.columns.join(","))];
        if e.is_virtual {
            attrs.push("style=dashed".into());
        }
        if breaks.contains(&(e.child.as_str(), e.fk.as_str())) {
            attrs.push("color=red".into());
        }
        s.push_str(&format!(
            "  \"{}\" -> \"{}\" [{}];\n",
            e.child,
            e.parent,
            attrs.join(", ")
        ));
    }
    s.push_str("}\n");
    s
}
