//! Expansion of a pipeline: models and their layers found on disk, shapes and stimulus ids
//! checked, model pairs and layer pairs listed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use repflow_kernels::Settings;

use super::spec::MetricChoice;
use super::spec::{closest, Pairs, PipelineSpec, SourceFormat};
use crate::error::UserError;

/// One layer of one model.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The layer's name.
    pub name: String,
    /// Normalised depth: index / (number of layers − 1), 0 for a single layer.
    pub depth: f64,
    /// The file holding its activations.
    pub file: PathBuf,
    /// The tensor name in a `.safetensors` file.
    pub tensor: Option<String>,
    /// (stimuli, units) as the file's header says.
    pub shape: (usize, usize),
}

/// One model: its layers in forward order and its stimulus ids.
#[derive(Debug, Clone)]
pub struct Model {
    /// The model's name.
    pub name: String,
    /// Its layers, in order.
    pub layers: Vec<Layer>,
    /// Stimulus ids, one per row, when a stimuli file exists.
    pub stimuli: Option<(PathBuf, Vec<String>)>,
    /// For a network repflow extracts itself: which network (and checkpoint).
    pub network: Option<super::networks::NetworkRef>,
    /// For a language model repflow embeds sentences with: which checkpoint.
    pub text: Option<super::language::TextModelRef>,
    /// The stimulus set this model's activations are for: `None` for the pipeline's base set,
    /// an out-of-distribution set's name otherwise. Only models on the same set are compared.
    pub condition: Option<String>,
}

impl Model {
    /// For a checkpoint of a network or language model trained here: its `[[model]]`
    /// table's name and the step.
    pub fn trained(&self) -> Option<(&str, u64)> {
        if let Some(net) = &self.network {
            if let super::networks::Origin::Trained { step, .. } = net.origin {
                return Some((&net.name, step));
            }
        }
        let text = self.text.as_ref()?;
        Some((&text.name, text.trained_step()?))
    }

    /// Its name in node labels: the name, with `[set]` for an out-of-distribution set.
    pub fn label(&self) -> String {
        match &self.condition {
            Some(c) => format!("{}[{c}]", self.name),
            None => self.name.clone(),
        }
    }
}

/// Two layers to compare, as indices into [`Plan::models`] and their layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerPair {
    /// First model.
    pub model_a: usize,
    /// Its layer.
    pub layer_a: usize,
    /// Second model.
    pub model_b: usize,
    /// Its layer.
    pub layer_b: usize,
}

/// An expanded pipeline: everything the DAG is built from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pipeline as written.
    pub spec: PipelineSpec,
    /// Metric engine settings.
    pub settings: Settings,
    /// Metrics to compute.
    pub metrics: Vec<super::spec::MetricChoice>,
    /// Models with their layers.
    pub models: Vec<Model>,
    /// Layer pairs to score.
    pub pairs: Vec<LayerPair>,
    /// Stimuli and training of network-based pipelines.
    pub networks: Option<super::networks::NetworkPlan>,
    /// Sentences and pooling of a language-model pipeline.
    pub text: Option<super::language::TextPlan>,
}

/// Natural order: digit runs compare as numbers (`layer2` before `layer10`).
fn natural_key(s: &str) -> Vec<(u8, u64, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() {
            let mut n = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(d);
                chars.next();
            }
            out.push((0, n.parse().unwrap_or(u64::MAX), String::new()));
        } else {
            let mut t = String::new();
            while let Some(&d) = chars.peek().filter(|d| !d.is_ascii_digit()) {
                t.push(d);
                chars.next();
            }
            out.push((1, 0, t));
        }
    }
    out
}

