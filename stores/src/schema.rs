//! What discovery finds in a store: tables, columns, keys, foreign keys, row counts.

use serde::{Deserialize, Serialize};

/// A column as the database declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The database's type name (`integer`, `text[]`, `timestamp with time zone`, an enum's name).
    pub data_type: String,
    pub nullable: bool,
    pub default: Option<String>,
}

/// A foreign key (declared, or virtual from config), possibly composite and possibly across stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    /// `store.table` of the referenced table.
    pub ref_table: String,
    pub ref_columns: Vec<String>,
    /// Checked at commit rather than per row (PostgreSQL `DEFERRABLE`).
    pub deferrable: bool,
    /// Declared in config, not in the database.
    pub is_virtual: bool,
}

/// A unique constraint or unique index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unique {
    pub name: String,
    pub columns: Vec<String>,
    /// A partial unique index (`… WHERE pred`): unique only among the rows the predicate holds for,
    /// so anonymized values are kept unique, but the subset is not checked against it.
    #[serde(default)]
    pub partial: bool,
}

/// One table of one store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub store: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub uniques: Vec<Unique>,
    pub foreign_keys: Vec<ForeignKey>,
    pub row_count: u64,
}

impl Table {
    /// `store.table`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.store, self.name)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Everything discovered in one store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreSchema {
    pub store: String,
    pub kind: crate::config::StoreKind,
    pub tables: Vec<Table>,
}
