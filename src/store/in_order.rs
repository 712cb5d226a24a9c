//! A stream of blocks worked on by a few threads at once and handed on in the stream's
//! order: zstd frames compressed into an object file, or decompressed into stdout, on
//! both cores.
//!
//! Each thread takes the next block (under a lock, so the blocks are numbered in order),
//! works on it with buffers of its own, waits for its turn, and hands the result on
//! itself (writing it while the other thread works on the next block). Memory is one
//! set of buffers a thread, whatever the stream's length. It knows nothing of zstd.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// How many threads to share such work among: both cores of a two-core machine, one
/// where this process may run on one CPU only (then nothing is spawned).
pub fn thread_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Runs the stream on `threads` threads (the calling one among them): each makes its
/// state with `new_worker`; `take` moves the next block of `source` into that state
/// (false at the end of the stream); `work` works on it; `give` hands the result to
/// `sink`, in the order the blocks were taken. The first error stops every thread (a
/// block after it is never given) and is returned.
pub fn run<Source: Send, Sink: Send, Worker>(
    threads: usize,
    source: Source,
    sink: Sink,
    new_worker: impl Fn() -> io::Result<Worker> + Sync,
    take: impl Fn(&mut Source, &mut Worker) -> io::Result<bool> + Sync,
    work: impl Fn(&mut Worker) -> io::Result<()> + Sync,
    give: impl Fn(&mut Sink, &Worker) -> io::Result<()> + Sync,
) -> io::Result<()> {
    let shared = Shared {
        source: Mutex::new((source, 0)),
        turn: Mutex::new(Turn {
            sink,
            next: 0,
            error: None,
        }),
        turned: Condvar::new(),
        stopped: AtomicBool::new(false),
    };
    let thread = || {
        if let Err(e) = new_worker()
            .and_then(|mut worker| shared.work_through(&mut worker, &take, &work, &give))
        {
            shared.stop(e);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(thread);
        }
        thread();
    });
    let turn = shared.turn.into_inner().unwrap_or_else(|e| e.into_inner());
    turn.error.map_or(Ok(()), Err)
}

struct Shared<Source, Sink> {
    /// The source and the number of the next block taken from it.
    source: Mutex<(Source, u64)>,
    turn: Mutex<Turn<Sink>>,
    turned: Condvar,
    stopped: AtomicBool,
}

struct Turn<Sink> {
    sink: Sink,
    /// The number of the next block to give.
    next: u64,
    error: Option<io::Error>,
}

impl<Source, Sink> Shared<Source, Sink> {
    fn work_through<Worker>(
        &self,
        worker: &mut Worker,
        take: &impl Fn(&mut Source, &mut Worker) -> io::Result<bool>,
        work: &impl Fn(&mut Worker) -> io::Result<()>,
        give: &impl Fn(&mut Sink, &Worker) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            let number = {
                let mut source = self.source.lock().unwrap_or_else(|e| e.into_inner());
                if self.stopped.load(Ordering::Acquire) || !take(&mut source.0, worker)? {
                    return Ok(());
                }
                source.1 += 1;
                source.1 - 1
            };
            work(worker)?;
            let mut turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
            while turn.next != number && turn.error.is_none() {
                turn = self.turned.wait(turn).unwrap_or_else(|e| e.into_inner());
            }
            if turn.error.is_some() {
                return Ok(());
            }
            give(&mut turn.sink, worker)?;
            turn.next += 1;
            self.turned.notify_all();
        }
    }

    /// Records the first error and wakes every thread waiting for its turn to stop it.
    fn stop(&self, error: io::Error) {
        self.stopped.store(true, Ordering::Release);
        let mut turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        turn.error.get_or_insert(error);
        self.turned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Squares 0..count on `threads` threads, giving them in order into a vector.
    fn squares(threads: usize, count: u64, fail_at: Option<u64>) -> (io::Result<()>, Vec<u64>) {
        let mut given = Vec::new();
        let result = run(
            threads,
            0u64,
            &mut given,
            || Ok((0u64, 0u64)),
            |next, worker| {
                if *next == count {
                    return Ok(false);
                }
                worker.0 = *next;
                *next += 1;
                Ok(true)
            },
            |worker| {
                if Some(worker.0) == fail_at {
                    return Err(io::Error::other("failed"));
                }
                // Uneven work, so that the threads finish out of order.
                if worker.0 % 3 == 0 {
                    std::thread::yield_now();
                }
                worker.1 = worker.0 * worker.0;
                Ok(())
            },
            |sink, worker| {
                sink.push(worker.1);
                Ok(())
            },
        );
        (result, given)
    }

    #[test]
    fn results_are_given_in_the_order_taken() {
        for threads in 1..=3 {
            let (result, given) = squares(threads, 500, None);
            result.unwrap();
            assert_eq!(given, (0..500).map(|n| n * n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_error_stops_the_stream_before_the_failed_block() {
        for threads in 1..=3 {
            let (result, given) = squares(threads, 500, Some(100));
            assert_eq!(result.unwrap_err().to_string(), "failed");
            assert!(given.len() <= 100, "{} given", given.len());
            assert_eq!(
                given,
                (0..given.len() as u64).map(|n| n * n).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn an_error_from_the_sink_is_returned() {
        let result = run(
            2,
            0u64,
            (),
            || Ok(()),
            |next, _| {
                *next += 1;
                Ok(*next < 10)
            },
            |_| Ok(()),
            |_, _| Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        );
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
