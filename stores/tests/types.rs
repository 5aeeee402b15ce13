//! Every PostgreSQL type the issue lists, and NULL in each, survives PROD → Arrow IPC → CERT exactly.

mod common;

use sqlx::{Connection, PgConnection};
use wf_stores::postgres::copy::{copy_in, copy_out};
use wf_stores::staging::{arrow_schema, open, ColType, StagedColumn, StagingWriter};
use wf_stores::StoreError;

const DDL: &str = "
create type mood as enum ('sad', 'ok', 'happy');
create table all_types (
  id int primary key, i2 smallint, i8 bigint, num numeric(14,4), r real, d double precision,
  t text, vc varchar(20), ch char(5), b bool, dt date, tm time, ts timestamp, tstz timestamptz,
  u uuid, j json, jb jsonb, by bytea, ta text[], ia int[], m mood);";

const ROWS: &str = r#"
insert into all_types values
 (1, 32767, 9223372036854775807, 12345678.1234, 3.14159, 2.718281828459045,
  E'tab\there\nnewline \\ backslash ''quote'' ünïcødé 😀', 'varchar', 'ab', true, '2024-02-29', '23:59:59.999999',
  '2001-02-03 04:05:06.789', '2001-02-03 04:05:06.789+05:30', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2, {"b": null}],  "s": "x\ty"}', '{"k": "v", "n": 1.50}', '\x00ff10',
  array['a', 'b,c', 'd"e', null, ''], array[1, null, -3], 'happy'),
 (2, -32768, -9223372036854775808, -0.0001, 'NaN', '-Infinity', '', '', '', false, '0001-01-01', '00:00:00',
  '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '00000000-0000-0000-0000-000000000000',
  '[]', '{}', '\x', '{}', '{}', 'sad'),
 (3, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null,
  null, null, null),
 (4, 0, 0, 1e-4, 1.5e-45, 1e308, 'x', 'y', 'z', null, '9999-12-31', '12:00', 'infinity', '-infinity',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', 'null', '\xdeadbeef', '{"{}"}', '{0}', 'ok');"#;

fn columns(table: &wf_stores::schema::Table) -> Vec<StagedColumn> {
    table
        .columns
        .iter()
        .map(|c| StagedColumn {
            name: c.name.clone(),
            source_type: c.data_type.clone(),
            col_type: ColType::of(wf_stores::StoreKind::Postgres, &c.data_type),
        })
        .collect()
}

async fn rows_as_text(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("select x::text from all_types x order by id")
        .fetch_all(conn)
        .await
        .expect("rows")
}

#[tokio::test]
async fn every_type_round_trips_exactly() {
    let Some(admin) = common::pg_admin_url() else {
        return;
    };
    let prod_url = common::fresh_pg_db(&admin, "types_prod").await;
    let cert_url = common::fresh_pg_db(&admin, "types_cert").await;
    let mut prod = PgConnection::connect(&prod_url).await.expect("prod");
    sqlx::raw_sql(DDL).execute(&mut prod).await.expect("ddl");
    sqlx::raw_sql(ROWS).execute(&mut prod).await.expect("rows");
    let mut cert = PgConnection::connect(&cert_url).await.expect("cert");
    sqlx::raw_sql(DDL)
        .execute(&mut cert)
        .await
        .expect("cert ddl");

    let store = wf_stores::postgres::PgStore::connect("t", &prod_url, wf_stores::Side::Prod)
        .await
        .expect("store");
    let schema = wf_stores::RelationalStore::introspect(&store)
        .await
        .expect("introspect");
    let table = schema
        .tables
        .iter()
        .find(|t| t.name == "all_types")
        .expect("table");
    let cols = columns(table);
    assert_eq!(
        cols.iter()
            .find(|c| c.name == "ia")
            .expect("ia")
            .source_type,
        "integer[]"
    );
    assert_eq!(
        cols.iter().find(|c| c.name == "m").expect("m").source_type,
        "mood"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("all_types.arrow");
    let mut w =
        StagingWriter::create(&path, arrow_schema("t", "all_types", &cols), 3).expect("writer");
    let n = copy_out(
        &mut prod,
        "t",
        "all_types",
        "copy (select * from all_types order by id) to stdout",
        &cols,
        &mut w,
    )
    .await
    .expect("copy out");
    assert_eq!(n, 4);
    let info = w.finish().expect("finish");
    assert_eq!(info.rows, 4);

    let reader = open(&path).expect("open");
    let batches = reader.map(|b| {
        b.map_err(|e| StoreError::Staging {
            path: path.clone(),
            message: e.to_string(),
        })
    });
    let names: Vec<String> = cols.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let copy = format!("copy all_types ({}) from stdin", names.join(", "));
    let sent = copy_in(&mut cert, &copy, batches, &[], |e| {
        StoreError::from_sqlx("t", e)
    })
    .await
    .expect("copy in");
    assert_eq!(sent, 4);

    let want = rows_as_text(&mut prod).await;
    let got = rows_as_text(&mut cert).await;
    assert_eq!(got, want);
    assert!(
        want[2].ends_with(",,,,,,,,,,,,,,,,,,,)"),
        "row 3 is all NULLs: {}",
        want[2]
    );
}