/// Refuses, before anything runs, layers that no metric can score with these settings: no
/// stimuli or no units, fewer stimuli than folds, or fewer than 4 for unbiased CKA.
fn check_shapes(
    spec: &PipelineSpec,
    settings: &Settings,
    models: &[Model],
) -> Result<(), UserError> {
    let file = spec.path.display();
    let k = settings.folds.k;
    for m in models {
        for l in &m.layers {
            let (rows, units) = l.shape;
            let at = format!("{file}: model `{}` layer `{}`", m.label(), l.name);
            // (a network's widths are known once it runs: 0 here)
            if rows == 0 || (units == 0 && m.network.is_none()) {
                return Err(UserError::input(format!(
                    "{at} has shape ({rows}, {units}): no stimuli or no units to compare"
                )));
            }
            if rows < k {
                return Err(UserError::input(format!(
                    "{at} has {rows} stimuli, fewer than the {k} folds of `options.folds`"
                ))
                .hint(format!(
                    "set `options.folds` to at most {rows}, or use more stimuli"
                )));
            }
            if rows < 4 && settings.hsic == repflow_kernels::HsicEstimator::Unbiased {
                return Err(UserError::input(format!(
                    "{at} has {rows} stimuli; `options.hsic = \"unbiased\"` needs at least 4"
                )));
            }
        }
    }
    Ok(())
}

/// Shape of a 2-D `.npy` file from its header (checked against the file's size).
fn npy_shape(path: &Path) -> Result<(usize, usize), UserError> {
    match crate::matrix_io::npy_header(path)?.shape.as_slice() {
        [m, n] => Ok((*m, *n)),
        s => Err(UserError::input(format!(
            "`{}` holds a {}-D array of shape {s:?}; expected 2-D (stimuli × units)",
            path.display(),
            s.len()
        ))),
    }
}

/// A tensor's name and its (rows, columns).
type NamedShape = (String, (usize, usize));

/// Tensor names (in file order) and shapes of a `.safetensors` file, from its header.
fn safetensors_layers(path: &Path) -> Result<Vec<NamedShape>, UserError> {
    let bad = |why: String| {
        UserError::input(format!(
            "`{}` is not a valid .safetensors file: {why}",
            path.display()
        ))
    };
    let mut f = crate::input::open(path)?;
    let file_len = f
        .metadata()
        .map_err(|e| UserError::input(format!("cannot read `{}`: {e}", path.display())))?
        .len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| bad(e.to_string()))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 || n > file_len - 8 {
        return Err(bad(format!(
            "its header length says {n} bytes; the file has {} after the length",
            file_len - 8
        )));
    }
    let data_len = file_len - 8 - n;
    let n = n as usize;
    let mut header = vec![0u8; n];
    f.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for (name, t) in v {
        if name == "__metadata__" {
            continue;
        }
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect()
            })
            .unwrap_or_default();
        let start = t["data_offsets"][0].as_u64().unwrap_or(0);
        let end = t["data_offsets"][1].as_u64().unwrap_or(0);
        let item = match t["dtype"].as_str() {
            Some("F32") => 4u64,
            Some("F64") => 8,
            other => {
                return Err(UserError::input(format!(
                    "tensor `{name}` in `{}` has dtype {}; expected F32 or F64",
                    path.display(),
                    other.unwrap_or("(none)")
                ))
                .hint("convert with tensor.float() before saving"))
            }
        };
        let want = shape
            .iter()
            .try_fold(item, |acc, &d| acc.checked_mul(d as u64));
        if end > data_len || start > end || want != Some(end - start) {
            return Err(bad(format!(
                "tensor `{name}`'s shape {shape:?} and data offsets [{start}, {end}] do not fit \
                 the {data_len} bytes of data"
            )));
        }
        if shape.len() != 2 {
            return Err(UserError::input(format!(
                "tensor `{name}` in `{}` has shape {shape:?}; expected 2-D (stimuli × units)",
                path.display()
            )));
        }
        out.push((start, name, (shape[0], shape[1])));
    }
    out.sort();
    Ok(out.into_iter().map(|(_, n, s)| (n, s)).collect())
}

