//! The synthetic rostering data of `wf seed`: four districts of very different sizes (one with no
//! assessments at all), PII where it usually is and in a free-text column, a JSON column and the
//! graph. Deterministic: the same scale gives the same rows.

use fake::faker::address::en::{CityName, StreetName};
use fake::faker::lorem::en::Sentence;
use fake::faker::name::en::{FirstName, LastName};
use fake::faker::phone_number::en::CellNumber;
use fake::Fake;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A cell of a generated row.
#[derive(Debug, Clone)]
pub enum Cell {
    Int(i64),
    Float(f64),
    Text(String),
}

impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}
impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_string())
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Float(v)
    }
}

/// Where generated rows go: `table` is `store.table`, cells by column name.
pub trait Sink {
    fn row(&mut self, table: &str, cells: &[(&str, Cell)]) -> Result<(), String>;
    fn node(&mut self, label: &str, props: &[(&str, Cell)]) -> Result<(), String>;
    fn rel(&mut self, rel_type: &str, start: (&str, i64), end: (&str, i64)) -> Result<(), String>;
}

/// The districts: id, name, students per unit of scale, latest activity year.
pub const DISTRICTS: &[(i64, &str, u64, i32)] = &[
    (1, "North Valley USD", 50, 2026),
    (2, "Lakeside ISD", 250, 2026),
    (3, "Metro City Schools", 1200, 2026),
    (4, "Pine Ridge Rural", 12, 2019),
];

const GRADES: &[(&str, &str)] = &[
    ("K", "Kindergarten"),
    ("01", "Grade 1"),
    ("02", "Grade 2"),
    ("03", "Grade 3"),
    ("04", "Grade 4"),
    ("05", "Grade 5"),
    ("06", "Grade 6"),
    ("07", "Grade 7"),
    ("08", "Grade 8"),
    ("09", "Grade 9"),
    ("10", "Grade 10"),
    ("11", "Grade 11"),
    ("12", "Grade 12"),
];

const SUBJECTS: &[&str] = &["Math", "Reading", "Science", "History", "Art", "Music"];

/// Sections each student is enrolled in; attendance days per enrollment.
const SECTIONS_PER_STUDENT: usize = 5;
const DAYS_PER_ENROLLMENT: i64 = 4;

struct Ids {
    next: i64,
}

impl Ids {
    fn take(&mut self) -> i64 {
        self.next += 1;
        self.next
    }
}

fn date(year: i32, day_of_year: i64) -> String {
    let d = chrono::NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or_default()
        + chrono::Duration::days(day_of_year.rem_euclid(365));
    d.format("%Y-%m-%d").to_string()
}

fn ssn(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{:03}-{:02}-{:04}",
        rng.random_range(100..900),
        rng.random_range(10..99),
        rng.random_range(1000..9999)
    )
}

/// Generates every row and node for `scale` into `sink`.
pub fn generate(scale: u64, sink: &mut dyn Sink) -> Result<(), String> {
    for (code, label) in GRADES {
        sink.row(
            "ids.grade_levels",
            &[("code", (*code).into()), ("label", (*label).into())],
        )?;
    }
    let mut ids = Ids { next: 0 };
    for &(d, name, per_scale, year) in DISTRICTS {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0000 + d as u64);
        let students = (per_scale * scale).max(4);
        district(sink, &mut rng, &mut ids, (d, name, year), students)?;
    }
    Ok(())
}

fn district(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ids: &mut Ids,
    (d, name, year): (i64, &str, i32),
    n_students: u64,
) -> Result<(), String> {
    sink.row(
        "ids.districts",
        &[
            ("id", d.into()),
            ("name", name.into()),
            ("state", "CA".into()),
        ],
    )?;
    let (schools, staff_ids) = schools_and_staff(sink, rng, ids, d, n_students)?;
    let sections = courses_and_sections(sink, ids, d, n_students, &staff_ids)?;
    let assessments = assessments(sink, ids, d, year)?;
    let district = DistrictRows {
        d,
        year,
        schools,
        sections,
        assessments,
    };
    for i in 0..n_students {
        student(sink, rng, ids, &district, i)?;
    }
    Ok(())
}

