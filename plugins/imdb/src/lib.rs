//! IMDB assets for the small-scale language-model experiment (docs/algorithms.md, "Experiments to
//! reproduce" item 1): a sentiment scorer trained by the project, a BPE tokenizer and a small
//! GPT-2 pretrained on IMDB reviews, and prompt extraction. No pretrained weights can be
//! downloaded here, so the project builds these itself and ships them (`models/`,
//! `data/imdb/prompts.jsonl`); `docs/imdb.md` says how and why.
//!
//! Layout:
//! - [`data`]: `imdb.csv` reading, cleaning, the fixed 90/10 split, sentence splitting.
//! - [`sentiment`]: the logistic-regression scorer (stand-in for the paper's DistilBERT).
//! - [`bpe`]: byte-level BPE tokenizer training.
//! - [`pretrain`]: small GPT-2 pretraining on EOS-terminated review sentences.
//! - [`trainer`]: the pretraining loop's GPT-2 forward/backward and Adam, written out for speed.
//! - [`card`]: samples from a saved model and its README.
//! - [`prompts`]: the experiment's prompts (first 2–8 tokens of held-out reviews).
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

pub mod bpe;
pub mod card;
pub mod data;
pub mod pretrain;
pub mod prompts;
pub mod sentiment;
pub mod trainer;
#[cfg(test)]
mod trainer_tests;
