//! Anonymization benchmark (issue 5): a 1,000,000-row, 10-column staging file (WF_BENCH_ROWS to
//! change). Reports rows/s with every column under `hmac`, under `fake`, under `mask`, and under a
//! realistic mix, each against a plain Arrow IPC read + write of the same file (batches passed
//! through), and against the same copy through wf's staging writer (digest + sync to disk, which
//! every staging file gets before the journal records it). The anonymize timings include
//! classification sampling, the digest check of the input and the leak scan. The unique integer
//! `id` is keyed (`hmac`) in every case (`mask` and `fake` refuse a unique integer). CPU seconds
//! are compared with the floor: one HMAC per distinct text value, at wf's own HMAC rate.
//! Each figure is the median of WF_BENCH_REPEAT runs (default 3). It runs on mimalloc with
//! transparent huge pages off, as `wf` does (`WF_BENCH_THP=1` leaves them on).
//! Run: `cargo bench --bench anonymize`. It measures, asserts nothing.

use std::path::Path;
use std::time::Instant;
use wf_steps::anonymize::{anonymize, AnonKey, Rules, TableInput};
use wf_stores::staging::{arrow_schema, open, ColType, StagedColumn, StagingWriter, Value};

/// The allocator the `wf` binary runs with (and, in `main`, its transparent huge pages off), so
/// the CPU figures are wf's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const COLS: [&str; 10] = [
    "id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "street",
    "city",
    "notes",
    "code",
    "dob",
];

/// Writes the input; returns how many distinct text values it has (each needs one HMAC under
/// `hmac`: repeated values are transformed once, through the memo).
fn make(path: &Path, rows: u64) -> u64 {
    let cols: Vec<StagedColumn> = COLS
        .iter()
        .map(|c| StagedColumn {
            name: c.to_string(),
            source_type: if *c == "id" { "bigint" } else { "text" }.into(),
            col_type: if *c == "id" {
                ColType::Int
            } else {
                ColType::Text
            },
        })
        .collect();
    let mut w =
        StagingWriter::create(path, arrow_schema("bench", "people", &cols), 8192).expect("writer");
    let first = ["Mary", "John", "Ana", "Li", "Omar", "Zoe", "Ivan", "Sara"];
    let mut distinct: Vec<std::collections::HashSet<u64>> = vec![Default::default(); 9];
    for i in 0..rows {
        let vals = [
            format!("person{i}@school.example"),
            first[(i % 8) as usize].to_string(),
            format!("Last{}", i % 5000),
            format!("+1 555 {:03} {:04}", i % 1000, i % 10_000),
            format!("{} Oak Street", i % 900 + 1),
            format!("City{}", i % 300),
            format!("note about student {i}: doing fine"),
            format!("AB-{:06}", i % 1_000_000),
            format!("20{:02}-{:02}-{:02}", 5 + i % 15, 1 + i % 12, 1 + i % 28),
        ];
        w.push(0, Value::Int(1_000_000 + i as i64)).expect("push");
        for (k, v) in vals.iter().enumerate() {
            w.push(k + 1, Value::Text(v)).expect("push");
            distinct[k].insert(text_hash(v));
        }
        w.end_row().expect("row");
    }
    w.finish().expect("finish");
    distinct.iter().map(|d| d.len() as u64).sum()
}