/// What a district's students refer to.
struct DistrictRows {
    d: i64,
    year: i32,
    schools: Vec<i64>,
    sections: Vec<i64>,
    assessments: Vec<i64>,
}

/// Schools and their staff; the first staff member of a school is its principal (the cycle).
fn schools_and_staff(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ids: &mut Ids,
    d: i64,
    n_students: u64,
) -> Result<(Vec<i64>, Vec<i64>), String> {
    let dc = || ("district_id", Cell::Int(d));
    let n_schools = (n_students / 300).max(1);
    let mut staff_ids = Vec::new();
    let mut schools = Vec::new();
    for s in 0..n_schools {
        let school = ids.take();
        schools.push(school);
        let city: String = CityName().fake_with_rng(rng);
        let street: String = StreetName().fake_with_rng(rng);
        let n_staff = (n_students / n_schools / 15).max(2);
        let first_staff = ids.next + 1;
        sink.row(
            "ids.schools",
            &[
                ("id", school.into()),
                dc(),
                ("name", format!("{city} School {}", s + 1).into()),
                (
                    "street",
                    format!("{} {street}", rng.random_range(1..999)).into(),
                ),
                ("principal_id", first_staff.into()),
            ],
        )?;
        sink.node(
            "School",
            &[
                ("id", school.into()),
                dc(),
                ("name", format!("{city} School {}", s + 1).into()),
            ],
        )?;
        for _ in 0..n_staff {
            let id = ids.take();
            staff_ids.push(id);
            let (f, l): (String, String) = (
                FirstName().fake_with_rng(rng),
                LastName().fake_with_rng(rng),
            );
            let email = format!(
                "{}.{}{id}@staff.example.org",
                f.to_lowercase(),
                l.to_lowercase()
            );
            let phone: String = CellNumber().fake_with_rng(rng);
            sink.row(
                "ids.staff",
                &[
                    ("id", id.into()),
                    dc(),
                    ("school_id", school.into()),
                    ("first_name", f.as_str().into()),
                    ("last_name", l.as_str().into()),
                    ("email", email.as_str().into()),
                    ("phone", phone.into()),
                    ("hired_on", date(2005 + (id % 18) as i32, id).into()),
                ],
            )?;
            sink.node(
                "Teacher",
                &[
                    ("id", id.into()),
                    dc(),
                    ("name", format!("{f} {l}").into()),
                    ("email", email.into()),
                ],
            )?;
        }
    }
    Ok((schools, staff_ids))
}

/// Courses and sections (hcp1), each section taught by a staff member (a virtual FK to ids).
fn courses_and_sections(
    sink: &mut dyn Sink,
    ids: &mut Ids,
    d: i64,
    n_students: u64,
    staff_ids: &[i64],
) -> Result<Vec<i64>, String> {
    let dc = || ("district_id", Cell::Int(d));
    let mut courses = Vec::new();
    for (i, subject) in SUBJECTS.iter().enumerate() {
        let id = ids.take();
        courses.push(id);
        sink.row(
            "hcp1.courses",
            &[
                ("id", id.into()),
                dc(),
                (
                    "code",
                    format!("{}{}", &subject[..3].to_uppercase(), 100 + i).into(),
                ),
                ("title", format!("{subject} {}", 1 + i % 3).into()),
            ],
        )?;
    }
    let n_sections = (n_students / 25).max(SECTIONS_PER_STUDENT as u64);
    let mut sections = Vec::new();
    for j in 0..n_sections {
        let id = ids.take();
        sections.push(id);
        let teacher = staff_ids[j as usize % staff_ids.len()];
        sink.row(
            "hcp1.sections",
            &[
                ("id", id.into()),
                dc(),
                ("course_id", courses[j as usize % courses.len()].into()),
                ("teacher_id", teacher.into()),
                ("room", format!("R{}", 100 + j % 60).into()),
                ("period", ((j % 7) as i64 + 1).into()),
            ],
        )?;
        sink.node(
            "Section",
            &[("id", id.into()), ("period", ((j % 7) as i64 + 1).into())],
        )?;
        sink.rel("TEACHES", ("Teacher", teacher), ("Section", id))?;
    }
    Ok(sections)
}

