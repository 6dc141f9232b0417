//! Slurm's view of a run's jobs: one batched query per poll by the run's job name (`sacct`,
//! or `squeue --states=all` when accounting is disabled), parsed into element states.

use std::collections::HashMap;
use std::process::Command;

/// The state of an array element as Slurm reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementState {
    /// Pending, configuring, running, completing, suspended: not over yet.
    Active,
    /// Ended (completed, failed, cancelled, timed out, out of memory, node failure, …).
    Ended,
}

/// Maps a Slurm state word (`COMPLETED`, `CANCELLED by 0`, `RUNNING`, …) to an element state.
pub fn classify(state: &str) -> ElementState {
    let word = state.split_whitespace().next().unwrap_or("");
    match word.trim_end_matches('+') {
        "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "SUSPENDED" | "REQUEUED"
        | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "STOPPED"
        | "RESV_DEL_HOLD" => ElementState::Active,
        _ => ElementState::Ended,
    }
}

/// Parses `JOBID|STATE` lines; array ids may be compressed (`12_[3-5,8%2]`), each element
/// of such a range gets the line's state.
pub fn parse(text: &str) -> HashMap<String, ElementState> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((id, state)) = line.trim().split_once('|') else {
            continue;
        };
        let state = classify(state);
        // job steps (`12_3.batch`) are not elements
        if id.contains('.') {
            continue;
        }
        match id.split_once("_[") {
            Some((job, range)) => {
                let range = range.trim_end_matches(']');
                let range = range.split('%').next().unwrap_or("");
                for part in range.split(',') {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                        for i in a..=b.min(a + 1_000_000) {
                            out.insert(format!("{job}_{i}"), state);
                        }
                    }
                }
            }
            None => {
                out.insert(id.to_string(), state);
            }
        }
    }
    out
}

/// How the run's jobs are queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Try `sacct` first.
    Accounting,
    /// `sacct` failed once (accounting disabled): `squeue --states=all` from then on.
    Queue,
}

/// One batched query of every job named `name`; `None` when neither command answered.
pub fn query(name: &str, source: &mut Source) -> Option<HashMap<String, ElementState>> {
    if *source == Source::Accounting {
        let out = Command::new("sacct")
            .args(["-n", "-P", "-X", "-o", "JobID,State", "--name", name])
            .output();
        match out {
            Ok(o)
                if o.status.success()
                    && !String::from_utf8_lossy(&o.stderr).contains("disabled") =>
            {
                return Some(parse(&String::from_utf8_lossy(&o.stdout)));
            }
            _ => *source = Source::Queue,
        }
    }
    let o = Command::new("squeue")
        .args(["-h", "-r", "--states=all", "-o", "%i|%T", "--name", name])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| parse(&String::from_utf8_lossy(&o.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_array_ranges_expand() {
        let s = parse(
            "12_[3-5,8%2]|PENDING\n12_1|COMPLETED\n12_2|CANCELLED by 0\n12_0.batch|COMPLETED\n",
        );
        assert_eq!(s.len(), 6);
        assert_eq!(s["12_4"], ElementState::Active);
        assert_eq!(s["12_8"], ElementState::Active);
        assert_eq!(s["12_1"], ElementState::Ended);
        assert_eq!(s["12_2"], ElementState::Ended);
        assert!(!s.contains_key("12_0.batch"));
    }

    #[test]
    fn states_are_classified() {
        for s in ["PENDING", "RUNNING", "COMPLETING", "REQUEUED"] {
            assert_eq!(classify(s), ElementState::Active, "{s}");
        }
        for s in [
            "COMPLETED",
            "FAILED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
            "CANCELLED+",
            "CANCELLED by 0",
            "PREEMPTED",
            "BOOT_FAIL",
        ] {
            assert_eq!(classify(s), ElementState::Ended, "{s}");
        }
    }
}
