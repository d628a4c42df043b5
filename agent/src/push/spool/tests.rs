use super::*;
use empreinte_shared::wire::{Counter, Record};
use empreinte_shared::{Component, SourceKind};

const RUN: &str = "00000000000000000000000000000001";
const DAY: u64 = 86_400_000;
const NOW: u64 = 1_800_000_000_000;

fn batch(run: &str, seq: u64, start: u64, uj: u64) -> Batch {
    Batch {
        run_id: run.into(),
        seq,
        start_unix_ms: start,
        end_unix_ms: start + 15_000,
        records: vec![Record {
            project: "p".into(),
            component: Component::Cpu,
            source: SourceKind::Rapl,
            start_unix_ms: start,
            end_unix_ms: start + 15_000,
            energy_uj: uj,
            model: None,
        }],
        counters: vec![Counter {
            project: "p".into(),
            component: Component::Cpu,
            source: SourceKind::Rapl,
            total_uj: uj * seq,
        }],
        inference: vec![],
    }
}

fn limits() -> SpoolLimits {
    SpoolLimits {
        max_bytes: 1 << 30,
        max_age_ms: 8 * DAY,
        segment_bytes: 2_000,
    }
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    v.sort();
    v
}

fn seqs(p: &Pending) -> Vec<u64> {
    p.batches.iter().map(|b| b.seq).collect()
}

#[test]
fn appended_batches_are_read_in_order_acknowledged_and_their_segments_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
    for seq in 1..=30 {
        s.append(&batch(RUN, seq, NOW + seq * 15_000, seq)).unwrap();
    }
    assert_eq!(s.batches(), 30);
    let n_segments = segments(dir.path()).len();
    assert!(n_segments >= 3, "rotation at 2 000 bytes: {n_segments}");
    assert_eq!(s.status().oldest_start_unix_ms, Some(NOW + 15_000));

    let first = s.read_pending(12).unwrap();
    assert_eq!(seqs(&first), (1..=12).collect::<Vec<_>>());
    // Reading does not consume.
    assert_eq!(seqs(&s.read_pending(12).unwrap()), seqs(&first));
    s.ack(first.end).unwrap();
    assert_eq!(s.batches(), 18);
    assert_eq!(s.status().oldest_start_unix_ms, Some(NOW + 13 * 15_000));
    assert!(
        segments(dir.path()).len() < n_segments,
        "acknowledged segments are deleted"
    );
    // An acknowledgement that arrives late changes nothing.
    s.ack(first.end).unwrap();
    assert_eq!(s.batches(), 18);

    let rest = s.read_pending(100).unwrap();
    assert_eq!(seqs(&rest), (13..=30).collect::<Vec<_>>());
    s.ack(rest.end).unwrap();
    assert_eq!(s.batches(), 0);
    assert_eq!(s.bytes(), 0);
    assert!(s.read_pending(10).unwrap().batches.is_empty());
    assert!(segments(dir.path()).len() <= 1);
}

#[test]
fn a_restart_resumes_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        for seq in 1..=20 {
            s.append(&batch(RUN, seq, NOW, 1)).unwrap();
        }
        let p = s.read_pending(7).unwrap();
        s.ack(p.end).unwrap();
    }
    let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert_eq!(s.batches(), 13);
    let p = s.read_pending(100).unwrap();
    assert_eq!(seqs(&p), (8..=20).collect::<Vec<_>>());
    s.append(&batch(RUN, 21, NOW, 1)).unwrap();
    assert_eq!(seqs(&s.read_pending(100).unwrap()).last(), Some(&21));
}

#[test]
fn the_open_batch_left_by_a_crash_is_sealed_with_its_old_name() {
    let dir = tempfile::tempdir().unwrap();
    let old = "0123456789abcdef0123456789abcdef";
    {
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        s.append(&batch(old, 1, NOW, 5)).unwrap();
        s.write_open(Some(&batch(old, 2, NOW + 15_000, 7))).unwrap();
        // SIGKILL: nothing else runs.
    }
    let s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert_eq!(s.counts().recovered, vec![(old.to_string(), 2)]);
    let p = s.read_pending(10).unwrap();
    assert_eq!(
        p.batches,
        vec![batch(old, 1, NOW, 5), batch(old, 2, NOW + 15_000, 7)]
    );
    assert!(!dir.path().join(OPEN).exists());
    // Opening again does not seal it twice.
    drop(s);
    let s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert_eq!(s.batches(), 2);
}

#[test]
fn an_open_batch_already_sealed_is_not_sealed_again() {
    // A crash between the append of a sealed batch and the rewrite of open.json.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        s.write_open(Some(&batch(RUN, 1, NOW, 5))).unwrap();
        s.append(&batch(RUN, 1, NOW, 5)).unwrap();
    }
    let s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert_eq!(s.batches(), 1);
    assert!(s.counts().recovered.is_empty());
}

