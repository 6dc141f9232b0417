//! The Slurm executor. Ready tasks of one kind go out together as one `sbatch --array` job
//! (never one job per node; split into several arrays where the cluster's `MaxArraySize`
//! requires); each element runs `repflow exec-node --cache DIR KEY…` with its keys read from
//! a file by `SLURM_ARRAY_TASK_ID`: one key, or a batch of nodes whose kind batches
//! ([`crate::Kind::batch`]), which the worker runs in one `run_many`. Kinds too small to be
//! worth a job run in the driver on a [`Local`] executor. One batched status query per poll
//! covers the whole run; completion is confirmed by the store (entry present, object digest
//! verified), never by Slurm's state alone; a failed element's nodes are resubmitted up to
//! `retries` times, then reported with its log. Ctrl-C or SIGTERM cancels the run's jobs (`scancel --name`).
//!
//! Downstream keys depend on upstream outputs' digests, so a node is submitted when its
//! inputs are done; a chain (training checkpoints, then extraction, then scores) becomes a
//! sequence of dependent jobs driven from here, not Slurm `--dependency` edges.

mod status;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use repflow_cache::Store;

use crate::executor::{Completion, Executor, ExecutorStats, Task, TaskError};
use crate::local::Local;
use crate::node::group_batches;
pub use status::{classify, parse, ElementState};

/// Added to a node's working-memory estimate for the process around it (program, runtime,
/// the pages of its mapped inputs), bytes.
const PROCESS_BASE: u64 = 256 << 20;

/// The memory a Slurm job's nodes may use together, in bytes: the job's allocation
/// (`SLURM_MEM_PER_NODE`, or `SLURM_MEM_PER_CPU` × `SLURM_CPUS_PER_TASK`, in MiB, as Slurm
/// sets them) less [`PROCESS_BASE`]; `None` outside a job or without a memory allocation.
/// A worker cuts its batches to fit ([`crate::worker::execute_keys`]).
pub fn job_memory() -> Option<u64> {
    job_memory_from(|name| std::env::var(name).ok())
}

/// [`job_memory`] from the variables `var` gives.
fn job_memory_from(var: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mib = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
    let total = mib("SLURM_MEM_PER_NODE")
        .or_else(|| Some(mib("SLURM_MEM_PER_CPU")? * mib("SLURM_CPUS_PER_TASK").unwrap_or(1)))
        .filter(|&m| m > 0)?;
    Some((total << 20).saturating_sub(PROCESS_BASE))
}

/// Slurm's default `MaxArraySize`, assumed when `scontrol` does not say.
const DEFAULT_MAX_ARRAY_SIZE: usize = 1001;

/// The tasks one array element runs (one, or a batch of one kind), with their attempts.
type Group<C> = Vec<(Task<C>, u32)>;

/// `--mem` (MiB) for an array of `elements` whose kind sets none: the largest element's
/// [`crate::Node::memory`] estimates (summed over a batch, whose nodes run together) plus
/// [`PROCESS_BASE`], rounded up; `None` when no task has an estimate (Slurm's default
/// applies). Inputs are mapped without their digest check: an estimate reads only sizes and
/// shapes.
fn estimated_mem<C>(store: &Store, elements: &[Group<C>]) -> Option<u64> {
    let most = elements
        .iter()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|(task, _)| {
                    let inputs = crate::execute::map_inputs(task, |d| store.peek(d)).ok()?;
                    Some(task.node.memory(&inputs))
                })
                .sum::<u64>()
        })
        .max()
        .filter(|&bytes| bytes > 0)?;
    Some((most + PROCESS_BASE).div_ceil(1 << 20))
}

