//! `repflow extract --arch bert`: a BERT-family checkpoint's layers on sentences, pooled over
//! tokens, written as a pipeline model folder (the embedding output first, then each
//! encoder layer).

use std::path::Path;

use crate::cli::ExtractArgs;
use crate::error::UserError;
use crate::stimuli::datasets::default_package;
use crate::text::bert::{embed, Bert};
use crate::text::sentences::{read_file, wordnet_examples, Sentences, WORDNET_DEB};
use crate::text::TokenPooling;

/// The sentences `--sentences` names: `wordnet:N` or a text file.
pub fn sentences(spec: &str, data: Option<&Path>) -> Result<Sentences, UserError> {
    match spec.strip_prefix("wordnet:") {
        Some(n) => {
            let count: usize = n.parse().map_err(|_| {
                UserError::input(format!("`--sentences {spec}`: `{n}` is not a count"))
                    .hint("e.g. --sentences wordnet:1000")
            })?;
            let deb = data
                .map(Path::to_path_buf)
                .unwrap_or_else(|| default_package(WORDNET_DEB));
            wordnet_examples(&deb, count)
        }
        None => read_file(Path::new(spec)),
    }
}

/// Runs `repflow extract --arch bert`.
pub fn run(args: &ExtractArgs) -> Result<(), UserError> {
    let Some(spec) = args.sentences.as_deref() else {
        return Err(
            UserError::input("`repflow extract --arch bert` needs --sentences")
                .hint("a text file (one sentence a line) or wordnet:N"),
        );
    };
    if args.stimuli.is_some() {
        return Err(UserError::input(
            "--stimuli names images; a language model takes --sentences",
        ));
    }
    let how = TokenPooling::parse(args.reduce.as_deref().unwrap_or("mean"))?;
    if !args.checkpoint.is_dir() {
        return Err(UserError::input(format!(
            "`{}` is not a folder; a BERT checkpoint is a folder with config.json, model.safetensors and tokenizer.json",
            args.checkpoint.display()
        )));
    }
    let model = Bert::load(&args.checkpoint)?;
    let s = sentences(spec, args.data.as_deref())?;
    let text = match args.limit {
        Some(k) => &s.text[..k.min(s.text.len())],
        None => &s.text[..],
    };
    let (mut layers, truncated) = embed(&model, text, how, args.batch)?;
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
            "note: {truncated} of {} sentences were longer than the model's {} tokens and were truncated",
            text.len(),
            model.config.max_position_embeddings
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