/// Assessments (adb): district 4 has none (an incomplete district).
fn assessments(sink: &mut dyn Sink, ids: &mut Ids, d: i64, year: i32) -> Result<Vec<i64>, String> {
    let dc = || ("district_id", Cell::Int(d));
    if d == 4 {
        return Ok(Vec::new());
    }
    let assessments: Vec<i64> = {
        (0..6)
            .map(|i| {
                let id = ids.take();
                sink.row(
                    "adb.assessments",
                    &[
                        ("id", id.into()),
                        dc(),
                        ("title", format!("Benchmark {}", i + 1).into()),
                        ("subject", SUBJECTS[i % SUBJECTS.len()].into()),
                        ("given_on", date(year, 30 + 40 * i as i64).into()),
                    ],
                )
                .map(|_| id)
            })
            .collect::<Result<_, _>>()?
    };
    Ok(assessments)
}

/// Student `i` of a district: the row and node, guardians, enrollments, attendance, grades and
/// assessment results.
fn student(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ids: &mut Ids,
    dr: &DistrictRows,
    i: u64,
) -> Result<(), String> {
    let (d, year) = (dr.d, dr.year);
    let dc = || ("district_id", Cell::Int(d));
    let schools = &dr.schools;
    let id = ids.take();
    let school = schools[i as usize % schools.len()];
    let g = rng.random_range(0..GRADES.len());
    let (f, l): (String, String) = (
        FirstName().fake_with_rng(rng),
        LastName().fake_with_rng(rng),
    );
    let email = format!(
        "{}.{}{id}@students.example.org",
        f.to_lowercase(),
        l.to_lowercase()
    );
    let street: String = StreetName().fake_with_rng(rng);
    let city: String = CityName().fake_with_rng(rng);
    let note: String = Sentence(4..10).fake_with_rng(rng);
    // Now and then a counselor pastes an SSN into the notes: the detector must catch it.
    let notes = if id % 97 == 0 {
        format!("{note} SSN on file: {}", ssn(rng))
    } else {
        note
    };
    let contact = format!("{} {l}", FirstName().fake_with_rng::<String, _>(rng));
    let phone: String = CellNumber().fake_with_rng(rng);
    let profile = serde_json::json!({
        "emergency_contact": { "name": contact, "phone": phone },
        "lunch_plan": if id % 3 == 0 { "free" } else { "paid" },
    });
    sink.row(
        "ids.students",
        &[
            ("id", id.into()),
            dc(),
            ("school_id", school.into()),
            ("grade", GRADES[g].0.into()),
            ("first_name", f.as_str().into()),
            ("last_name", l.as_str().into()),
            (
                "birth_date",
                date(year - 6 - g as i32, rng.random_range(0..365)).into(),
            ),
            ("email", email.as_str().into()),
            ("state_id", format!("ST{id:09}").into()),
            (
                "address",
                format!("{} {street}, {city}", rng.random_range(1..9999)).into(),
            ),
            ("notes", notes.into()),
            ("profile", profile.to_string().into()),
            (
                "updated_at",
                format!(
                    "{} 0{}:15:00",
                    date(year, rng.random_range(0..300)),
                    id % 10
                )
                .into(),
            ),
        ],
    )?;
    sink.node(
        "Student",
        &[
            ("id", id.into()),
            dc(),
            ("student_id", id.into()),
            ("name", format!("{f} {l}").into()),
            ("email", email.into()),
            ("grade", GRADES[g].0.into()),
        ],
    )?;
    sink.rel("ATTENDS", ("Student", id), ("School", school))?;
    guardians(sink, rng, ids, d, (id, i, &l))?;
    enrollments(sink, rng, ids, dr, (id, &f))?;
    results(sink, rng, ids, dr, id)
}

