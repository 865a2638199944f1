//! Policy and reward-model plugin points: `[policy] type = "…"` and `[reward-model] type = "…"`.
//!
//! A config knows how to validate itself and how to build the runtime model(s) it supports. The
//! runtime interfaces differ by domain (an MLP actor-critic over observation vectors for classic
//! control, a causal LM over token ids for text), so each config exposes itself through
//! [`PolicyConfig::as_any`] and the trainer of each domain asks for what it can drive; asking a
//! text policy to drive CartPole is a config error naming the key, never a panic.

use crate::error::Result;
use std::any::Any;
use std::fmt::Debug;

/// Config of a policy plugin.
#[typetag::serde(tag = "type")]
pub trait PolicyConfig: Debug + Send + Sync {
    /// Check values; errors name keys relative to the `[policy]` table.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// The concrete config, for the trainer that knows its type.
    fn as_any(&self) -> &dyn Any;
}

/// Config of a reward-model plugin.
#[typetag::serde(tag = "type")]
pub trait RewardModelConfig: Debug + Send + Sync {
    /// Check values; errors name keys relative to the `[reward-model]` table.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// The concrete config, for the trainer that knows its type.
    fn as_any(&self) -> &dyn Any;
}