/// The cluster's `MaxArraySize` (an array holds at most that many elements, indices from 0)
/// from `scontrol show config`; [`DEFAULT_MAX_ARRAY_SIZE`] when it cannot be read.
fn cluster_max_array_size() -> usize {
    Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .ok()
        .and_then(|o| parse_max_array_size(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or(DEFAULT_MAX_ARRAY_SIZE)
}

/// `MaxArraySize` from `scontrol show config`'s text (`MaxArraySize  = 1001`); `None` when
/// absent or not a positive number.
fn parse_max_array_size(config: &str) -> Option<usize> {
    config.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        (name.trim() == "MaxArraySize")
            .then(|| value.trim().parse().ok())
            .flatten()
            .filter(|&n: &usize| n > 0)
    })
}

/// Resources of one kind's jobs (`sbatch` flags; unset ones are left to the cluster).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `--cpus-per-task` (also the worker's thread count).
    pub cpus: Option<u32>,
    /// `--mem`, e.g. `4G`.
    pub mem: Option<String>,
    /// `--time`, e.g. `01:00:00`.
    pub time: Option<String>,
    /// `--gres`, e.g. `gpu:1`.
    pub gres: Option<String>,
}

/// How the Slurm executor submits and watches jobs.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    /// The `repflow` executable the elements run.
    pub program: PathBuf,
    /// The store folder as the elements see it (on a shared filesystem).
    pub store_dir: PathBuf,
    /// `--partition`.
    pub partition: Option<String>,
    /// At most this many elements of one array run at once (`--array=…%N`).
    pub array_max: Option<usize>,
    /// At most this many elements in one array (the cluster's `MaxArraySize`); `None`: asked
    /// of `scontrol show config` when the run starts (Slurm's default 1001 when it does not
    /// answer).
    pub max_array_size: Option<usize>,
    /// Further `sbatch` arguments, passed as they are.
    pub args: Vec<String>,
    /// Seconds between status queries.
    pub poll: Duration,
    /// Resubmissions of a failed element before it is reported.
    pub retries: u32,
    /// Kinds run in the driver instead of as jobs.
    pub driver_kinds: HashSet<String>,
    /// Per-kind resources.
    pub resources: BTreeMap<String, Resources>,
}

/// One element in flight.
struct Element<C> {
    task: Task<C>,
    /// `JOBID_INDEX`.
    id: String,
    log: PathBuf,
    attempt: u32,
    /// Polls in a row in which Slurm did not list it.
    unseen: u32,
    /// Whether its element ran it in a batch with other nodes.
    batched: bool,
}

/// Set by Ctrl-C or SIGTERM while a Slurm run is in progress.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Runs tasks as Slurm array jobs.
pub struct Slurm<C> {
    cfg: SlurmConfig,
    /// The run's unique job name.
    name: String,
    dir: PathBuf,
    store: Arc<Store>,
    local: Local<C>,
    queued: BTreeMap<&'static str, Group<C>>,
    /// At most this many elements per array.
    max_array_size: usize,
    running: Vec<Element<C>>,
    arrays: usize,
    stats: ExecutorStats,
    source: status::Source,
    last_poll: Option<Instant>,
    /// Status queries in a row that neither `sacct` nor `squeue` answered.
    unanswered: u32,
}