fn read_stimuli(path: &Path) -> Result<Option<(PathBuf, Vec<String>)>, UserError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::input::read_to_string(path)?;
    Ok(Some((
        path.to_path_buf(),
        text.lines().map(str::to_string).collect(),
    )))
}

fn discover(
    spec: &PipelineSpec,
    source: &super::spec::SourceSpec,
    dir: &Path,
    name: &str,
) -> Result<Model, UserError> {
    let listed = spec.layer_lists.get(name);
    let (found, stimuli): (Vec<Layer>, _) = match source.format {
        SourceFormat::Npy => {
            let mdir = dir.join(name);
            let entries = std::fs::read_dir(&mdir).map_err(|e| {
                UserError::input(format!(
                    "model `{name}`: cannot read folder `{}`: {e}",
                    mdir.display()
                ))
                .hint(format!(
                    "`source.dir` in {} must hold a folder per model",
                    spec.path.display()
                ))
            })?;
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".npy"))
                        .map(str::to_string)
                })
                .collect();
            names.sort_by_key(|n| natural_key(n));
            let order_file = mdir.join("layers.txt");
            if order_file.exists() {
                let order = crate::input::read_to_string(&order_file)?;
                names = order
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            let layers = names
                .into_iter()
                .map(|n| {
                    let file = mdir.join(format!("{n}.npy"));
                    let shape = npy_shape(&file)?;
                    Ok(Layer {
                        name: n,
                        depth: 0.0,
                        file,
                        tensor: None,
                        shape,
                    })
                })
                .collect::<Result<Vec<_>, UserError>>()?;
            (layers, read_stimuli(&mdir.join("stimuli.txt"))?)
        }
        SourceFormat::Safetensors => {
            let file = dir.join(format!("{name}.safetensors"));
            let layers = safetensors_layers(&file)?
                .into_iter()
                .map(|(n, shape)| Layer {
                    name: n.clone(),
                    depth: 0.0,
                    file: file.clone(),
                    tensor: Some(n),
                    shape,
                })
                .collect();
            (
                layers,
                read_stimuli(&dir.join(format!("{name}.stimuli.txt")))?,
            )
        }
    };
    let mut layers = match listed {
        None => found,
        Some(list) => list
            .iter()
            .map(|l| {
                found.iter().find(|f| &f.name == l).cloned().ok_or_else(|| {
                    let valid: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
                    let mut e = UserError::input(format!(
                        "{}: `layer_lists.{name}` names layer `{l}`, which model `{name}` does not have",
                        spec.path.display()
                    ))
                    .hint(format!("its layers are: {}", valid.join(", ")));
                    if let Some(c) = closest(l, valid.iter().copied()) {
                        e = e.hint(format!("did you mean `{c}`? its layers are: {}", valid.join(", ")));
                    }
                    e
                })
            })
            .collect::<Result<Vec<_>, UserError>>()?,
    };
    if layers.is_empty() {
        return Err(UserError::input(format!(
            "model `{name}` has no layers under `{}`",
            dir.display()
        ))
        .hint("put one .npy file per layer in the model's folder"));
    }
    let count = layers.len();
    for (i, l) in layers.iter_mut().enumerate() {
        l.depth = super::layer_pairs::normalised_depth(i, count);
    }
    let rows = layers[0].shape.0;
    if let Some(l) = layers.iter().find(|l| l.shape.0 != rows) {
        return Err(UserError::input(format!(
            "model `{name}`: layer `{}` has {} stimuli (rows) but layer `{}` has {rows}",
            l.name, l.shape.0, layers[0].name
        )));
    }
    if let Some((path, ids)) = &stimuli {
        if ids.len() != rows {
            return Err(UserError::input(format!(
                "`{}` lists {} stimuli but model `{name}`'s layers have {rows} rows",
                path.display(),
                ids.len()
            )));
        }
    }
    Ok(Model {
        condition: None,
        name: name.to_string(),
        layers,
        stimuli,
        network: None,
        text: None,
    })
}