fn text_hash(v: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// HMAC-SHA256s per second on one core, through wf's own code, on values of the input's length.
fn hmac_rate(key: &AnonKey) -> f64 {
    let n = 2_000_000u64;
    let t = Instant::now();
    let mut acc = 0u8;
    let mut v = String::new();
    for i in 0..n {
        use std::fmt::Write;
        v.clear();
        let _ = write!(v, "person{i}@school.example");
        acc ^= key.mac("hmac:text", v.as_bytes())[0];
    }
    std::hint::black_box(acc);
    n as f64 / t.elapsed().as_secs_f64()
}

/// Copies the file batch by batch with arrow-ipc's own writer.
fn plain_copy(input: &Path, output: &Path) -> f64 {
    let t = Instant::now();
    let reader = open(input).expect("open");
    let schema = reader.schema();
    let file = std::fs::File::create(output).expect("create");
    let mut w = arrow_ipc::writer::FileWriter::try_new(std::io::BufWriter::new(file), &schema)
        .expect("writer");
    for b in reader {
        w.write(&b.expect("batch")).expect("write");
    }
    w.finish().expect("finish");
    t.elapsed().as_secs_f64()
}

/// The same copy through wf's staging writer: the digest of the output and a sync to disk, which
/// every staging file gets before the journal records it (a power loss must not lose it).
fn staging_copy(input: &Path, output: &Path) -> f64 {
    let t = Instant::now();
    let reader = open(input).expect("open");
    let mut w = StagingWriter::create(output, reader.schema(), 8192).expect("writer");
    for b in reader {
        w.push_batch(&b.expect("batch")).expect("write");
    }
    w.finish().expect("finish");
    t.elapsed().as_secs_f64()
}

/// CPU seconds used by this process so far (the engine's own reading; 0 where /proc is missing).
fn cpu_seconds() -> f64 {
    wf_engine::resources::cpu_ms().unwrap_or(0) as f64 / 1000.0
}

/// Runs `f` (which returns its wall time, outputs removed beforehand so every run writes new
/// files) WF_BENCH_REPEAT times (default 3); the median run's wall time and CPU seconds.
fn median(mut f: impl FnMut() -> f64) -> (f64, f64) {
    let n: usize = std::env::var("WF_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut runs: Vec<(f64, f64)> = (0..n.max(1))
        .map(|_| {
            let cpu = cpu_seconds();
            let wall = f();
            (wall, cpu_seconds() - cpu)
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[runs.len() / 2]
}

fn rules_for(strategy: &str) -> String {
    let mut s = String::new();
    for c in COLS {
        let rule = match (strategy, c) {
            // The unique integer id is keyed under every case: `mask` and `fake` on a unique
            // integer are refused (they would collide), so those cases transform the 9 others.
            (_, "id") => "strategy = \"hmac\"".to_string(),
            ("mix", "email") => "strategy = \"fake\"\nkind = \"email\"".into(),
            ("mix", "first_name") => "strategy = \"fake\"\nkind = \"first_name\"".into(),
            ("mix", "last_name") => "strategy = \"fake\"\nkind = \"last_name\"".into(),
            ("mix", "phone") | ("mix", "code") => "strategy = \"mask\"".into(),
            ("mix", "street") => "strategy = \"fake\"\nkind = \"street_address\"".into(),
            ("mix", "city") => "strategy = \"fake\"\nkind = \"city\"".into(),
            ("mix", "notes") => "strategy = \"redact\"".into(),
            ("mix", "dob") => "strategy = \"shift_date\"\nentity = \"id\"".into(),
            ("fake", _) => "strategy = \"fake\"\nkind = \"name\"".into(),
            (other, _) => format!("strategy = \"{other}\""),
        };
        s.push_str(&format!(
            "[[rules]]\nfield = \"bench.people.{c}\"\n{rule}\n"
        ));
    }
    s
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    #[cfg(target_os = "linux")]
    if std::env::var("WF_BENCH_THP").as_deref() != Ok("1") {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
    let rows: u64 = std::env::var("WF_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("people.arrow");
    let hmacs = make(&input, rows);
    let copy = dir.path().join("copy.arrow");
    let (plain, cpu_plain) = median(|| {
        let _ = std::fs::remove_file(&copy);
        plain_copy(&input, &copy)
    });
    // What checking a staged file against its journaled digest costs a reader (issue 12).
    let sha = wf_engine::digest::file(&input, None).expect("sha");
    let read = |checked: bool| {
        let t = Instant::now();
        let reader = if checked {
            wf_stores::staging::open_verified(&input, &sha)
        } else {
            open(&input)
        }
        .expect("open");
        for b in reader {
            std::hint::black_box(b.expect("batch"));
        }
        t.elapsed().as_secs_f64()
    };
    let (unchecked, _) = median(|| read(false));
    let (checked, _) = median(|| read(true));
    println!(
        "read the input: {unchecked:.3} s unchecked, {checked:.3} s checked against its digest while read ({:.0} MB)",
        std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    let staged = dir.path().join("copy-staged.arrow");
    let (synced, cpu_staged) = median(|| {
        let _ = std::fs::remove_file(&staged);
        staging_copy(&input, &staged)
    });
    println!(
        "plain Arrow IPC read+write: {:.2} s, {:.0} rows/s ({rows} rows x 10 columns, {cpu_plain:.2} s CPU); through the staging writer (digest + sync): {synced:.2} s",
        plain,
        rows as f64 / plain
    );
    let key = AnonKey::from_bytes(b"benchmark-key-0123456789");
    let rate = hmac_rate(&key);
    let floor = hmacs as f64 / rate;
    println!(
        "hmac floor: {hmacs} distinct text values, one HMAC each, at {:.1} M HMAC/s on one core = {floor:.2} s CPU; floor + plain copy = {:.2} s CPU, floor + staged copy = {:.2} s CPU",
        rate / 1e6,
        floor + cpu_plain,
        floor + cpu_staged
    );
    let only = std::env::var("WF_BENCH_STRATEGIES").unwrap_or_default();
    for strategy in ["hmac", "fake", "mask", "mix"] {
        if !only.is_empty() && !only.split(',').any(|s| s == strategy) {
            continue;
        }
        let rules = Rules::parse(&rules_for(strategy), Path::new("bench.toml")).expect("rules");
        let inputs = [TableInput {
            table: "bench.people".into(),
            file: input.clone(),
            // Checked while read, as in a run (WF_BENCH_VERIFY=0 reads unchecked, to measure it).
            sha256: (std::env::var("WF_BENCH_VERIFY").as_deref() != Ok("0"))
                .then(|| wf_engine::digest::file(&input, None).expect("sha of the input")),
            unique: vec!["id".into()],
            rule_as: Default::default(),
        }];
        let out = dir.path().join(format!("anon-{strategy}"));
        let (secs, cpu) = median(|| {
            let _ = std::fs::remove_dir_all(&out);
            let t = Instant::now();
            anonymize(&inputs, &rules, Path::new("bench.toml"), &key, &out).expect("anonymize");
            t.elapsed().as_secs_f64()
        });
        println!(
            "anonymize all 10 columns with {strategy:<5}: {:.2} s, {:.0} rows/s, {:.1}x the plain copy, {:.1}x the staged copy; {cpu:.2} s CPU = {:.1}x floor + plain copy, {:.1}x floor + staged copy",
            secs,
            rows as f64 / secs,
            secs / plain,
            secs / synced,
            cpu / (floor + cpu_plain),
            cpu / (floor + cpu_staged)
        );
    }
}