impl<C: Send + Sync + 'static> Slurm<C> {
    /// A Slurm executor for one run; `local` runs the driver's kinds. Writes its key files,
    /// job scripts and logs under `<store>/slurm/<run name>/`.
    pub fn new(cfg: SlurmConfig, store: Arc<Store>, local: Local<C>) -> Result<Self, String> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("repflow-{}-{:x}", std::process::id(), stamp);
        let dir = store.root().join("slurm").join(&name);
        std::fs::create_dir_all(dir.join("logs"))
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        // One handler per process; a second Slurm run in the same process keeps the first.
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
        let max_array_size = cfg
            .max_array_size
            .unwrap_or_else(cluster_max_array_size)
            .max(1);
        Ok(Slurm {
            max_array_size,
            cfg,
            name,
            dir,
            store,
            local,
            queued: BTreeMap::new(),
            running: Vec::new(),
            arrays: 0,
            stats: ExecutorStats::default(),
            source: status::Source::Accounting,
            last_poll: None,
            unanswered: 0,
        })
    }

    /// Submits every queued task: per kind, its tasks grouped into elements (a batch of
    /// nodes where the kind batches, else one node each) and the elements into arrays of at
    /// most the cluster's `MaxArraySize`. Tasks whose submission fails complete with the
    /// error.
    fn flush(&mut self, out: &mut Vec<Completion>) {
        for (kind, tasks) in std::mem::take(&mut self.queued) {
            let mut elements = group_batches(tasks, |(t, _)| self.local.batch_of(t)).into_iter();
            loop {
                let array: Vec<Group<C>> = elements.by_ref().take(self.max_array_size).collect();
                if array.is_empty() {
                    break;
                }
                self.submit_elements(kind, array, out);
            }
        }
    }

    /// Submits one array of `elements`, and tracks each of their tasks.
    fn submit_elements(&mut self, kind: &str, elements: Vec<Group<C>>, out: &mut Vec<Completion>) {
        let n = self.arrays;
        self.arrays += 1;
        match self.submit_array(kind, n, &elements) {
            Ok(job) => {
                self.stats.arrays += 1;
                self.stats.submitted += elements.len();
                for (i, tasks) in elements.into_iter().enumerate() {
                    let batched = tasks.len() > 1;
                    for (task, attempt) in tasks {
                        self.running.push(Element {
                            task,
                            id: format!("{job}_{i}"),
                            log: self.dir.join("logs").join(format!("{n}_{i}.log")),
                            attempt,
                            unseen: 0,
                            batched,
                        });
                    }
                }
            }
            Err(e) => {
                for (task, _) in elements.into_iter().flatten() {
                    out.push(Completion {
                        index: task.index,
                        result: Err(TaskError::new(format!("sbatch: {e}"))),
                    });
                }
            }
        }
    }

    /// Writes array `n`'s key file (one line of keys per element) and script and submits
    /// it; returns the job id.
    fn submit_array(&self, kind: &str, n: usize, elements: &[Group<C>]) -> Result<String, String> {
        let keys = self.dir.join(format!("{n}.keys"));
        let text: String = elements
            .iter()
            .map(|tasks| {
                let line: Vec<String> = tasks.iter().map(|(t, _)| t.key.hex()).collect();
                line.join(" ") + "\n"
            })
            .collect();
        std::fs::write(&keys, text)
            .map_err(|e| format!("cannot write `{}`: {e}", keys.display()))?;
        let script = self.dir.join(format!("{n}.sh"));
        let body = format!(
            "#!/bin/sh\n# repflow: {kind} nodes; each array element runs the keys on its line of {keys}\nkeys=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {keys})\nexport RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\n# hexadecimal keys separated by spaces: split into arguments\nexec {program} exec-node --cache {store} $keys\n",
            keys = quote(&keys),
            program = quote(&self.cfg.program),
            store = quote(&self.cfg.store_dir),
        );
        std::fs::write(&script, body)
            .map_err(|e| format!("cannot write `{}`: {e}", script.display()))?;
        let mut array = format!("0-{}", elements.len() - 1);
        if let Some(max) = self.cfg.array_max {
            array.push_str(&format!("%{max}"));
        }
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--job-name={}", self.name))
            .arg(format!("--array={array}"))
            .arg(format!(
                "--output={}",
                self.dir.join("logs").join(format!("{n}_%a.log")).display()
            ));
        if let Some(p) = &self.cfg.partition {
            cmd.arg(format!("--partition={p}"));
        }
        let resources = self.cfg.resources.get(kind);
        // the kind's `mem` when set, else the nodes' own estimate
        let estimated = match resources.and_then(|r| r.mem.clone()) {
            Some(m) => {
                cmd.arg(format!("--mem={m}"));
                None
            }
            None => estimated_mem(&self.store, elements).inspect(|mib| {
                cmd.arg(format!("--mem={mib}M"));
            }),
        };
        if let Some(r) = resources {
            if let Some(c) = r.cpus {
                cmd.arg(format!("--cpus-per-task={c}"));
            }
            if let Some(t) = &r.time {
                cmd.arg(format!("--time={t}"));
            }
            if let Some(g) = &r.gres {
                cmd.arg(format!("--gres={g}"));
            }
        }
        cmd.args(&self.cfg.args).arg(&script);
        let o = cmd
            .output()
            .map_err(|e| format!("cannot start sbatch ({e}); is Slurm installed here?"))?;
        if !o.status.success() {
            let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
            return Err(match estimated {
                Some(mib) => format!(
                    "{why} (--mem={mib}M is the {kind} nodes' own estimate; set `mem` in \
                     [slurm.kinds.{kind}] to ask for another amount)"
                ),
                None => why,
            });
        }
        let stdout = String::from_utf8_lossy(&o.stdout);
        let job = stdout.trim().split(';').next().unwrap_or("").to_string();
        if job.is_empty() || !job.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("unexpected sbatch output `{}`", stdout.trim()));
        }
        Ok(job)
    }

    /// One status query; ends elements Slurm reports ended (or no longer lists), confirming
    /// each by the store, and queues failed ones for resubmission.
    fn poll(&mut self, out: &mut Vec<Completion>) {
        let Some(states) = status::query(&self.name, &mut self.source) else {
            // Never wait forever on a controller that is gone: after a minute of silence
            // (at least 10 polls) the run's elements fail, and a rerun resumes.
            self.unanswered += 1;
            let silent = self.cfg.poll.as_secs_f64() * self.unanswered as f64;
            if self.unanswered >= 10 && silent >= 60.0 {
                self.cancel();
                for e in std::mem::take(&mut self.running) {
                    out.push(Completion {
                        index: e.task.index,
                        result: Err(TaskError::new(format!(
                            "Slurm has not answered `sacct` or `squeue` for {silent:.0} s; element {} abandoned",
                            e.id
                        ))),
                    });
                }
            }
            return;
        };
        self.unanswered = 0;
        let mut still = Vec::with_capacity(self.running.len());
        for mut e in std::mem::take(&mut self.running) {
            let ended = match states.get(&e.id) {
                Some(ElementState::Active) => false,
                Some(ElementState::Ended) => true,
                None => {
                    e.unseen += 1;
                    // purged from Slurm's memory: the store tells whether it finished
                    e.unseen >= 3 || self.store.entry(&e.task.key).is_some()
                }
            };
            if !ended {
                still.push(e);
                continue;
            }
            match self.store.lookup(&e.task.key) {
                Some((entry, _)) => match entry.object.parse() {
                    Ok(d) => {
                        self.stats.batched += usize::from(e.batched);
                        out.push(Completion {
                            index: e.task.index,
                            result: Ok(d),
                        })
                    }
                    Err(m) => out.push(Completion {
                        index: e.task.index,
                        result: Err(TaskError::new(m)),
                    }),
                },
                None if e.attempt < self.cfg.retries => {
                    self.stats.retries += 1;
                    let kind = e.task.node.kind();
                    self.queued
                        .entry(kind)
                        .or_default()
                        .push((e.task, e.attempt + 1));
                }
                None => out.push(Completion {
                    index: e.task.index,
                    result: Err(TaskError {
                        message: format!(
                            "Slurm element {} ended without its output after {} attempts: {}",
                            e.id,
                            e.attempt + 1,
                            last_line(&e.log)
                        ),
                        corrupt_inputs: Vec::new(),
                        log: Some(e.log.clone()),
                    }),
                }),
            }
        }
        self.running = still;
    }

    /// Cancels every job of the run.
    fn cancel(&mut self) {
        if !self.running.is_empty() {
            let _ = Command::new("scancel")
                .arg(format!("--name={}", self.name))
                .status();
        }
    }
}

