//! Progress as log lines, for runs whose standard error is not a terminal (a batch job, CI,
//! `nohup`): every few seconds one line with the nodes done of the total, how many were
//! computed and reused, the kinds running now and an estimate of the time left, from a
//! background thread, so a node that runs for minutes does not silence the log. On a
//! terminal the progress bar does this and the heartbeat stays quiet.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the scheduler has done so far.
#[derive(Debug, Default)]
struct Counts {
    done: usize,
    executed: usize,
    running: BTreeMap<&'static str, usize>,
    stopped: bool,
}

/// A background thread printing a progress line every `every` to standard error.
pub(crate) struct Heartbeat {
    state: Option<Arc<(Mutex<Counts>, Condvar)>>,
    thread: Option<JoinHandle<()>>,
}

/// The progress line: `[12m03s] 5120/12359 nodes (4100 computed, 1020 reused); running:
/// score ×2; about 9m left`. The estimate extrapolates the computed nodes' rate over the
/// nodes still to do (which may all need computing); none before the first is computed.
fn line(total: usize, c: &Counts, elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let running: Vec<String> = c.running.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    let running = if running.is_empty() {
        "nothing".to_string()
    } else {
        running.join(", ")
    };
    let left = total.saturating_sub(c.done);
    let eta = if c.executed > 0 && left > 0 {
        let per = elapsed.as_secs_f64() / c.executed as f64;
        let s = (per * left as f64).round() as u64;
        format!("; about {}m{:02}s left", s / 60, s % 60)
    } else {
        String::new()
    };
    format!(
        "[{}m{:02}s] {}/{total} nodes ({} computed, {} reused); running: {running}{eta}",
        secs / 60,
        secs % 60,
        c.done,
        c.executed,
        c.done - c.executed.min(c.done)
    )
}

impl Heartbeat {
    /// Starts printing every `every` when `enabled`; otherwise records nothing.
    pub(crate) fn start(enabled: bool, total: usize, every: Duration) -> Heartbeat {
        if !enabled {
            return Heartbeat {
                state: None,
                thread: None,
            };
        }
        let state = Arc::new((Mutex::new(Counts::default()), Condvar::new()));
        let shared = Arc::clone(&state);
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let (lock, wake) = &*shared;
            let mut counts = lock.lock().expect("heartbeat lock");
            loop {
                let (c, _) = wake.wait_timeout(counts, every).expect("heartbeat lock");
                counts = c;
                if counts.stopped {
                    break;
                }
                let text = line(total, &counts, started.elapsed());
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        });
        Heartbeat {
            state: Some(state),
            thread: Some(thread),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        if let Some(s) = &self.state {
            f(&mut s.0.lock().expect("heartbeat lock"));
        }
    }

    /// A node of `kind` was handed to the executor.
    pub(crate) fn started(&self, kind: &'static str) {
        self.update(|c| *c.running.entry(kind).or_default() += 1);
    }

    /// A node finished: `ran` names its kind when it was handed to the executor.
    pub(crate) fn finished(&self, ran: Option<&'static str>, computed: bool) {
        self.update(|c| {
            c.done += 1;
            if computed {
                c.executed += 1;
            }
            if let Some(kind) = ran {
                if let Some(n) = c.running.get_mut(kind) {
                    *n -= 1;
                    if *n == 0 {
                        c.running.remove(kind);
                    }
                }
            }
        });
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(s) = &self.state {
            s.0.lock().expect("heartbeat lock").stopped = true;
            s.1.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_nodes_names_running_kinds_and_estimates_the_rest() {
        let mut c = Counts {
            done: 60,
            executed: 50,
            ..Counts::default()
        };
        c.running.insert("score", 2);
        c.running.insert("train", 1);
        let l = line(100, &c, Duration::from_secs(125));
        assert_eq!(
            l,
            "[2m05s] 60/100 nodes (50 computed, 10 reused); running: score ×2, train ×1; about 1m40s left"
        );
        let idle = line(10, &Counts::default(), Duration::from_secs(3));
        assert_eq!(
            idle,
            "[0m03s] 0/10 nodes (0 computed, 0 reused); running: nothing"
        );
    }

    #[test]
    fn a_disabled_heartbeat_records_nothing_and_an_enabled_one_stops_when_dropped() {
        let off = Heartbeat::start(false, 5, Duration::from_millis(1));
        off.started("score");
        off.finished(Some("score"), true);
        assert!(off.state.is_none());
        let on = Heartbeat::start(true, 5, Duration::from_millis(5));
        on.started("score");
        on.finished(Some("score"), true);
        std::thread::sleep(Duration::from_millis(20));
        let counts = on.state.as_ref().unwrap().0.lock().unwrap().done;
        assert_eq!(counts, 1);
        drop(on); // joins the thread: the test ends only if it stopped
    }
}