/// The models of a file-based pipeline, found under `source.dir`.
fn file_models(spec: &PipelineSpec) -> Result<Vec<Model>, UserError> {
    if spec.models.is_empty() {
        return Err(UserError::input(format!(
            "{}: `models` is empty",
            spec.path.display()
        )));
    }
    for m in spec.layer_lists.keys() {
        if !spec.models.contains(m) {
            return Err(UserError::input(format!(
                "{}: `layer_lists.{m}` is not one of `models`",
                spec.path.display()
            )));
        }
    }
    let source = spec.source.clone().ok_or_else(|| {
        UserError::input(format!("{}: no `[source]` table and no `[[model]]`", spec.path.display()))
            .hint("file-based pipelines name `models` and a `[source]` folder; network-based ones list `[[model]]` tables and `[stimuli]`")
    })?;
    let dir = spec.base_dir().join(&source.dir);
    if !dir.is_dir() {
        return Err(UserError::input(format!(
            "{}: `source.dir` is `{}`, which is not a folder",
            spec.path.display(),
            dir.display()
        ))
        .hint("paths in a pipeline are relative to the pipeline file"));
    }
    spec.models
        .iter()
        .map(|m| discover(spec, &source, &dir, m))
        .collect()
}

/// Expands a pipeline: finds every model's layers, checks shapes and stimuli, lists pairs.
pub fn expand(spec: PipelineSpec) -> Result<Plan, UserError> {
    let settings = spec.settings()?;
    let mut metrics = spec.metrics()?;
    let network_based = !spec.model.is_empty() || spec.stimuli.is_some();
    let mut text = None;
    let (models, networks) = if spec.sentences.is_some() {
        if metrics.contains(&MetricChoice::SHIFT) {
            return Err(UserError::input(format!(
                "{}: `{}` compares conv feature maps; language models have none",
                spec.path.display(),
                MetricChoice::SHIFT.name()
            )));
        }
        let (models, plan) = super::language::expand_language(&spec)?;
        text = Some(plan);
        (models, None)
    } else if network_based {
        let (models, mut plan) = super::networks::expand_networks(&spec)?;
        if plan.shift_search && !metrics.contains(&MetricChoice::SHIFT) {
            metrics.push(MetricChoice::SHIFT);
        }
        plan.maps |= metrics.contains(&MetricChoice::SHIFT);
        (models, Some(plan))
    } else {
        if metrics.contains(&MetricChoice::SHIFT) {
            return Err(UserError::input(format!(
                "{}: `metrics` lists `{}`, which needs full feature maps; models read from files are already reduced",
                spec.path.display(),
                MetricChoice::SHIFT.name()
            ))
            .hint("use it with networks the pipeline extracts ([[model]] tables and [stimuli])"));
        }
        (file_models(&spec)?, None)
    };
    check_shapes(&spec, &settings, &models)?;
    // A name can index several models: a network's name indexes all its checkpoints, and a
    // network shown several stimulus sets is one model per set.
    let mut index: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in models.iter().enumerate() {
        index.entry(m.name.as_str()).or_default().push(i);
        let table = m.network.as_ref().map(|n| n.name.as_str());
        let table = table.or(m.text.as_ref().map(|t| t.name.as_str()));
        if let Some(t) = table.filter(|&t| t != m.name) {
            index.entry(t).or_default().push(i);
        }
    }
    let same_set = |a: usize, b: usize| comparable(&models[a], &models[b]);
    let model_pairs: Vec<(usize, usize)> = match &spec.pairs {
        Pairs::Keyword(k) if k == "all" => (0..models.len())
            .flat_map(|a| (a + 1..models.len()).map(move |b| (a, b)))
            .filter(|&(a, b)| same_set(a, b))
            .collect(),
        Pairs::Keyword(k) => {
            return Err(UserError::input(format!(
                "{}: `pairs` is `{k}`; expected \"all\" or a list of [a, b]",
                spec.path.display()
            )))
        }
        Pairs::List(list) => {
            let mut out = Vec::new();
            for (a, b) in list {
                let find = |n: &String| {
                    index.get(n.as_str()).cloned().ok_or_else(|| {
                        UserError::input(format!(
                            "{}: `pairs` names `{n}`, which is not one of `models`",
                            spec.path.display()
                        ))
                    })
                };
                let (ia, ib) = (find(a)?, find(b)?);
                for &i in &ia {
                    out.extend(ib.iter().filter(|&&j| same_set(i, j)).map(|&j| (i, j)));
                }
            }
            out
        }
    };
    for &(a, b) in &model_pairs {
        check_same_stimuli(&models[a], &models[b])?;
    }
    let mut pairs = Vec::new();
    for &(a, b) in &model_pairs {
        let (la, lb) = (&models[a].layers, &models[b].layers);
        let layer_pairs = match spec.layers.as_str() {
            "all" => super::layer_pairs::layer_pairs(la.len(), lb.len(), true),
            "matched" => super::layer_pairs::layer_pairs(la.len(), lb.len(), false),
            "named" => {
                let na: Vec<&str> = la.iter().map(|l| l.name.as_str()).collect();
                let nb: Vec<&str> = lb.iter().map(|l| l.name.as_str()).collect();
                let p = super::layer_pairs::named_pairs(&na, &nb);
                if p.is_empty() {
                    return Err(UserError::input(format!(
                        "{}: `layers = \"named\"`, but models `{}` and `{}` share no layer name",
                        spec.path.display(),
                        models[a].name,
                        models[b].name
                    ))
                    .hint("pair layers by depth (\"matched\") or all with all (\"all\")"));
                }
                p
            }
            other => {
                let mut e = UserError::input(format!(
                    "{}: `layers` is `{other}`; expected \"matched\", \"named\" or \"all\"",
                    spec.path.display()
                ));
                if let Some(c) = closest(other, ["matched", "named", "all"]) {
                    e = e.hint(format!("did you mean `{c}`?"));
                }
                return Err(e);
            }
        };
        for (i, j) in layer_pairs {
            pairs.push(LayerPair {
                model_a: a,
                layer_a: i,
                model_b: b,
                layer_b: j,
            });
        }
    }
    Ok(Plan {
        spec,
        settings,
        metrics,
        models,
        pairs,
        networks,
        text,
    })
}