/// One or two guardians of student `id` (the `i`th of the district, last name `l`).
fn guardians(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ids: &mut Ids,
    d: i64,
    (id, i, l): (i64, u64, &str),
) -> Result<(), String> {
    let dc = || ("district_id", Cell::Int(d));
    for k in 0..(1 + (i % 2)) {
        let gid = ids.take();
        let gname = format!("{} {l}", FirstName().fake_with_rng::<String, _>(rng));
        let gphone: String = CellNumber().fake_with_rng(rng);
        sink.row(
            "ids.guardians",
            &[
                ("id", gid.into()),
                dc(),
                ("name", gname.as_str().into()),
                ("email", format!("guardian{gid}@mail.example.net").into()),
                ("phone", gphone.into()),
            ],
        )?;
        sink.row(
            "ids.student_guardians",
            &[
                ("student_id", id.into()),
                ("guardian_id", gid.into()),
                (
                    "relation",
                    if k == 0 { "parent" } else { "guardian" }.into(),
                ),
            ],
        )?;
        sink.node("Guardian", &[("id", gid.into()), ("name", gname.into())])?;
        sink.rel("GUARDIAN_OF", ("Guardian", gid), ("Student", id))?;
    }
    Ok(())
}

/// Student `id`'s enrollments in sections, with attendance and grades (`f`: first name).
fn enrollments(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ids: &mut Ids,
    dr: &DistrictRows,
    (id, f): (i64, &str),
) -> Result<(), String> {
    let (d, year, sections) = (dr.d, dr.year, &dr.sections);
    let dc = || ("district_id", Cell::Int(d));
    let first = rng.random_range(0..sections.len());
    for s in 0..SECTIONS_PER_STUDENT.min(sections.len()) {
        let section = sections[(first + s * 7) % sections.len()];
        let eid = ids.take();
        sink.row(
            "hcp1.enrollments",
            &[
                ("id", eid.into()),
                dc(),
                ("section_id", section.into()),
                ("student_id", id.into()),
                ("enrolled_on", date(year, 240).into()),
            ],
        )?;
        sink.rel("ENROLLED_IN", ("Student", id), ("Section", section))?;
        for day in 0..DAYS_PER_ENROLLMENT {
            let status = match rng.random_range(0..20) {
                0 => "absent",
                1 => "tardy",
                _ => "present",
            };
            sink.row(
                "hcp2.attendance",
                &[
                    ("id", ids.take().into()),
                    dc(),
                    ("student_id", id.into()),
                    ("section_id", section.into()),
                    ("day", date(year, 250 + day).into()),
                    ("status", status.into()),
                ],
            )?;
        }
        let comment: String = Sentence(3..8).fake_with_rng(rng);
        sink.row(
            "hcp2.grades",
            &[
                ("id", ids.take().into()),
                dc(),
                ("student_id", id.into()),
                ("section_id", section.into()),
                ("term", 1i64.into()),
                ("mark", ["A", "B", "C", "D"][rng.random_range(0..4)].into()),
                ("comments", format!("{f}: {comment}").into()),
            ],
        )?;
    }
    Ok(())
}

/// Student `id`'s results in the district's first four assessments.
fn results(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ids: &mut Ids,
    dr: &DistrictRows,
    id: i64,
) -> Result<(), String> {
    let dc = || ("district_id", Cell::Int(dr.d));
    let year = dr.year;
    for a in dr.assessments.iter().take(4) {
        sink.row(
            "adb.results",
            &[
                ("id", ids.take().into()),
                dc(),
                ("assessment_id", (*a).into()),
                ("student_id", id.into()),
                ("score", (rng.random_range(200..800) as f64 / 2.0).into()),
                ("scored_at", format!("{} 10:00:00", date(year, 60)).into()),
            ],
        )?;
    }
    Ok(())
}
