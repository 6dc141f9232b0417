//! Nodes of a kind that batches ([`Kind::batch`]) and are ready together run in batches of at
//! most the batch's size, through one `run_many` call each, with the outputs and keys of
//! running alone; a failing node in a batch fails alone, and a `run_many` that panics falls
//! back to running each node alone.

use std::sync::{Arc, Mutex};

use repflow_cache::{Bundle, Store};
use repflow_engine::schedule::{run, RunOptions, State};
use repflow_engine::worker::{execute_keys, WorkerOutcome};
use repflow_engine::{Batch, Dag, DagNode, Inputs, Kind, Local, NodeError, Registry};
use serde::{Deserialize, Serialize};

/// Per-run context: the size of every `run_many` batch, and the nodes run alone.
#[derive(Default)]
struct Log {
    batches: Mutex<Vec<usize>>,
    alone: Mutex<Vec<u64>>,
}

/// A number.
#[derive(Serialize, Deserialize)]
struct Root {
    value: u64,
}

impl Kind<Log> for Root {
    const KIND: &'static str = "root";
    const VERSION: u32 = 1;
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "value": self.value })
    }
    fn run(&self, _: &Log, _: &Inputs) -> Result<Bundle, NodeError> {
        Ok(Bundle::meta(self.value.to_string()))
    }
}

/// Its input plus `add`; 13 is an error, 99 a panic. `group` is its batch key; `max` the
/// batch size (1: it never batches).
#[derive(Serialize, Deserialize)]
struct Add {
    add: u64,
    group: String,
    max: usize,
}

impl Add {
    fn compute(&self, inputs: &Inputs) -> Result<Bundle, NodeError> {
        assert!(self.add != 99, "a bug");
        if self.add == 13 {
            return Err(NodeError::new("13 is unlucky"));
        }
        let x: u64 = inputs.bundle("term")?.meta().parse().unwrap();
        Ok(Bundle::meta((x + self.add).to_string()))
    }
}

impl Kind<Log> for Add {
    const KIND: &'static str = "add";
    const VERSION: u32 = 1;
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "add": self.add, "group": self.group })
    }
    fn run(&self, log: &Log, inputs: &Inputs) -> Result<Bundle, NodeError> {
        log.alone.lock().unwrap().push(self.add);
        self.compute(inputs)
    }
    /// 100 bytes each (what a worker's memory limit cuts batches by).
    fn memory(&self, _: &Inputs) -> u64 {
        100
    }
    fn batch(&self, _: &Log) -> Option<Batch> {
        Some(Batch {
            key: self.group.clone(),
            max: self.max,
        })
    }
    fn run_many(log: &Log, nodes: &[(&Self, &Inputs)]) -> Vec<Result<Bundle, NodeError>> {
        log.batches.lock().unwrap().push(nodes.len());
        nodes.iter().map(|(n, i)| n.compute(i)).collect()
    }
}

fn add(add: u64, group: &str, max: usize) -> DagNode<Log> {
    DagNode {
        label: format!("add{add}{group}"),
        node: Arc::new(Add {
            add,
            group: group.into(),
            max,
        }),
        inputs: vec![("term".into(), 0)],
    }
}

/// A root and `adds` depending on it, run on one task thread.
fn run_adds(store: &Arc<Store>, adds: Vec<DagNode<Log>>) -> (repflow_engine::Outcome, Arc<Log>) {
    let mut nodes = vec![DagNode {
        label: "root".into(),
        node: Arc::new(Root { value: 100 }),
        inputs: vec![],
    }];
    nodes.extend(adds);
    let dag = Dag::new(nodes).unwrap();
    let log = Arc::new(Log::default());
    let mut local = Local::new(1, store.clone(), log.clone());
    (run(&dag, store, &mut local, &RunOptions::default()), log)
}

fn outputs(store: &Store, o: &repflow_engine::Outcome) -> Vec<Option<String>> {
    o.digests
        .iter()
        .map(|d| d.map(|d| store.get(&d).unwrap().meta().to_string()))
        .collect()
}

#[test]
fn ready_nodes_of_one_batch_key_run_together_up_to_the_batch_size() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    let adds: Vec<_> = (1..=10).map(|a| add(a, "g", 4)).collect();
    let (o, log) = run_adds(&store, adds);
    assert_eq!(o.count(|s| *s == State::Executed), 11);
    assert_eq!(*log.batches.lock().unwrap(), vec![4, 4, 2]);
    assert!(log.alone.lock().unwrap().is_empty());
    assert_eq!(o.stats.batched, 10);
    let out = outputs(&store, &o);
    for a in 1..=10u64 {
        assert_eq!(
            out[a as usize].as_deref(),
            Some(format!("{}", 100 + a).as_str())
        );
    }
    // the same nodes alone (batch size 1) have the same keys and outputs: all cached
    let t2 = tempfile::tempdir().unwrap();
    let alone_store = Arc::new(Store::open(t2.path()).unwrap());
    let (alone, log) = run_adds(&alone_store, (1..=10).map(|a| add(a, "g", 1)).collect());
    assert!(log.batches.lock().unwrap().is_empty());
    assert_eq!(alone.stats.batched, 0);
    assert_eq!(alone.keys, o.keys);
    assert_eq!(outputs(&alone_store, &alone), out);
}

