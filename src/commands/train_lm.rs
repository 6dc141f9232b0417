//! `repflow train-lm`: train a byte-level decoder on WordNet's definitions and save
//! checkpoints from step 0, each a folder (`config.json`, `model.safetensors`) that
//! `repflow extract --arch gpt` reads.

use std::io::Write;

use crate::cli::TrainLmArgs;
use crate::error::UserError;
use crate::stimuli::datasets::default_package;
use crate::text::gpt::GptConfig;
use crate::text::lm_train::{train_lm, Corpus, LmRecipe};
use crate::text::sentences::WORDNET_DEB;

/// Runs `repflow train-lm`.
pub fn run(args: &TrainLmArgs) -> Result<(), UserError> {
    let model = GptConfig {
        vocab_size: 256,
        n_positions: args.context,
        n_embd: args.width,
        n_layer: args.layers,
        n_head: args.heads,
    };
    model.check("--layers/--width/--heads/--context")?;
    let recipe = LmRecipe {
        model,
        seed: args.seed,
        lr: args.lr,
        warmup: args.warmup,
        weight_decay: args.weight_decay,
        batch: args.batch,
        steps: args.steps,
    };
    let mut checkpoints = args.checkpoints.clone();
    if let Some(&c) = checkpoints.iter().find(|&&c| c > args.steps) {
        return Err(UserError::input(format!(
            "--checkpoints: step {c} is after the last step ({})",
            args.steps
        )));
    }
    checkpoints.push(args.steps);
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let deb = args
        .data
        .clone()
        .unwrap_or_else(|| default_package(WORDNET_DEB));
    let corpus = Corpus::wordnet(&deb)?;
    let out = &args.out;
    std::fs::create_dir_all(out)
        .map_err(|e| UserError::input(format!("cannot create `{}`: {e}", out.display())))?;
    let io =
        |e: std::io::Error| UserError::input(format!("cannot write in `{}`: {e}", out.display()));
    let config = serde_json::to_string_pretty(&model).expect("configs serialise");
    std::fs::write(
        out.join("recipe.json"),
        serde_json::to_string_pretty(&recipe).expect("recipes serialise"),
    )
    .map_err(io)?;
    let mut metrics = std::fs::File::create(out.join("metrics.jsonl")).map_err(io)?;
    let start = std::time::Instant::now();
    eprintln!(
        "training a {}-block decoder (width {}) on {} bytes of WordNet definitions ({} held out)",
        model.n_layer,
        model.n_embd,
        corpus.train.len(),
        corpus.held_out.len()
    );
    train_lm(
        &recipe,
        &corpus,
        &checkpoints,
        None,
        args.steps,
        |ck, st| {
            let dir = out.join(format!("step-{}", ck.step));
            std::fs::create_dir_all(&dir).map_err(io)?;
            std::fs::write(dir.join("config.json"), &config).map_err(io)?;
            let file = dir.join("model.safetensors");
            candle_core::safetensors::save(&st.tensors, &file)
                .map_err(|e| UserError::input(format!("cannot write `{}`: {e}", file.display())))?;
            let line = serde_json::json!({
                "step": ck.step,
                "train_loss": if ck.train_loss.is_nan() { None } else { Some(ck.train_loss) },
                "held_out_loss": ck.held_out_loss,
                "held_out_bits_per_byte": ck.held_out_loss / std::f64::consts::LN_2,
                "seconds": start.elapsed().as_secs_f64(),
            });
            writeln!(metrics, "{line}").map_err(io)?;
            eprintln!(
                "step {:>6}: held-out loss {:.4} nats/byte ({:.3} bits/byte), {:.0} s",
                ck.step,
                ck.held_out_loss,
                ck.held_out_loss / std::f64::consts::LN_2,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        },
    )?;
    println!(
        "trained {} steps in {:.1} s; checkpoints in {}",
        args.steps,
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
