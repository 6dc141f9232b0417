//! `repflow extract --arch bert|gpt`: a language model's layers on sentences, pooled over
//! tokens, written as a pipeline model folder (the embedding output first, then each
//! encoder layer or decoder block).

use std::path::Path;

use crate::cli::ExtractArgs;
use crate::error::UserError;
use crate::nodes::text::SentenceSet;
use crate::text::bert::Bert;
use crate::text::embed::embed;
use crate::text::gpt::Gpt;
use crate::text::{LanguageModel, TokenPooling};

/// Loads language model `arch` (`bert` or `gpt`) from checkpoint folder `dir`.
pub fn load(arch: &str, dir: &Path) -> Result<Box<dyn LanguageModel>, UserError> {
    if !dir.is_dir() {
        return Err(UserError::input(format!(
            "`{}` is not a folder; a language-model checkpoint is a folder with config.json and model.safetensors (and tokenizer.json for bert)",
            dir.display()
        )));
    }
    Ok(match arch {
        "bert" => Box::new(Bert::load(dir)?),
        _ => Box::new(Gpt::load(dir)?),
    })
}

/// Runs `repflow extract --arch bert|gpt`.
pub fn run(args: &ExtractArgs) -> Result<(), UserError> {
    let Some(spec) = args.sentences.as_deref() else {
        return Err(UserError::input(format!(
            "`repflow extract --arch {}` needs --sentences",
            args.arch
        ))
        .hint("a text file (one sentence a line) or wordnet:N"));
    };
    if args.stimuli.is_some() {
        return Err(UserError::input(
            "--stimuli names images; a language model takes --sentences",
        ));
    }
    let how = TokenPooling::parse(args.reduce.as_deref().unwrap_or("mean"))?;
    let model = load(&args.arch, &args.checkpoint)?;
    let s = SentenceSet::parse(spec, Path::new("."), args.data.clone())
        .map_err(|e| e.prefixed(&format!("`--sentences {spec}`: ")))?
        .read()?;
    let text = match args.limit {
        Some(k) => &s.text[..k.min(s.text.len())],
        None => &s.text[..],
    };
    let (mut layers, truncated) = embed(model.as_ref(), text, how, args.batch)?;
    if !args.layers.is_empty() {
        let names = model.layer_names();
        if let Some(l) = args.layers.iter().find(|l| !names.contains(l)) {
            return Err(UserError::input(format!("the model has no layer `{l}`"))
                .hint(format!("its layers are: {}", names.join(", "))));
        }
        layers.retain(|l| args.layers.contains(&l.name));
    }
    if truncated > 0 {
        eprintln!(
            "note: {truncated} of {} sentences were longer than the model's {} token positions and were truncated",
            text.len(),
            model.positions()
        );
    }
    super::extract::write_folder(&args.out, &layers, &s.ids[..text.len()], None)?;
    // the sentences themselves, beside their ids (one a line, as read)
    let listed: String = text
        .iter()
        .map(|t| format!("{}\n", t.replace('\n', " ")))
        .collect();
    std::fs::write(args.out.join("sentences.txt"), listed).map_err(|e| {
        UserError::input(format!(
            "cannot write `{}`: {e}",
            args.out.join("sentences.txt").display()
        ))
    })?;
    println!(
        "wrote {} layers × {} sentences to {}",
        layers.len(),
        text.len(),
        args.out.display()
    );
    Ok(())
}
