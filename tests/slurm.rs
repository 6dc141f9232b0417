//! `repflow run --executor slurm` on a real Slurm: munged, slurmctld and slurmd started on
//! localhost with their own `SLURM_CONF` in a temporary folder, stopped by PID afterwards.
//! Needs root and Debian's `slurm-wlm` and `munge` (`.ci/run` installs them). Without Slurm
//! the test says it was skipped and why; with `CI=true` it must run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A one-node cluster on localhost; its daemons are stopped (by PID) when it is dropped.
struct Cluster {
    root: tempfile::TempDir,
    daemons: Vec<(&'static str, Child)>,
}

impl Cluster {
    /// Starts the daemons; `Err` says why it cannot.
    fn start() -> Result<Cluster, String> {
        for bin in [
            "/usr/sbin/slurmctld",
            "/usr/sbin/slurmd",
            "/usr/sbin/munged",
        ] {
            if !Path::new(bin).exists() {
                return Err(format!(
                    "{bin} is not installed (apt-get install slurm-wlm munge)"
                ));
            }
        }
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        let r = root.path();
        for d in ["state", "spool", "log"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        // MaxArraySize 40 (Slurm's default is 1001) so that the example's 144 score nodes
        // must go out as several arrays.
        let conf = format!(
            "ClusterName=repflow\nSlurmctldHost=localhost\nSlurmUser=root\nAuthType=auth/munge\nCredType=cred/munge\n\
ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\nSchedulerType=sched/backfill\n\
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=0\nSelectType=select/cons_tres\n\
SelectTypeParameters=CR_Core\nReturnToService=2\nStateSaveLocation={r}/state\nSlurmdSpoolDir={r}/spool\n\
SlurmctldPidFile={r}/slurmctld.pid\nSlurmdPidFile={r}/slurmd.pid\nSlurmctldLogFile={r}/log/slurmctld.log\n\
SlurmdLogFile={r}/log/slurmd.log\nJobCompType=jobcomp/filetxt\nJobCompLoc={r}/log/jobcomp.txt\nMinJobAge=3600\n\
AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\nMaxArraySize=40\n\
NodeName=localhost CPUs={cpus} RealMemory=1000 State=UNKNOWN\n\
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
            r = r.display()
        );
        let conf_path = r.join("slurm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        std::env::set_var("SLURM_CONF", &conf_path);
        let mut cluster = Cluster {
            root,
            daemons: Vec::new(),
        };
        if !Path::new("/etc/munge/munge.key").exists() {
            let made = Command::new("sh")
                .args(["-c", "dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key"])
                .status()
                .map_err(|e| e.to_string())?;
            if !made.success() {
                return Err("cannot create /etc/munge/munge.key (not root?)".into());
            }
        }
        let ok = Command::new("install")
            .args([
                "-d",
                "-o",
                "munge",
                "-g",
                "munge",
                "-m",
                "755",
                "/run/munge",
            ])
            .status()
            .map_err(|e| e.to_string())?;
        if !ok.success() {
            return Err("cannot create /run/munge (not root?)".into());
        }
        cluster.spawn(
            "munged",
            Command::new("setpriv").args([
                "--reuid=munge",
                "--regid=munge",
                "--init-groups",
                "/usr/sbin/munged",
                "-F",
                "--force",
            ]),
        )?;
        wait_for("munge", Duration::from_secs(20), || {
            Command::new("sh")
                .args(["-c", "munge -n | unmunge"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })?;
        cluster.spawn(
            "slurmctld",
            Command::new("/usr/sbin/slurmctld").args(["-D", "-i"]),
        )?;
        cluster.spawn(
            "slurmd",
            Command::new("/usr/sbin/slurmd").args(["-D", "-N", "localhost"]),
        )?;
        wait_for("an idle node", Duration::from_secs(60), || {
            Command::new("sinfo")
                .args(["-h", "-o", "%t"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
                .unwrap_or(false)
        })
        .map_err(|e| format!("{e}; slurmctld log: {}", cluster.log("slurmctld")))?;
        Ok(cluster)
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command) -> Result<(), String> {
        let log = std::fs::File::create(self.root.path().join("log").join(format!("{name}.out")))
            .unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        self.daemons.push((name, child));
        Ok(())
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.path().join("log").join(format!("{name}.log")))
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Reverse order, each by its PID: slurmd, slurmctld, munged.
        for (_, child) in self.daemons.iter_mut().rev() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("no {what} after {} s", limit.as_secs()))
}

/// Three models of four layers, every layer pair of every model pair, three metrics:
/// 3 × 16 × 3 = 144 score nodes.
fn example(dir: &Path) -> PathBuf {
    for (i, m) in ["seed0", "seed1", "seed2"].iter().enumerate() {
        write_model(&dir.join("data"), m, i as u64, 200, &[6, 8, 8, 5]);
    }
    write_pipeline(
        &dir.join("example.toml"),
        &format!(
            "name = \"example\"\nresults = \"{}\"\nmodels = [\"seed0\", \"seed1\", \"seed2\"]\npairs = \"all\"\nlayers = \"all\"\nmetrics = [\"procrustes\", \"soft-matching\", \"cka\"]\n\n[source]\ndir = \"data\"\n",
            s(&dir.join("results"))
        ),
    )
}

fn slurm(p: &Path, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--executor", "slurm", "--slurm-poll", "0.2"];
    args.extend_from_slice(extra);
    run(p, cache, &args)
}

/// Starts `repflow run` on Slurm with one element of an array at a time, in the background.
fn throttled(p: &Path, cache: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_repflow"))
        .args([
            "run",
            &s(p),
            "--cache",
            &s(cache),
            "--json",
            "--executor",
            "slurm",
        ])
        .args(["--slurm-poll", "0.2", "--slurm-array-max", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lines (one array element's keys each) of every key file that the runs on `cache`
/// wrote (`<cache>/v2/slurm/<run>/N.keys`), one list per array.
fn key_file_lines(cache: &Path) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for run in std::fs::read_dir(cache.join("v2").join("slurm")).unwrap() {
        for f in std::fs::read_dir(run.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "keys") {
                let text = std::fs::read_to_string(&f).unwrap();
                out.push(text.lines().map(str::to_string).collect());
            }
        }
    }
    out
}

#[test]
fn pipelines_run_on_a_real_slurm() {
    let cluster = match Cluster::start() {
        Ok(c) => c,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: no Slurm cluster could be started here: {why}");
            return;
        }
        Err(why) => panic!("CI=true but no Slurm cluster could be started: {why}"),
    };
    let t = tempdir();
    let p = example(t.path());

    // The same scores as a local run, byte for byte.
    let local = run(&p, &t.path().join("local"), &[]);
    assert_eq!(local["failed"], 0, "{local}");
    let expected = std::fs::read(t.path().join("results/scores.csv")).unwrap();
    assert_eq!(String::from_utf8_lossy(&expected).lines().count(), 1 + 144);
    std::fs::remove_dir_all(t.path().join("results")).unwrap();
    let cache = t.path().join("cluster");
    let start = Instant::now();
    let first = slurm(&p, &cache, &[]);
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(first["executor"], "slurm");
    let submitted = first["submitted"].as_u64().unwrap();
    let arrays = first["arrays"].as_u64().unwrap();
    // sources, prepared layers and scores run as jobs; folds and the table in the driver
    assert!(submitted >= 144 + 12 + 12, "{first}");
    assert!(
        arrays * 4 <= submitted,
        "one array per kind and poll, not one job per node: {first}"
    );
    assert_eq!(
        std::fs::read(t.path().join("results/scores.csv")).unwrap(),
        expected
    );
    // Kinds with no `mem` of their own ask for their nodes' estimate plus the process's
    // 256 MiB; this cluster knows the jobs for an hour (MinJobAge).
    let jobs = Command::new("scontrol")
        .args(["-o", "show", "job"])
        .output()
        .unwrap();
    let jobs = String::from_utf8_lossy(&jobs.stdout);
    let asked: Vec<u64> = jobs
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("MinMemoryNode="))
        })
        .filter_map(|m| m.strip_suffix('M')?.parse().ok())
        .collect();
    assert!(
        asked.iter().any(|&mib| mib > 256 && mib < 1000),
        "no array asked for its nodes' estimated --mem: {asked:?}"
    );
    eprintln!(
        "slurm: {submitted} elements in {arrays} arrays, {wall:.1} s (local: {:.1} s)",
        local["seconds"].as_f64().unwrap()
    );

    // No array exceeded the cluster's MaxArraySize (40): its key files have at most 40 lines.
    let lines = key_file_lines(&cache);
    assert!(
        lines.iter().map(Vec::len).max() <= Some(40),
        "an array of more than 40 elements"
    );
    assert!(
        arrays >= 5,
        "144 score nodes need at least 4 arrays of 40: {first}"
    );

    // Procrustes nodes batched 8 to an element: the same scores byte for byte, fewer
    // elements, and elements whose line holds several keys.
    std::fs::remove_dir_all(t.path().join("results")).unwrap();
    let batched_cache = t.path().join("batched");
    let b = slurm(&p, &batched_cache, &["--score-batch", "8"]);
    assert_eq!(b["failed"], 0, "{b}");
    assert!(b["batched"].as_u64().unwrap() >= 8, "{b}");
    assert!(
        b["submitted"].as_u64().unwrap() < submitted,
        "{b} vs {first}"
    );
    let widest = key_file_lines(&batched_cache)
        .iter()
        .flatten()
        .map(|line| line.split_whitespace().count())
        .max();
    assert!(matches!(widest, Some(2..=8)), "{widest:?}");
    assert_eq!(
        std::fs::read(t.path().join("results/scores.csv")).unwrap(),
        expected
    );
    eprintln!(
        "slurm, --score-batch 8: {} elements in {} arrays, {} nodes batched",
        b["submitted"], b["arrays"], b["batched"]
    );

    // A fully cached rerun submits nothing.
    let again = slurm(&p, &cache, &[]);
    assert_eq!(
        (again["executed"].as_u64(), again["submitted"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );

    // A cancelled element is resubmitted and the run completes.
    let small = t.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    for (i, m) in ["a", "b"].iter().enumerate() {
        write_model(&small.join("data"), m, i as u64 + 7, 100, &[4, 4]);
    }
    let sp = write_pipeline(
        &small.join("small.toml"),
        &format!(
            "models = [\"a\", \"b\"]\nresults = \"{}\"\nlayers = \"all\"\nmetrics = [\"procrustes\"]\n[source]\ndir = \"data\"\n",
            s(&small.join("results"))
        ),
    );
    let child = throttled(&sp, &small.join("cache"));
    // Throttled to one element at a time: cancel a pending one.
    let mut cancelled = None;
    wait_for("a pending element", Duration::from_secs(60), || {
        let o = Command::new("squeue")
            .args(["-h", "-r", "-t", "PD", "-o", "%i"])
            .output()
            .unwrap();
        let ids = String::from_utf8_lossy(&o.stdout).to_string();
        match ids
            .lines()
            .map(str::trim)
            .find(|l| l.contains('_') && !l.contains('['))
        {
            Some(id) => {
                assert!(Command::new("scancel").arg(id).status().unwrap().success());
                cancelled = Some(id.to_string());
                true
            }
            None => false,
        }
    })
    .unwrap();
    let out = child.wait_with_output().unwrap();
    // Submission to completion of one node: a pipeline of one score node is three rounds of
    // dependent jobs (sources, prepared layers, the score), each submitted when its inputs
    // end. The two prepared layers go out as one array when their sources end within one
    // poll, as two when not (a slow machine): three or four arrays, never one per node.
    let one = write_pipeline(
        &small.join("one.toml"),
        &format!(
            "models = [\"a\", \"b\"]\nresults = \"{}\"\nlayers = \"matched\"\nmetrics = [\"cka\"]\nlayer_lists = {{ a = [\"layer1\"], b = [\"layer1\"] }}\n[source]\ndir = \"data\"\n",
            s(&small.join("one-results"))
        ),
    );
    let t0 = Instant::now();
    let r = slurm(&one, &small.join("one-cache"), &[]);
    assert_eq!(r["failed"].as_u64(), Some(0), "{r}");
    assert!(
        matches!(r["arrays"].as_u64(), Some(3 | 4)),
        "three dependent rounds, the middle one in one or two arrays: {r}"
    );
    eprintln!(
        "slurm: one node submission to completion {:.2} s (3 dependent rounds, {} arrays, in {:.2} s)",
        t0.elapsed().as_secs_f64() / 3.0,
        r["arrays"],
        t0.elapsed().as_secs_f64()
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(
        summary["retries"].as_u64().unwrap() >= 1,
        "{cancelled:?} was not resubmitted: {summary}"
    );
    assert!(
        std::fs::read_to_string(small.join("results/scores.csv"))
            .unwrap()
            .lines()
            .count()
            == 1 + 4
    );

    // A GPU the driver lacks (a login node) is not the driver's error: it runs its own nodes
    // on the CPU, and its jobs get `cuda` through REPFLOW_DEVICE — on this GPU-less cluster
    // they fail, saying why.
    if repflow_cuda::probe().is_err() {
        let out = Command::new(env!("CARGO_BIN_EXE_repflow"))
            .args(["run", &s(&sp), "--cache", &s(&small.join("cuda-cache"))])
            .args(["--json", "--executor", "slurm", "--slurm-poll", "0.2"])
            .args(["--retries", "0", "--device", "cuda"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("`cuda` is not usable on this machine") && err.contains("use the CPU"),
            "{err}"
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            summary["failures"].to_string().contains("cuda"),
            "the jobs did not get `cuda`: {summary}"
        );
    }

    // SIGTERM (as Ctrl-C) cancels the run's jobs: nothing of it is left queued or running.
    let child = throttled(&sp, &small.join("term-cache"));
    let active = || {
        let o = Command::new("squeue")
            .args(["-h", "-r", "-t", "PD,R,CG", "-o", "%i"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    wait_for("queued elements", Duration::from_secs(60), || active() > 0).unwrap();
    assert!(Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        summary["failures"].to_string().contains("cancelled"),
        "{summary}"
    );
    wait_for(
        "no active elements after SIGTERM",
        Duration::from_secs(20),
        || active() == 0,
    )
    .unwrap();

    // A network pipeline: a short training chain and its extractions, as dependent jobs.
    let root = env!("CARGO_MANIFEST_DIR");
    let deb =
        format!("{root}/data/downloads/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb");
    let net = write_pipeline(
        &t.path().join("net.toml"),
        &format!(
            "name = \"net\"\nresults = \"{results}\"\nmetrics = [\"cka\"]\n\n[stimuli]\ncount = 100\npackage = \"{deb}\"\n\n\
[training]\npackage = \"{deb}\"\nepochs = 1\nbatch = 64\ntrain_limit = 192\ntest_limit = 64\ncheckpoints = [\"0\", \"1\", \"end\"]\n\n\
[[model]]\nname = \"a\"\narch = \"resnet18\"\nwidth = 4\nseed = 0\n\n[[model]]\nname = \"b\"\narch = \"resnet18\"\nwidth = 4\nseed = 1\n\n\
[slurm.kinds.train]\ncpus = 1\n",
            results = s(&t.path().join("net-results"))
        ),
    );
    let r = slurm(&net, &t.path().join("net-cache"), &[]);
    assert_eq!(r["failed"], 0, "{r}");
    // images, 3 chained checkpoints of 2 networks, 6 extractions, prepared layers, scores:
    // each checkpoint waits for the previous one's job.
    assert!(r["arrays"].as_u64().unwrap() >= 5, "{r}");
    let models = std::fs::read_to_string(t.path().join("net-results/models.csv")).unwrap();
    assert_eq!(models.lines().count(), 1 + 6, "{models}");
    assert_eq!(
        slurm(&net, &t.path().join("net-cache"), &[])["submitted"],
        0
    );
    drop(cluster);
}