/// Whether two models are paired: shown the same stimulus set and, when both are checkpoints of
/// networks or language models trained here, at the same step.
fn comparable(a: &Model, b: &Model) -> bool {
    let step = |m: &Model| m.trained().map(|(_, s)| s);
    a.condition == b.condition
        && match (step(a), step(b)) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

/// Compared models must have the same stimuli: same count, and the same ids where both say.
fn check_same_stimuli(a: &Model, b: &Model) -> Result<(), UserError> {
    let (ra, rb) = (a.layers[0].shape.0, b.layers[0].shape.0);
    if ra != rb {
        return Err(UserError::input(format!(
            "models `{}` and `{}` are compared but have {ra} and {rb} stimuli (rows)",
            a.name, b.name
        ))
        .hint("compared models need activations for the same stimuli in the same order"));
    }
    if let (Some((pa, ia)), Some((pb, ib))) = (&a.stimuli, &b.stimuli) {
        if let Some(i) = (0..ia.len()).find(|&i| ia[i] != ib[i]) {
            return Err(UserError::input(format!(
                "stimulus ids differ: line {} of `{}` is `{}` but of `{}` is `{}`",
                i + 1,
                pa.display(),
                ia[i],
                pb.display(),
                ib[i]
            ))
            .hint("rows must be the same stimuli in the same order in both models"));
        }
    }
    Ok(())
}