#[test]
fn batch_keys_and_kinds_keep_batches_apart() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    let adds = vec![
        add(1, "a", 8),
        add(2, "b", 8),
        add(3, "a", 8),
        add(4, "b", 8),
        add(5, "a", 8),
    ];
    let (o, log) = run_adds(&store, adds);
    assert_eq!(o.count(|s| *s == State::Executed), 6);
    // a: 1, 3, 5 together; b: 2, 4 together
    assert_eq!(*log.batches.lock().unwrap(), vec![3, 2]);
}

#[test]
fn a_failing_node_fails_alone_and_a_panicking_batch_runs_node_by_node() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    let (o, log) = run_adds(
        &store,
        vec![add(1, "g", 8), add(13, "g", 8), add(2, "g", 8)],
    );
    assert_eq!(*log.batches.lock().unwrap(), vec![3]);
    assert!(matches!(&o.states[2], State::Failed(f) if f.message.contains("unlucky")));
    assert_eq!(o.count(|s| *s == State::Executed), 3);
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    let (o, log) = run_adds(
        &store,
        vec![add(1, "g", 8), add(99, "g", 8), add(2, "g", 8)],
    );
    // the batch panicked: each node then ran alone, and only the buggy one failed
    assert_eq!(*log.alone.lock().unwrap(), vec![1, 99, 2]);
    assert!(matches!(&o.states[2], State::Failed(f) if f.message.contains("a bug")));
    let out = outputs(&store, &o);
    assert_eq!(
        (out[1].as_deref(), out[3].as_deref()),
        (Some("101"), Some("102"))
    );
}

#[test]
fn a_worker_given_several_keys_runs_the_batchable_ones_together() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    // five adds of group g (batch size 8), one of group h, and one that fails
    let adds: Vec<_> = [1, 2, 3, 4, 5]
        .iter()
        .map(|&a| add(a, "g", 8))
        .chain([add(6, "h", 8), add(13, "g", 8)])
        .collect();
    let (o, _) = run_adds(&store, adds);
    let out = outputs(&store, &o);
    let keys: Vec<_> = (1..=7)
        .map(|i| o.parts[i].as_ref().unwrap().key())
        .collect();
    // a worker finds the outputs already there
    let registry = Registry::<Log>::new().with::<Root>().with::<Add>();
    let log = Log::default();
    let done = execute_keys(&store, &registry, &log, &keys[..5], None);
    assert!(done
        .iter()
        .all(|r| matches!(r, Ok(WorkerOutcome::AlreadyDone(_)))));
    assert!(log.batches.lock().unwrap().is_empty());
    // without them, it executes: g's five and the failing one in one batch, h alone
    for k in &keys {
        store.remove_entry(k);
    }
    let mut asked = keys.clone();
    asked.push(keys[0]); // a key given twice runs once per mention, the same output
    let outcomes = execute_keys(&store, &registry, &log, &asked, None);
    assert_eq!(*log.batches.lock().unwrap(), vec![7]);
    assert_eq!(*log.alone.lock().unwrap(), vec![6]);
    for (i, r) in outcomes.iter().enumerate().take(6) {
        match r {
            Ok(WorkerOutcome::Executed(label, d)) => {
                assert_eq!(
                    label,
                    &format!("add{}{}", i + 1, if i == 5 { "h" } else { "g" })
                );
                assert_eq!(Some(store.get(d).unwrap().meta().to_string()), out[i + 1]);
            }
            other => panic!("{i}: {other:?}"),
        }
    }
    let e = outcomes[6].as_ref().unwrap_err();
    assert!(e.contains("add13g") && e.contains("13 is unlucky"), "{e}");
    assert!(matches!(&outcomes[7], Ok(WorkerOutcome::Executed(l, _)) if l == "add1g"));
    // a key the store has no recipe for fails alone, naming it
    let unknown = repflow_cache::Digest::of(b"no such node");
    let outcomes = execute_keys(&store, &registry, &log, &[keys[1], unknown], None);
    assert!(matches!(&outcomes[0], Ok(WorkerOutcome::AlreadyDone(_))));
    let e = outcomes[1].as_ref().unwrap_err();
    assert!(
        e.contains("no recipe") && e.contains(&unknown.short()),
        "{e}"
    );
}

#[test]
fn a_worker_cuts_its_batches_to_fit_its_memory() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    let (o, _) = run_adds(&store, (1..=7).map(|a| add(a, "g", 8)).collect());
    let out = outputs(&store, &o);
    let keys: Vec<_> = (1..=7)
        .map(|i| o.parts[i].as_ref().unwrap().key())
        .collect();
    let registry = Registry::<Log>::new().with::<Root>().with::<Add>();
    for (limit, batches, alone) in [
        // 100 bytes a node: 250 bytes hold two at a time, the seventh runs alone
        (250, vec![2, 2, 2], vec![7]),
        // less than one node's estimate: each runs alone, none is refused
        (50, vec![], vec![1, 2, 3, 4, 5, 6, 7]),
        // room for all
        (10_000, vec![7], vec![]),
    ] {
        for k in &keys {
            store.remove_entry(k);
        }
        let log = Log::default();
        let outcomes = execute_keys(&store, &registry, &log, &keys, Some(limit));
        assert_eq!(*log.batches.lock().unwrap(), batches, "limit {limit}");
        assert_eq!(*log.alone.lock().unwrap(), alone, "limit {limit}");
        for (i, r) in outcomes.iter().enumerate() {
            match r {
                Ok(WorkerOutcome::Executed(_, d)) => {
                    assert_eq!(Some(store.get(d).unwrap().meta().to_string()), out[i + 1])
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
