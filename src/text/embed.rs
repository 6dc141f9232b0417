//! Pooling a language model's layers over tokens: one row per sentence and layer.

use candle_core::{Tensor, D};

use super::{LanguageModel, TokenBatch, TokenPooling};
use crate::error::UserError;
use crate::models::extract::LayerActivations;

fn candle(e: candle_core::Error) -> UserError {
    UserError::input(e.to_string().lines().next().unwrap_or_default().to_string())
}

/// Pools one hidden state (batch × tokens × hidden) to batch × hidden over the tokens
/// `mask` keeps (`last`: the last token it keeps).
pub fn pool(state: &Tensor, mask: &Tensor, how: TokenPooling) -> Result<Tensor, UserError> {
    (|| -> candle_core::Result<Tensor> {
        match how {
            TokenPooling::Cls => state.narrow(1, 0, 1)?.squeeze(1),
            TokenPooling::Mean => {
                let m = mask.unsqueeze(D::Minus1)?;
                state.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)
            }
            TokenPooling::Last => {
                let kept: Vec<Vec<f32>> = mask.to_vec2()?;
                let rows = kept
                    .iter()
                    .enumerate()
                    .map(|(r, row)| {
                        let last = row.iter().rposition(|&m| m > 0.0).unwrap_or(0);
                        state.get(r)?.get(last)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::stack(&rows, 0)
            }
        }
    })()
    .map_err(candle)
}

/// Every layer of `model` on `sentences`, pooled by `how`, in batches of `batch`: one
/// stimuli × hidden array per layer (embeddings first, rows in the order given), and how
/// many sentences were truncated to the model's positions. Batches are formed from
/// sentences of similar length (sorted by token count, ties in order), so little compute
/// goes to padding.
pub fn embed(
    model: &dyn LanguageModel,
    sentences: &[String],
    how: TokenPooling,
    batch: usize,
) -> Result<(Vec<LayerActivations>, usize), UserError> {
    if how == TokenPooling::Cls && !model.pools_first_token() {
        return Err(UserError::input(
            "`cls` pooling takes the first token's state, which in a causal decoder is the same for every sentence",
        )
        .hint("use --reduce mean or last (`sentences.reduce`) for a decoder"));
    }
    let (ids, truncated) = model.tokenize(sentences)?;
    let h = model.width();
    let n = ids.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (ids[i].len(), i));
    let mut out: Vec<LayerActivations> = model
        .layer_names()
        .into_iter()
        .map(|name| LayerActivations {
            name,
            shape: vec![n, h],
            data: vec![0.0; n * h],
        })
        .collect();
    for chunk in order.chunks(batch.max(1)) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
        let (states, mask) = model.hidden_states(&TokenBatch { rows })?;
        let kept: Vec<f32> = mask.sum(1).and_then(|s| s.to_vec1()).map_err(candle)?;
        if let Some(k) = kept.iter().position(|&c| c == 0.0) {
            return Err(UserError::input(format!(
                "sentence {} (`{}`) has no tokens to pool",
                chunk[k] + 1,
                sentences[chunk[k]]
            ))
            .hint("remove it from the sentence file"));
        }
        for (slot, s) in out.iter_mut().zip(&states) {
            let pooled: Vec<f32> = pool(s, &mask, how)?
                .flatten_all()
                .and_then(|f| f.to_vec1::<f32>())
                .map_err(candle)?;
            for (k, &i) in chunk.iter().enumerate() {
                slot.data[i * h..(i + 1) * h].copy_from_slice(&pooled[k * h..(k + 1) * h]);
            }
        }
    }
    Ok((out, truncated))
}
