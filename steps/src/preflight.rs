//! Before a migrate run is created: every `env:` connection of every store (PROD and CERT) is
//! resolved, and every table, column and field the configuration and the rule files name is checked
//! against what PROD's discovery finds. A name that matches nothing is a one-line error with the
//! closest existing name, so no typo is ever a silent no-op.

use crate::anonymize::rules::Rules;
use crate::migrate::MigrateParams;
use crate::validate::ValidationRules;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use wf_stores::config::ColumnRef;
use wf_stores::config_at::{key, line_of, Seg};
use wf_stores::{Config, Side};

/// What PROD has: relational tables with their columns and FK columns, graph labels.
#[derive(Default)]
struct Known {
    /// `store.table` → columns.
    tables: BTreeMap<String, BTreeSet<String>>,
    /// `store.table.column` of every column that references another table (declared FKs).
    fk_columns: BTreeSet<String>,
    graph: Option<(String, BTreeSet<String>)>,
    /// `[graph] follow` types the PROD graph has no relationship of.
    graph_missing_types: Vec<String>,
    /// The PROD graph's relationship types, read only when a follow type is missing.
    graph_types: BTreeSet<String>,
    /// The discovered schemas (names, keys, FKs; no row counts), for the cycle analysis.
    schemas: Vec<wf_stores::schema::StoreSchema>,
}

/// wf.toml's and the rule files' names and texts, to point an error at the line of its setting.
struct Sources {
    wf: (String, String),
    rules: (String, String),
    validation: (String, String),
}

impl Sources {
    /// Reads the files again (they parsed a moment ago; an unreadable one just loses its lines).
    fn read(config: &Path, p: &MigrateParams) -> Sources {
        let named = |f: &Path| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            (f.display().to_string(), text)
        };
        Sources {
            wf: named(config),
            rules: named(&p.rules_file),
            validation: p.validation_file.as_deref().map(named).unwrap_or_default(),
        }
    }

    /// `file line N: ` for the setting at `at` of `source`.
    fn at((file, text): &(String, String), at: Vec<Seg>) -> String {
        match line_of(text, &at) {
            Some(n) => format!("{file} line {n}: "),
            None => format!("{file}: "),
        }
    }

    fn wf(&self, at: Vec<Seg>) -> String {
        Sources::at(&self.wf, at)
    }

    /// Where `setting` of rule `i` (0-based) of the anonymization rules is.
    fn rule(&self, i: usize, setting: &str) -> String {
        Sources::at(&self.rules, vec![key("rules"), Seg::Index(i), key(setting)])
    }

    fn validation(&self, i: usize, setting: &str) -> String {
        Sources::at(
            &self.validation,
            vec![key("rules"), Seg::Index(i), key(setting)],
        )
    }
}

/// `[key, i]`: entry `i` of wf.toml's list `key`.
fn item(list: &str, i: usize) -> Vec<Seg> {
    vec![key(list), Seg::Index(i)]
}

/// Resolves connections and checks every configured name; the first problem as one line, with
/// the file and line of the setting (`config` is wf.toml's path).
pub async fn check(p: &MigrateParams, config: &Path) -> Result<(), String> {
    resolve_env(&p.config)?;
    let known = discover(&p.config).await?;
    let rules = Rules::load(&p.rules_file)?;
    let validation = match &p.validation_file {
        Some(f) => Some(ValidationRules::load(f)?),
        None => None,
    };
    let src = Sources::read(config, p);
    check_config(&p.config, &known, &src)?;
    if let Some(line) = crate::carry::uncarried(&known.schemas, Some(&rules))
        .into_iter()
        .next()
    {
        return Err(line);
    }
    for r in &rules.rules {
        let (i, label) = (r.index, r.label());
        if let Some(f) = &r.spec.scan_as {
            let at = src.rule(i, "scan_as");
            known.field(f, &format!("{at}anonymization rule `{label}` scan_as"))?;
        }
        if let Some(f) = &r.spec.field {
            let at = src.rule(i, "field");
            known.field(f, &format!("{at}anonymization rule `{label}`"))?;
            if let (Some(e), Some(c)) = (&r.spec.entity, ColumnRef::parse(f)) {
                let entity = format!("{}.{e}", c.table_id());
                let at = src.rule(i, "entity");
                known.column(&entity, &format!("{at}anonymization rule `{label}` entity"))?;
            }
        }
    }
    for (i, r) in validation.iter().flat_map(|v| &v.rules).enumerate() {
        let s = &r.spec;
        let fields = [
            ("field", &s.field),
            ("a", &s.a),
            ("b", &s.b),
            ("parent", &s.parent),
            ("child", &s.child),
        ];
        for (setting, f) in fields {
            if let Some(f) = f {
                let at = src.validation(i, setting);
                known.column(f, &format!("{at}validation rule `{}`", s.name))?;
            }
        }
        if let Some(store) = &s.store {
            if p.config.store(store).is_none() {
                let stores: Vec<String> = p.config.stores.iter().map(|s| s.name.clone()).collect();
                return Err(format!(
                    "{}validation rule `{}`: store `{store}` is not in wf.toml{}",
                    src.validation(i, "store"),
                    s.name,
                    suggest(store, &stores)
                ));
            }
        }
    }
    Ok(())
}