impl<C: Send + Sync + 'static> Executor<C> for Slurm<C> {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn submit(&mut self, task: Task<C>) {
        let kind = task.node.kind();
        if self.cfg.driver_kinds.contains(kind) {
            self.local.submit(task);
        } else {
            self.queued.entry(kind).or_default().push((task, 0));
        }
    }

    fn wait(&mut self) -> Vec<Completion> {
        let mut out = Vec::new();
        self.flush(&mut out);
        loop {
            out.extend(self.local.ready());
            if INTERRUPTED.load(Ordering::SeqCst) {
                self.cancel();
                for e in std::mem::take(&mut self.running) {
                    out.push(Completion {
                        index: e.task.index,
                        result: Err(TaskError::new("cancelled (interrupted)")),
                    });
                }
                for (_, tasks) in std::mem::take(&mut self.queued) {
                    for (t, _) in tasks {
                        out.push(Completion {
                            index: t.index,
                            result: Err(TaskError::new("cancelled (interrupted)")),
                        });
                    }
                }
                out.extend(self.local.wait());
                return out;
            }
            let due = self.last_poll.is_none_or(|t| t.elapsed() >= self.cfg.poll);
            if !self.running.is_empty() && due {
                self.last_poll = Some(Instant::now());
                self.poll(&mut out);
                self.flush(&mut out);
            }
            if !out.is_empty() || (self.running.is_empty() && self.local.in_flight() == 0) {
                return out;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            batched: self.stats.batched + self.local.stats().batched,
            ..self.stats
        }
    }
}

