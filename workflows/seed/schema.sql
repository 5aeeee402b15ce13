-- wf seed: the synthetic PROD schema, one section per store (`-- store: name`). Written to run on
-- PostgreSQL and SQLite alike. Every table carries district_id except the link table and the code
-- list; schools <-> staff is a cycle (principal_id is nullable and deferrable).
-- store: ids
create table districts (id bigint primary key, name text not null, state text not null);
create table grade_levels (code text primary key, label text not null);
create table schools (
  id bigint primary key, district_id bigint not null references districts(id), name text not null,
  street text, principal_id bigint /*principal*/);
create table staff (
  id bigint primary key, district_id bigint not null references districts(id),
  school_id bigint not null references schools(id), first_name text not null, last_name text not null,
  email text unique, phone text, hired_on date);
create table students (
  id bigint primary key, district_id bigint not null references districts(id),
  school_id bigint not null references schools(id), grade text references grade_levels(code),
  first_name text not null, last_name text not null, birth_date date, email text unique,
  state_id text unique, address text, notes text, profile jsonb, updated_at timestamp);
create table guardians (
  id bigint primary key, district_id bigint not null references districts(id), name text not null,
  email text, phone text);
create table student_guardians (
  student_id bigint not null references students(id), guardian_id bigint not null references guardians(id),
  relation text, primary key (student_id, guardian_id));
-- store: hcp1
create table courses (id bigint primary key, district_id bigint not null, code text not null, title text not null);
create table sections (
  id bigint primary key, district_id bigint not null, course_id bigint not null references courses(id),
  teacher_id bigint not null, room text, period integer);
create table enrollments (
  id bigint primary key, district_id bigint not null, section_id bigint not null references sections(id),
  student_id bigint not null, enrolled_on date);
-- store: hcp2
create table attendance (
  id bigint primary key, district_id bigint not null, student_id bigint not null, section_id bigint not null,
  day date not null, status text not null);
create table grades (
  id bigint primary key, district_id bigint not null, student_id bigint not null, section_id bigint not null,
  term integer not null, mark text not null, comments text);
-- store: adb
create table assessments (
  id bigint primary key, district_id bigint not null, title text not null, subject text not null, given_on date);
create table results (
  id bigint primary key, district_id bigint not null, assessment_id bigint not null references assessments(id),
  student_id bigint not null, score double precision, scored_at timestamp);
