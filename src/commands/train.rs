//! `repflow train`: train a network on Fashion-MNIST and save checkpoints from step 0.

use std::io::Write;

use crate::cli::TrainArgs;
use crate::error::UserError;
use crate::models::moco::MocoConfig;
use crate::models::train::{train, Objective, Optimizer, TrainConfig};
use crate::models::Arch;
use crate::models::ModelConfig;
use crate::stimuli::datasets::{default_package, fashion_mnist, FASHION_MNIST_NORMALIZE};

/// Runs `repflow train`.
pub fn run(args: &TrainArgs) -> Result<(), UserError> {
    let path = args.data.clone().unwrap_or_else(|| {
        default_package("dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb")
    });
    let (mut train_set, mut test_set) = fashion_mnist(&path)?;
    if let Some(k) = args.train_limit {
        train_set = train_set.take(k);
    }
    if let Some(k) = args.test_limit {
        test_set = test_set.take(k);
    }
    if args.batch == 0 || args.epochs.is_nan() || args.epochs <= 0.0 {
        return Err(UserError::input("--batch and --epochs must be positive"));
    }
    let steps_per_epoch = train_set.n.div_ceil(args.batch) as u64;
    let steps = (args.epochs * steps_per_epoch as f64).round().max(1.0) as u64;
    let mut checkpoints: Vec<u64> = args
        .checkpoints
        .iter()
        .map(|c| match c.strip_suffix('e') {
            Some(e) => e
                .parse::<f64>()
                .map(|e| (e * steps_per_epoch as f64).round() as u64),
            None => c.parse::<f64>().map(|s| s as u64),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| {
            UserError::input(format!("--checkpoints: {e}"))
                .hint("give steps (0,50,200) or epochs (0.5e,1e)")
        })?;
    checkpoints.push(steps);
    checkpoints.retain(|&c| c <= steps);
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let objective = match args.objective.as_str() {
        "supervised" => Objective::Supervised,
        "moco" => Objective::Moco(MocoConfig {
            queue: args.queue,
            momentum: args.key_momentum,
            temperature: args.temperature,
            ..MocoConfig::default()
        }),
        other => {
            return Err(
                UserError::input(format!("unknown objective `{other}`")).hint("supervised or moco")
            )
        }
    };
    let moco = !objective.is_supervised();
    let arch = Arch::from_name(&args.arch)?;
    if moco && arch == Arch::Vit {
        return Err(
            UserError::input("--objective moco: the ViT has no projection head here")
                .hint("a ResNet or a VGG"),
        );
    }
    let cfg = TrainConfig {
        model: ModelConfig {
            arch,
            width: args.width,
            num_classes: if moco { args.projection_dim } else { 10 },
            in_channels: 1,
            small_input: true,
            projection: moco,
        },
        seed: args.seed,
        optimizer: match args.optimizer.as_str() {
            "sgd" => Optimizer::Sgd,
            "adamw" => Optimizer::Adamw,
            other => {
                return Err(
                    UserError::input(format!("unknown optimizer `{other}`")).hint("sgd or adamw")
                )
            }
        },
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        batch: args.batch,
        steps,
        augment: !args.no_augment,
        normalize: FASHION_MNIST_NORMALIZE,
        checkpoints,
        objective,
    };
    let out = &args.out;
    std::fs::create_dir_all(out)
        .map_err(|e| UserError::input(format!("cannot create `{}`: {e}", out.display())))?;
    let io =
        |e: std::io::Error| UserError::input(format!("cannot write in `{}`: {e}", out.display()));
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&cfg).expect("config serialises"),
    )
    .map_err(io)?;
    let mut metrics = std::fs::File::create(out.join("metrics.jsonl")).map_err(io)?;
    let start = std::time::Instant::now();
    train(&cfg, &train_set, &test_set, |ck, _| {
        let file = out.join(format!("step-{}.safetensors", ck.step));
        candle_core::safetensors::save(&ck.tensors, &file)
            .map_err(|e| UserError::input(format!("cannot write `{}`: {e}", file.display())))?;
        let line = serde_json::json!({
            "step": ck.step, "epoch": ck.epoch, "train_loss": if ck.train_loss.is_nan() { None } else { Some(ck.train_loss) },
            "test_accuracy": ck.test_accuracy, "knn_accuracy": ck.knn_accuracy, "seconds": start.elapsed().as_secs_f64(),
        });
        writeln!(metrics, "{line}").map_err(io)?;
        let knn = ck
            .knn_accuracy
            .map(|k| format!(" (linear probe), k-NN {k:.4}"))
            .unwrap_or_default();
        eprintln!(
            "step {:>6} (epoch {:.2}): test accuracy {:.4}{knn}, train loss {:.4}, {:.0} s",
            ck.step,
            ck.epoch,
            ck.test_accuracy,
            ck.train_loss,
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })?;
    println!(
        "trained {} steps in {:.1} s; checkpoints in {}",
        steps,
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