impl<C> Drop for Slurm<C> {
    fn drop(&mut self) {
        if !self.running.is_empty() {
            let _ = Command::new("scancel")
                .arg(format!("--name={}", self.name))
                .status();
        }
    }
}

/// `path` quoted for `sh`.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// The last non-empty line of a log, or a note that there is none.
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no log written".into())
}

#[cfg(test)]
mod tests {
    use super::{job_memory_from, parse_max_array_size, PROCESS_BASE};

    #[test]
    fn a_jobs_memory_is_read_from_slurms_variables() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let gib = 1u64 << 30;
        assert_eq!(
            job_memory_from(env(&[("SLURM_MEM_PER_NODE", "4096")])),
            Some(4 * gib - PROCESS_BASE)
        );
        assert_eq!(
            job_memory_from(env(&[
                ("SLURM_MEM_PER_CPU", "1024"),
                ("SLURM_CPUS_PER_TASK", "8")
            ])),
            Some(8 * gib - PROCESS_BASE)
        );
        // no allocation, zero, or not a number: no limit
        assert_eq!(job_memory_from(env(&[])), None);
        assert_eq!(job_memory_from(env(&[("SLURM_MEM_PER_NODE", "0")])), None);
        assert_eq!(job_memory_from(env(&[("SLURM_MEM_PER_NODE", "4G")])), None);
        // an allocation under the process's own share leaves nothing, not a wrap-around
        assert_eq!(
            job_memory_from(env(&[("SLURM_MEM_PER_NODE", "100")])),
            Some(0)
        );
    }

    #[test]
    fn max_array_size_is_read_from_scontrol_show_config() {
        let config = "Configuration data as of 2026-12-06T02:00:00\n\
                      MaxArraySize            = 1001\n\
                      MaxJobCount             = 10000\n";
        assert_eq!(parse_max_array_size(config), Some(1001));
        assert_eq!(parse_max_array_size("MaxArraySize=40"), Some(40));
        // absent, zero, or not a number: the caller assumes Slurm's default
        for bad in [
            "",
            "MaxJobCount = 10",
            "MaxArraySize = 0",
            "MaxArraySize = (null)",
        ] {
            assert_eq!(parse_max_array_size(bad), None, "{bad}");
        }
    }
}
