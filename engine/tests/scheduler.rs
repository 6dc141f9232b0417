//! The engine with fake node kinds (no metrics, no networks): caching and early cutoff, no
//! level barriers, failures that stay local, and a worker rebuilding a node from its recipe.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use repflow_cache::{Bundle, Store};
use repflow_engine::schedule::{plan, run, RunOptions, State};
use repflow_engine::worker::{execute_key, WorkerOutcome};
use repflow_engine::{Dag, DagNode, Inputs, Kind, Local, NodeError, Registry};
use serde::{Deserialize, Serialize};

/// Per-run context: when each node started and ended.
#[derive(Default)]
struct Log {
    spans: Mutex<Vec<(String, Instant, Instant)>>,
}

/// A number; `salt` enters the key but not the output (for early cutoff).
#[derive(Serialize, Deserialize)]
struct Const {
    value: u64,
    salt: u64,
    sleep_ms: u64,
    name: String,
}

impl Kind<Log> for Const {
    const KIND: &'static str = "const";
    const VERSION: u32 = 1;
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "value": self.value, "salt": self.salt, "sleep_ms": self.sleep_ms })
    }
    fn run(&self, log: &Log, _: &Inputs) -> Result<Bundle, NodeError> {
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(self.sleep_ms));
        log.spans
            .lock()
            .unwrap()
            .push((self.name.clone(), t, Instant::now()));
        Ok(Bundle::meta(self.value.to_string()))
    }
}

/// The sum of its `term` inputs; panics on a sum of 13.
#[derive(Serialize, Deserialize)]
struct Sum {
    name: String,
}

impl Kind<Log> for Sum {
    const KIND: &'static str = "sum";
    const VERSION: u32 = 1;
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn run(&self, log: &Log, inputs: &Inputs) -> Result<Bundle, NodeError> {
        let t = Instant::now();
        let mut total = 0u64;
        for i in inputs.all("term") {
            total += i
                .bundle
                .meta()
                .parse::<u64>()
                .map_err(|e| NodeError::new(e.to_string()))?;
        }
        assert!(total != 13, "unlucky sum");
        log.spans
            .lock()
            .unwrap()
            .push((self.name.clone(), t, Instant::now()));
        Ok(Bundle::meta(total.to_string()))
    }
}

fn node<K: Kind<Log>>(label: &str, k: K, inputs: &[usize]) -> DagNode<Log> {
    DagNode {
        label: label.into(),
        node: Arc::new(k),
        inputs: inputs.iter().map(|&i| ("term".to_string(), i)).collect(),
    }
}

fn c(name: &str, value: u64, salt: u64, sleep_ms: u64) -> Const {
    Const {
        value,
        salt,
        sleep_ms,
        name: name.into(),
    }
}

/// slow(5) ; a → b = a ; total = slow + b
fn dag(a: u64, salt: u64) -> Dag<Log> {
    Dag::new(vec![
        node("slow", c("slow", 5, 0, 400), &[]),
        node("a", c("a", a, salt, 0), &[]),
        node("b", Sum { name: "b".into() }, &[1]),
        node(
            "total",
            Sum {
                name: "total".into(),
            },
            &[0, 2],
        ),
    ])
    .unwrap()
}

fn execute(dag: &Dag<Log>, store: &Arc<Store>) -> (repflow_engine::Outcome, Arc<Log>) {
    let log = Arc::new(Log::default());
    let mut local = Local::new(2, store.clone(), log.clone());
    (run(dag, store, &mut local, &RunOptions::default()), log)
}

fn count(o: &repflow_engine::Outcome, s: State) -> usize {
    o.count(|x| *x == s)
}

#[test]
fn nodes_start_when_their_own_inputs_are_done() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    let (o, log) = execute(&dag(1, 0), &store);
    assert_eq!(count(&o, State::Executed), 4);
    let spans = log.spans.lock().unwrap();
    let end = |n: &str| spans.iter().find(|s| s.0 == n).unwrap().2;
    let start = |n: &str| spans.iter().find(|s| s.0 == n).unwrap().1;
    // `b` is one level deeper than `slow` but does not wait for it.
    assert!(
        start("b") < end("slow"),
        "b waited for an unrelated slow node"
    );
    assert!(start("total") >= end("slow"));
}

