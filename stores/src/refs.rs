//! The small names everything else uses: which side of a store (PROD or CERT), and a
//! `store.table.column` reference. A leaf module, so configuration and the graph store can both
//! name them without importing each other.

/// Which side of a store to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Prod,
    Cert,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Prod => "PROD",
            Side::Cert => "CERT",
        }
    }
}

/// A `store.table.column` reference, split.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnRef {
    pub store: String,
    pub table: String,
    pub column: String,
}

impl ColumnRef {
    /// Parses `store.table.column`, or `store.schema.table.column` for a PostgreSQL table outside
    /// schema `public` (its table is then `schema.table`).
    pub fn parse(text: &str) -> Option<ColumnRef> {
        let (s, rest) = text.split_once('.')?;
        let (t, c) = rest.rsplit_once('.')?;
        if s.is_empty() || t.is_empty() || c.is_empty() || t.split('.').count() > 2 {
            return None;
        }
        if t.split('.').any(str::is_empty) {
            return None;
        }
        Some(ColumnRef {
            store: s.into(),
            table: t.into(),
            column: c.into(),
        })
    }

    /// `store.table`.
    pub fn table_id(&self) -> String {
        format!("{}.{}", self.store, self.table)
    }
}
