//! An ordered parallel map over record batches: one reader thread, one worker thread per core,
//! and the caller's thread writing results in input order. At most `in_flight` batches are in
//! memory at once, whatever the workers' relative speed.

use super::input::AnonError;
use arrow_array::RecordBatch;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

type Batches<'a> = dyn Iterator<Item = Result<RecordBatch, AnonError>> + Send + 'a;

/// Runs `work` on every batch of `input` in one of `states.len()` workers (each owns one state)
/// and hands the results to `sink` in input order. The first error stops every thread and is
/// returned; the states come back for what workers gathered.
pub(super) fn ordered_map<S, X>(
    input: &mut Batches<'_>,
    states: Vec<S>,
    in_flight: usize,
    work: impl Fn(&mut S, RecordBatch) -> Result<X, AnonError> + Sync,
    mut sink: impl FnMut(X) -> Result<(), AnonError>,
) -> Result<Vec<S>, AnonError>
where
    S: Send,
    X: Send,
{
    let in_flight = in_flight.max(1);
    // A batch enters only with a token; the sink returns the token once it has written the batch.
    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = token_tx.send(());
    }
    let (batch_tx, batch_rx) = sync_channel::<(u64, Result<RecordBatch, AnonError>)>(in_flight);
    // Workers share the receiver; when the last one stops, a reader blocked on sending fails.
    let batch_rx = Arc::new(Mutex::new(batch_rx));
    let (done_tx, done_rx) = sync_channel::<(u64, Result<X, AnonError>)>(in_flight);
    std::thread::scope(|s| {
        s.spawn(move || {
            for n in 0u64.. {
                if token_rx.recv().is_err() {
                    return;
                }
                let b = catch_unwind(AssertUnwindSafe(|| input.next())).unwrap_or_else(|_| {
                    Some(Err(AnonError::Rule(
                        "reading a staging file panicked (is it damaged?)".into(),
                    )))
                });
                let Some(b) = b else { return };
                let stop = b.is_err();
                if batch_tx.send((n, b)).is_err() || stop {
                    return;
                }
            }
        });
        let workers: Vec<_> = states
            .into_iter()
            .map(|mut state| {
                let (rx, tx, work) = (batch_rx.clone(), done_tx.clone(), &work);
                s.spawn(move || {
                    while let Some((n, b)) = next(&rx) {
                        // A panic becomes an error: a lost batch would leave the writer
                        // waiting for it forever.
                        let out = b.and_then(|b| {
                            catch_unwind(AssertUnwindSafe(|| work(&mut state, b))).unwrap_or_else(
                                |_| Err(AnonError::Rule("an anonymization worker panicked".into())),
                            )
                        });
                        if tx.send((n, out)).is_err() {
                            break;
                        }
                    }
                    state
                })
            })
            .collect();
        drop(done_tx);
        drop(batch_rx);
        let written = drain(&done_rx, &token_tx, &mut sink);
        // Unblock the reader and the workers before joining them.
        drop(token_tx);
        drop(done_rx);
        let mut states = Vec::new();
        for w in workers {
            states.push(
                w.join()
                    .map_err(|_| AnonError::Rule("an anonymization worker panicked".into()))?,
            );
        }
        written.map(|()| states)
    })
}

fn next<T>(rx: &Mutex<Receiver<T>>) -> Option<T> {
    rx.lock().unwrap_or_else(|e| e.into_inner()).recv().ok()
}

/// Passes results to `sink` in order, holding early ones until their turn.
fn drain<X>(
    done: &Receiver<(u64, Result<X, AnonError>)>,
    tokens: &std::sync::mpsc::SyncSender<()>,
    sink: &mut impl FnMut(X) -> Result<(), AnonError>,
) -> Result<(), AnonError> {
    let mut early: BTreeMap<u64, X> = BTreeMap::new();
    let mut turn = 0u64;
    for (n, out) in done {
        early.insert(n, out?);
        while let Some(x) = early.remove(&turn) {
            sink(x)?;
            turn += 1;
            let _ = tokens.send(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array};
    use std::sync::Arc;

    fn batches(n: i64) -> impl Iterator<Item = Result<RecordBatch, AnonError>> + Send {
        (0..n).map(|i| {
            let a: arrow_array::ArrayRef = Arc::new(Int64Array::from(vec![i]));
            Ok(RecordBatch::try_from_iter([("n", a)]).expect("batch"))
        })
    }

    fn first(b: &RecordBatch) -> i64 {
        let a = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int");
        a.value(0)
    }

    #[test]
    fn results_come_out_in_input_order_whatever_the_workers_speed() {
        let mut seen = Vec::new();
        let states = ordered_map(
            &mut batches(200),
            vec![0u64; 3],
            4,
            |count, b| {
                *count += 1;
                let n = first(&b);
                // Uneven work: later batches often finish before earlier ones.
                std::thread::sleep(std::time::Duration::from_micros((n as u64 * 7919) % 500));
                Ok(n)
            },
            |n| {
                seen.push(n);
                Ok(())
            },
        )
        .expect("map");
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert_eq!(states.iter().sum::<u64>(), 200, "each batch worked once");
    }

    #[test]
    fn an_error_in_a_worker_or_the_sink_stops_everything() {
        let e = ordered_map(
            &mut batches(1000),
            vec![(); 2],
            4,
            |_, b| match first(&b) {
                37 => Err(AnonError::Rule("batch 37 is bad".into())),
                n => Ok(n),
            },
            |_| Ok(()),
        )
        .expect_err("worker error");
        assert!(e.to_string().contains("batch 37"), "{e}");
        let mut written = 0;
        let e = ordered_map(
            &mut batches(1000),
            vec![(); 2],
            4,
            |_, b| Ok(first(&b)),
            |n| {
                written += 1;
                if n == 10 {
                    return Err(AnonError::Rule("disk full".into()));
                }
                Ok(())
            },
        )
        .expect_err("sink error");
        assert!(e.to_string().contains("disk full") && written == 11, "{e}");
    }

    #[test]
    fn no_more_than_in_flight_batches_are_read_ahead_of_the_sink() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let read = AtomicUsize::new(0);
        let mut input = batches(300).inspect(|_| {
            read.fetch_add(1, Ordering::SeqCst);
        });
        let (mut sunk, mut most) = (0usize, 0usize);
        ordered_map(
            &mut input,
            vec![(); 3],
            5,
            |_, b| Ok(first(&b)),
            |_| {
                // This batch is still counted as in flight while the sink holds it.
                most = most.max(read.load(Ordering::SeqCst) - sunk);
                sunk += 1;
                Ok(())
            },
        )
        .expect("map");
        assert_eq!(sunk, 300);
        assert!(most <= 5, "{most} batches were in memory at once");
    }

    #[test]
    fn a_panicking_worker_is_an_error_not_a_hang() {
        let e = ordered_map(
            &mut batches(100),
            vec![(); 2],
            4,
            |_, b| match first(&b) {
                5 => panic!("bad batch"),
                n => Ok(n),
            },
            |_| Ok(()),
        )
        .expect_err("panic");
        assert!(e.to_string().contains("panicked"), "{e}");
    }
}
