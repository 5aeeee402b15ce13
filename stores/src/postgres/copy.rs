//! PostgreSQL `COPY … TO STDOUT` / `COPY … FROM STDIN` in text format, to and from staging files.
//! Text format is lossless for every type: each value is the server's own output, read back by its
//! own input function.

use crate::error::StoreError;
use crate::staging::{value_at, ColType, StagedColumn, StagingWriter, Value};
use arrow_array::RecordBatch;
use futures_util::StreamExt;
use sqlx::PgConnection;
use std::borrow::Cow;

/// Undoes COPY text escaping of one field (`\\`, `\t`, `\n`, `\r`, `\b`, `\f`, `\v`, octal `\NNN`).
fn unescape(field: &[u8]) -> Cow<'_, [u8]> {
    if !field.contains(&b'\\') {
        return Cow::Borrowed(field);
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let n = field[i + 1];
        i += 2;
        match n {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(n - b'0');
                let mut k = 0;
                while k < 2 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    v = v * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

/// Escapes one field for COPY text input.
pub fn escape_into(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            Some((h * 16 + l) as u8)
        })
        .collect()
}

/// Pushes one COPY text line (without its newline) into the staging writer.
fn push_line(
    w: &mut StagingWriter,
    cols: &[StagedColumn],
    line: &[u8],
    table: &str,
) -> Result<(), StoreError> {
    let bad = |col: &str, why: &str| StoreError::Query {
        store: String::new(),
        message: format!("table {table}, column {col}: {why}"),
    };
    let mut fields = line.split(|&b| b == b'\t');
    for (i, c) in cols.iter().enumerate() {
        let raw = fields
            .next()
            .ok_or_else(|| bad(&c.name, "COPY row has too few fields"))?;
        if raw == b"\\N" {
            w.push(i, Value::Null)?;
            continue;
        }
        let field = unescape(raw);
        let text = std::str::from_utf8(&field).map_err(|_| bad(&c.name, "value is not UTF-8"))?;
        let v = match c.col_type {
            ColType::Int => Value::Int(text.parse().map_err(|_| bad(&c.name, "not an integer"))?),
            ColType::Float => Value::Float(match text {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                t => t.parse().map_err(|_| bad(&c.name, "not a number"))?,
            }),
            ColType::Bool => Value::Bool(text == "t"),
            ColType::Text => Value::Text(text),
            ColType::Bytes => {
                let hex = text
                    .strip_prefix("\\x")
                    .ok_or_else(|| bad(&c.name, "bytea not in hex form"))?;
                let bytes =
                    decode_hex(hex.as_bytes()).ok_or_else(|| bad(&c.name, "bad bytea hex"))?;
                w.push(i, Value::Bytes(&bytes))?;
                continue;
            }
        };
        w.push(i, v)?;
    }
    w.end_row()
}

/// Streams `copy_sql` (a `COPY … TO STDOUT` in text format) into `w`, one row per line; rows written.
pub async fn copy_out(
    conn: &mut PgConnection,
    store: &str,
    table: &str,
    copy_sql: &str,
    cols: &[StagedColumn],
    w: &mut StagingWriter,
) -> Result<u64, StoreError> {
    copy_lines(conn, store, copy_sql, |line| {
        push_line(w, cols, line, table)
    })
    .await
}

/// Runs `copy_sql` (a `COPY … TO STDOUT` in text format) and calls `f` with each line (its
/// newline left out); lines read.
pub async fn copy_lines(
    conn: &mut PgConnection,
    store: &str,
    copy_sql: &str,
    mut f: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let err = |e| StoreError::from_sqlx(store, e);
    let mut stream = conn.copy_out_raw(copy_sql).await.map_err(err)?;
    let mut carry: Vec<u8> = Vec::new();
    let mut rows = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(err)?;
        let mut data: &[u8] = &chunk;
        if !carry.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    carry.extend_from_slice(&data[..nl]);
                    f(&carry)?;
                    rows += 1;
                    carry.clear();
                    data = &data[nl + 1..];
                }
                None => {
                    carry.extend_from_slice(data);
                    continue;
                }
            }
        }
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            f(&data[..nl])?;
            rows += 1;
            data = &data[nl + 1..];
        }
        carry.extend_from_slice(data);
    }
    Ok(rows)
}

/// The fields of a COPY text line, unescaped (`None`: NULL).
pub fn fields(line: &[u8]) -> impl Iterator<Item = Option<Cow<'_, [u8]>>> {
    line.split(|&b| b == b'\t')
        .map(|f| (f != b"\\N").then(|| unescape(f)))
}

/// Encodes row `row` of `batch` as one COPY text line; columns in `null_cols` are sent as NULL.
pub fn encode_row(out: &mut Vec<u8>, batch: &RecordBatch, row: usize, null_cols: &[bool]) {
    let mut num = String::new();
    for (i, col) in batch.columns().iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        if null_cols.get(i).copied().unwrap_or(false) {
            out.extend_from_slice(b"\\N");
            continue;
        }
        match value_at(col.as_ref(), row) {
            Value::Null => out.extend_from_slice(b"\\N"),
            Value::Int(x) => out.extend_from_slice(x.to_string().as_bytes()),
            Value::Float(x) => {
                num.clear();
                if x.is_nan() {
                    num.push_str("NaN");
                } else if x.is_infinite() {
                    num.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
                } else {
                    num.push_str(&format!("{x:?}"));
                }
                out.extend_from_slice(num.as_bytes());
            }
            Value::Bool(x) => out.push(if x { b't' } else { b'f' }),
            Value::Text(t) => escape_into(out, t.as_bytes()),
            Value::Bytes(b) => {
                out.extend_from_slice(b"\\\\x");
                out.extend_from_slice(hex::encode(b).as_bytes());
            }
        }
    }
    out.push(b'\n');
}

/// Sends every row of `batches` into `copy_sql` (a `COPY t (…) FROM STDIN`); returns rows sent.
/// `err` classifies database errors (a load maps constraint violations to the table they hit).
pub async fn copy_in<I, F>(
    conn: &mut PgConnection,
    copy_sql: &str,
    batches: I,
    null_cols: &[bool],
    err: F,
) -> Result<u64, StoreError>
where
    I: IntoIterator<Item = Result<RecordBatch, StoreError>>,
    F: Fn(sqlx::Error) -> StoreError,
{
    let err = &err;
    let mut copy = conn.copy_in_raw(copy_sql).await.map_err(err)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut rows = 0u64;
    for batch in batches {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                let _ = copy.abort("wf: staging file unreadable").await;
                return Err(e);
            }
        };
        for r in 0..batch.num_rows() {
            encode_row(&mut buf, &batch, r, null_cols);
            rows += 1;
            if buf.len() >= 1 << 20 {
                copy.send(buf.as_slice()).await.map_err(err)?;
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_slice()).await.map_err(err)?;
    }
    copy.finish().await.map_err(err)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_awkward_text() {
        let text = "tab\there\nnew\\line\rcr";
        let mut out = Vec::new();
        escape_into(&mut out, text.as_bytes());
        assert!(!out.contains(&b'\t') && !out.contains(&b'\n'));
        assert_eq!(unescape(&out).as_ref(), text.as_bytes());
        assert_eq!(unescape(b"\\101\\x").as_ref(), b"Ax");
    }
}