#[test]
fn reruns_reuse_and_unchanged_outputs_stop_the_cascade() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    execute(&dag(1, 0), &store);
    let (again, _) = execute(&dag(1, 0), &store);
    assert_eq!(count(&again, State::Cached), 4);
    // a new salt reruns `a`, whose output is the same: nothing downstream runs
    let (salted, _) = execute(&dag(1, 7), &store);
    assert_eq!(
        (
            count(&salted, State::Executed),
            count(&salted, State::Cached)
        ),
        (1, 3)
    );
    // a new value reruns `a`, `b` and `total`
    let (changed, _) = execute(&dag(2, 7), &store);
    assert_eq!(count(&changed, State::Executed), 3);
    assert_eq!(count(&plan(&dag(2, 7), &store), State::Cached), 4);
}

#[test]
fn nodes_with_one_key_are_computed_once() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    // `twin_a` and `twin_b` differ only in their names, which are not in the key: one run;
    // `sum_a` and `sum_b` then have one key too (equal inputs), and 13 fails them both
    // (value, executed, cached, failed)
    for (value, executed, cached, failed) in [(5, 2, 2, 0), (13, 1, 1, 2)] {
        let dag = Dag::new(vec![
            node("twin_a", c("twin_a", value, 0, 300), &[]),
            node("twin_b", c("twin_b", value, 0, 300), &[]),
            node(
                "sum_a",
                Sum {
                    name: "sum_a".into(),
                },
                &[0],
            ),
            node(
                "sum_b",
                Sum {
                    name: "sum_b".into(),
                },
                &[1],
            ),
        ])
        .unwrap();
        let (o, log) = execute(&dag, &store);
        let spans = log.spans.lock().unwrap();
        let twins = spans.iter().filter(|s| s.0.starts_with("twin")).count();
        assert_eq!(twins, 1, "the shared key ran {twins} times");
        assert_eq!(o.keys[0], o.keys[1]);
        assert_eq!(o.digests[0], o.digests[1]);
        assert_eq!(
            (count(&o, State::Executed), count(&o, State::Cached)),
            (executed, cached),
            "{:?}",
            o.states
        );
        let fails = o
            .states
            .iter()
            .filter(|s| matches!(s, State::Failed(_)))
            .count();
        assert_eq!(fails, failed, "{:?}", o.states);
    }
}

#[test]
fn a_failing_node_fails_alone_and_blocks_its_dependents() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    // b = a = 13 panics
    let (o, _) = execute(&dag(13, 0), &store);
    assert_eq!(count(&o, State::Executed), 2);
    assert_eq!(count(&o, State::Blocked), 1);
    match &o.states[2] {
        State::Failed(f) => {
            assert_eq!(f.kind, "sum");
            assert!(f.key.is_some());
            assert!(f.message.contains("unlucky sum"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_worker_rebuilds_a_node_from_its_recipe_and_refuses_bad_ones() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    let (o, _) = execute(&dag(1, 0), &store);
    let registry = Registry::<Log>::new().with::<Const>().with::<Sum>();
    let key = o.parts[3].as_ref().unwrap().key();
    let object = o.digests[3].unwrap();
    assert_eq!(
        execute_key(&store, &registry, &Log::default(), &key),
        Ok(WorkerOutcome::AlreadyDone(object))
    );
    store.remove_entry(&key);
    match execute_key(&store, &registry, &Log::default(), &key) {
        Ok(WorkerOutcome::Executed(label, d)) => assert_eq!((label.as_str(), d), ("total", object)),
        other => panic!("{other:?}"),
    }
    // a kind this registry does not know, and a recipe whose spec does not decode
    store.remove_entry(&key);
    let only_const = Registry::<Log>::new().with::<Const>();
    let e = execute_key(&store, &only_const, &Log::default(), &key).unwrap_err();
    assert!(e.contains("unknown node kind `sum`"), "{e}");
    let mut recipe = store.recipe(&key).unwrap();
    recipe.spec = serde_json::json!({ "name": 3 });
    store.put_recipe(&key, &recipe).unwrap();
    let e = execute_key(&store, &registry, &Log::default(), &key).unwrap_err();
    assert!(e.contains("does not decode"), "{e}");
    // a recipe whose parameters no longer give its key
    let key_a = o.parts[1].as_ref().unwrap().key();
    store.remove_entry(&key_a);
    let mut recipe = store.recipe(&key_a).unwrap();
    recipe.spec["value"] = 99.into();
    store.put_recipe(&key_a, &recipe).unwrap();
    let e = execute_key(&store, &registry, &Log::default(), &key_a).unwrap_err();
    assert!(e.contains("does not reproduce its key"), "{e}");
}