#[test]
fn a_torn_last_line_is_cut_off_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        s.append(&batch(RUN, 1, NOW, 5)).unwrap();
        s.append(&batch(RUN, 2, NOW, 6)).unwrap();
    }
    let seg = dir.path().join(&segments(dir.path())[0]);
    let mut text = fs::read_to_string(&seg).unwrap();
    let whole = serde_json::to_string(&batch(RUN, 3, NOW, 7)).unwrap();
    text.push_str(&whole[..whole.len() / 2]);
    fs::write(&seg, &text).unwrap();

    let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert_eq!(s.counts().corrupt_lines_total, 1);
    assert_eq!(s.batches(), 2);
    // New batches start on a line of their own.
    s.append(&batch(RUN, 3, NOW, 7)).unwrap();
    let p = s.read_pending(10).unwrap();
    assert_eq!(seqs(&p), [1, 2, 3]);
    assert_eq!(p.batches[2], batch(RUN, 3, NOW, 7));
}

#[test]
fn garbage_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let line = |b: &Batch| serde_json::to_string(b).unwrap() + "\n";
    fs::write(
        dir.path().join(format!("{:020}.jsonl", 4)),
        line(&batch(RUN, 1, NOW, 5)) + "not json\n" + &line(&batch(RUN, 2, NOW, 6)),
    )
    .unwrap();
    let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert_eq!(s.counts().corrupt_lines_total, 1);
    assert_eq!(s.batches(), 2);
    let p = s.read_pending(10).unwrap();
    assert_eq!(seqs(&p), [1, 2]);
    s.ack(p.end).unwrap();
    assert_eq!(s.batches(), 0);
}

#[test]
fn over_the_size_limit_the_oldest_batches_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&batch(RUN, 10, NOW, 1_000))
        .unwrap()
        .len() as u64
        + 1;
    let lim = SpoolLimits {
        max_bytes: 10 * one,
        max_age_ms: 8 * DAY,
        segment_bytes: 3 * one,
    };
    let mut s = Spool::open(dir.path(), lim, NOW).unwrap();
    for seq in 10..=34 {
        s.append(&batch(RUN, seq, NOW, 1_000)).unwrap();
        s.enforce_limits(NOW).unwrap();
        assert!(s.bytes() <= lim.max_bytes);
    }
    assert_eq!(s.batches(), 10);
    assert_eq!(s.counts().dropped_batches_total, 15);
    assert_eq!(s.counts().dropped_energy_uj_total, 15_000);
    assert_eq!(s.status().dropped_batches_total, 15);
    let p = s.read_pending(100).unwrap();
    assert_eq!(seqs(&p), (25..=34).collect::<Vec<_>>());
    // The disk holds at most the limit and one segment's acknowledged head.
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|n| fs::metadata(dir.path().join(n)).unwrap().len())
        .sum();
    assert!(on_disk <= lim.max_bytes + lim.segment_bytes, "{on_disk}");
}

#[test]
fn past_the_age_limit_the_oldest_batches_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        for day in 0..10u64 {
            s.append(&batch(RUN, day + 1, NOW + day * DAY, 2)).unwrap();
        }
    }
    // Reopened 12 days after the first batch: days 0 to 3 are older than 8 days.
    let s = Spool::open(dir.path(), limits(), NOW + 12 * DAY).unwrap();
    assert_eq!(s.counts().dropped_batches_total, 4);
    assert_eq!(s.counts().dropped_energy_uj_total, 8);
    assert_eq!(s.status().oldest_start_unix_ms, Some(NOW + 4 * DAY));
    assert_eq!(
        seqs(&s.read_pending(100).unwrap()),
        (5..=10).collect::<Vec<_>>()
    );
}

#[test]
fn a_batch_dated_in_the_future_still_ages_from_when_the_spool_found_it() {
    // A batch dated 30 days ahead (a wall clock that was wrong when it was sealed) is
    // found at opening: its age counts from then, so the age limit still applies.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        s.append(&batch(RUN, 1, NOW + 30 * DAY, 5)).unwrap();
        s.append(&batch(RUN, 2, NOW, 6)).unwrap();
    }
    let s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert_eq!(s.batches(), 2);
    drop(s);
    let s = Spool::open(dir.path(), limits(), NOW + 9 * DAY).unwrap();
    assert_eq!(
        s.counts().dropped_batches_total,
        0,
        "found 0 days ago by this run"
    );
    let mut s = s;
    s.enforce_limits(NOW + 18 * DAY).unwrap();
    assert_eq!(s.counts().dropped_batches_total, 2);
    assert_eq!(s.counts().dropped_energy_uj_total, 11);
}

#[test]
fn a_cursor_that_points_inside_a_line_falls_back_to_the_oldest_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), limits(), NOW).unwrap();
        for seq in 1..=5 {
            s.append(&batch(RUN, seq, NOW, 1)).unwrap();
        }
        let p = s.read_pending(2).unwrap();
        s.ack(p.end).unwrap();
    }
    // A valid cursor is kept.
    let s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert!(!s.counts().cursor_reset);
    assert_eq!(seqs(&s.read_pending(10).unwrap()), [3, 4, 5]);
    drop(s);
    // One byte off: inside a line.
    let text = fs::read_to_string(dir.path().join("acked")).unwrap();
    let (seg, off) = text.trim().split_once(' ').unwrap();
    let off: u64 = off.parse().unwrap();
    fs::write(dir.path().join("acked"), format!("{seg} {}\n", off + 1)).unwrap();
    let s = Spool::open(dir.path(), limits(), NOW).unwrap();
    assert!(s.counts().cursor_reset);
    assert_eq!(seqs(&s.read_pending(10).unwrap()), [1, 2, 3, 4, 5]);
}