/// Every `env:` connection and credential, PROD and CERT, read now rather than mid-run.
fn resolve_env(cfg: &Config) -> Result<(), String> {
    for s in &cfg.stores {
        for side in [Side::Prod, Side::Cert] {
            s.url(side).map_err(|e| e.to_string())?;
        }
    }
    if let Some(g) = &cfg.graph {
        for side in [Side::Prod, Side::Cert] {
            g.url(side).map_err(|e| e.to_string())?;
            g.credentials(side).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn discover(cfg: &Config) -> Result<Known, String> {
    let mut known = Known::default();
    for s in &cfg.stores {
        let db = wf_stores::connect(s, Side::Prod)
            .await
            .map_err(|e| e.to_string())?;
        // Names only: no row counts, which would scan every PROD table before each run.
        let schema = db.introspect_shape().await.map_err(|e| e.to_string())?;
        for t in &schema.tables {
            for fk in &t.foreign_keys {
                for c in &fk.columns {
                    known.fk_columns.insert(format!("{}.{c}", t.id()));
                }
            }
            let cols = t.columns.iter().map(|c| c.name.clone()).collect();
            known.tables.insert(t.id(), cols);
        }
        known.schemas.push(schema);
    }
    if let Some(g) = &cfg.graph {
        let mut r = wf_stores::graph::open_read(g, Side::Prod)
            .await
            .map_err(|e| e.to_string())?;
        let labels = r.label_counts().await.map_err(|e| e.to_string())?;
        // One relationship of each followed type, not a count of them all; when one finds none
        // (its type is absent, or that relationship's end lacks its key), the types are listed.
        let mut unseen = false;
        for f in &g.follow {
            let one = r.sample_rels(&f.rel_type, 1).await;
            unseen |= one.map_err(|e| e.to_string())?.is_empty();
        }
        if unseen {
            let types = r.rel_type_counts().await.map_err(|e| e.to_string())?;
            known.graph_types = types.into_iter().map(|(t, _)| t).collect();
            known.graph_missing_types = (g.follow.iter())
                .map(|f| f.rel_type.clone())
                .filter(|t| !known.graph_types.contains(t))
                .collect();
        }
        r.finish().await.map_err(|e| e.to_string())?;
        known.graph = Some((g.name.clone(), labels.into_iter().map(|(l, _)| l).collect()));
    }
    Ok(known)
}

/// wf.toml's own names: reference tables, followed children (which must be FK columns, declared
/// or virtual), virtual FKs.
fn check_config(cfg: &Config, known: &Known, src: &Sources) -> Result<(), String> {
    for (i, t) in cfg.reference_tables.iter().enumerate() {
        let at = src.wf(item("reference_tables", i));
        known.table(t, &format!("{at}reference_tables"))?;
    }
    for (i, v) in cfg.virtual_fks.iter().enumerate() {
        for (end, f) in [("from", &v.from), ("to", &v.to)] {
            let at = src.wf([item("virtual_fks", i), vec![key(end)]].concat());
            known.column(f, &format!("{at}virtual_fks {end}"))?;
        }
    }
    for (i, f) in cfg.follow_children.iter().enumerate() {
        let at = src.wf(item("follow_children", i));
        known.column(f, &format!("{at}follow_children"))?;
        let is_virtual = cfg.virtual_fks.iter().any(|v| &v.from == f);
        if !known.fk_columns.contains(f) && !is_virtual {
            return Err(format!(
                "{at}follow_children `{f}`: no foreign key (declared or in [[virtual_fks]]) starts at this column, so there is nothing to follow; name the child's FK column, or add a [[virtual_fks]] entry"
            ));
        }
    }
    cycle_breaks(cfg, known, src)?;
    change_tracking(cfg, known, src)?;
    graph_names(cfg, known, src)
}

/// Each `[[change_tracking]]` column exists, holds a time (timestamp or date), and its table has
/// a primary key (the refresh tells its rows apart by it).
fn change_tracking(cfg: &Config, known: &Known, src: &Sources) -> Result<(), String> {
    const TIMES: [&str; 3] = [
        "timestamp without time zone",
        "timestamp with time zone",
        "date",
    ];
    for (i, c) in cfg.change_tracking.iter().enumerate() {
        let at = |f: &str| src.wf([item("change_tracking", i), vec![key(f)]].concat());
        known.table(&c.table, &format!("{}change_tracking table", at("table")))?;
        let field = format!("{}.{}", c.table, c.column);
        known.column(&field, &format!("{}change_tracking", at("column")))?;
        let Ok(t) = wf_stores::extract::find_table(&known.schemas, &c.table) else {
            continue;
        };
        let ty = t.column(&c.column).map(|c| c.data_type.as_str());
        if !ty.is_some_and(|ty| TIMES.contains(&ty)) {
            return Err(format!(
                "{}change_tracking `{field}` is {}, not a timestamp or date: name the column each change stamps with its time",
                at("column"),
                ty.unwrap_or("unknown")
            ));
        }
        if t.primary_key.is_empty() {
            return Err(format!(
                "{}change_tracking table `{}` has no primary key, so a refresh cannot tell its rows apart; remove the entry",
                at("table"),
                c.table
            ));
        }
    }
    Ok(())
}

/// The labels and relationship types `[graph]` names must be in the PROD graph: a misspelled
/// district label would seed nothing from it, a misspelled follow type reach nothing, silently.
fn graph_names(cfg: &Config, known: &Known, src: &Sources) -> Result<(), String> {
    let (Some(g), Some((_, labels))) = (&cfg.graph, &known.graph) else {
        return Ok(());
    };
    let all: Vec<String> = labels.iter().cloned().collect();
    let at = |path: Vec<Seg>| src.wf([vec![key("graph")], path].concat());
    let mut named: Vec<(Vec<Seg>, &str, &str)> = Vec::new();
    for l in g.keys.keys() {
        named.push((vec![key("keys"), key(l)], "keys", l));
    }
    for (i, l) in g.district_labels.iter().enumerate() {
        named.push((item("district_labels", i), "district_labels", l));
    }
    for (i, link) in g.links.iter().enumerate() {
        let label = link.from.split('.').next().unwrap_or_default();
        named.push((
            [item("links", i), vec![key("from")]].concat(),
            "links from",
            label,
        ));
    }
    for (path, what, l) in named {
        if !labels.contains(l) {
            return Err(format!(
                "{}[graph] {what} names label `{l}`, which the PROD graph does not have: fix its spelling in wf.toml{}",
                at(path),
                suggest(l, &all)
            ));
        }
    }
    let types: Vec<String> = known.graph_types.iter().cloned().collect();
    for (i, f) in g.follow.iter().enumerate() {
        if known.graph_missing_types.contains(&f.rel_type) {
            return Err(format!(
                "{}[graph] follow type `{}` is not a relationship type of the PROD graph: fix its spelling in wf.toml{}",
                at([item("follow", i), vec![key("type")]].concat()),
                f.rel_type,
                suggest(&f.rel_type, &types)
            ));
        }
    }
    Ok(())
}

/// Each `cycle_breaks` entry names an FK column (declared or virtual) that breaks a cycle; a
/// cycle it cannot break is refused here, with why, rather than when the load meets it.
fn cycle_breaks(cfg: &Config, known: &Known, src: &Sources) -> Result<(), String> {
    if cfg.cycle_breaks.is_empty() {
        return Ok(());
    }
    let at = |i: usize| src.wf(item("cycle_breaks", i));
    for (i, f) in cfg.cycle_breaks.iter().enumerate() {
        known.column(f, &format!("{}cycle_breaks", at(i)))?;
        let is_virtual = cfg.virtual_fks.iter().any(|v| &v.from == f);
        if !known.fk_columns.contains(f) && !is_virtual {
            return Err(format!(
                "{}cycle_breaks `{f}`: no foreign key (declared or in [[virtual_fks]]) starts at this column; name the child's FK column of the cycle",
                at(i)
            ));
        }
    }
    let mut schemas = known.schemas.clone();
    wf_stores::analysis::add_virtual_fks(&mut schemas, cfg)?;
    let analysis = wf_stores::analysis::analyze(&schemas, &cfg.cycle_breaks);
    if let Some(c) = analysis
        .cycles
        .iter()
        .find(|c| c.break_fk.is_none() && c.reason.contains("cycle_breaks names"))
    {
        return Err(format!(
            "{}cycle_breaks: the cycle {} {}",
            src.wf(vec![key("cycle_breaks")]),
            c.tables.join(" -> "),
            c.reason
        ));
    }
    for (i, f) in cfg.cycle_breaks.iter().enumerate() {
        let used = analysis.cycles.iter().any(|c| {
            c.break_fk.as_ref().is_some_and(|e| {
                e.columns
                    .iter()
                    .any(|col| *f == format!("{}.{col}", e.child))
            })
        });
        if !used {
            return Err(format!(
                "{}cycle_breaks `{f}`: its foreign key is in no cycle, so there is nothing to break; remove it",
                at(i)
            ));
        }
    }
    Ok(())
}

impl Known {
    fn table(&self, id: &str, what: &str) -> Result<(), String> {
        if self.tables.contains_key(id) {
            return Ok(());
        }
        let all: Vec<String> = self.tables.keys().cloned().collect();
        Err(format!(
            "{what} `{id}`: PROD has no table {id}{}",
            suggest(id, &all)
        ))
    }

    fn column(&self, field: &str, what: &str) -> Result<(), String> {
        let Some(c) = ColumnRef::parse(field) else {
            return Err(format!("{what} `{field}` is not store.table.column"));
        };
        let Some(cols) = self.tables.get(&c.table_id()) else {
            return self.table(&c.table_id(), what);
        };
        if cols.contains(&c.column) {
            return Ok(());
        }
        let all: Vec<String> = cols
            .iter()
            .map(|x| format!("{}.{x}", c.table_id()))
            .collect();
        Err(format!(
            "{what} `{field}`: {} has no column {}{}",
            c.table_id(),
            c.column,
            suggest(field, &all)
        ))
    }

    /// A rule's exact field: a relational column, or `graph.Label.property` (the label checked).
    fn field(&self, field: &str, what: &str) -> Result<(), String> {
        if let Some((graph, labels)) = &self.graph {
            if let Some(rest) = field.strip_prefix(&format!("{graph}.")) {
                let label = rest.split('.').next().unwrap_or_default();
                if labels.contains(label) {
                    return Ok(());
                }
                let all: Vec<String> = labels.iter().map(|l| format!("{graph}.{l}")).collect();
                return Err(format!(
                    "{what} `{field}`: the PROD graph has no label {label}{}",
                    suggest(&format!("{graph}.{label}"), &all)
                ));
            }
        }
        self.column(field, what)
    }
}

/// `; did you mean X?` for the closest of `candidates`, when one is close enough to be a typo.
fn suggest(wrong: &str, candidates: &[String]) -> String {
    let lower = wrong.to_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(2))
        .min()
        .map(|(_, c)| format!("; did you mean {c}?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggests_the_closest_name_only_when_close() {
        let c = vec![
            "ids.students.school_id".to_string(),
            "ids.students.first_name".to_string(),
        ];
        assert_eq!(
            suggest("ids.students.shool_id", &c),
            "; did you mean ids.students.school_id?"
        );
        assert_eq!(
            suggest("IDS.Students.School_Id", &c),
            "; did you mean ids.students.school_id?"
        );
        assert_eq!(suggest("hcp2.grades.score", &c), "");
    }
}
