//! IMDB assets for the small-scale language-model experiment (PAPER.md, "Experiments to
//! reproduce" item 1): a sentiment scorer trained by the project, a BPE tokenizer and a small
//! GPT-2 pretrained on IMDB reviews, and prompt extraction.
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

pub mod bpe;
pub mod data;
pub mod pretrain;
pub mod prompts;
pub mod sentiment;
