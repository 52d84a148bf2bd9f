//! Model tiers: how much a model served by the grid asks of a worker, as one word that
//! `GET /v1/models` shows and people choose by. The tier follows from the memory one run of
//! the model needs (its weights are read into the run's linear memory), so it also says which
//! workers can take the model's requests: those offering at least that much memory.

use crate::Limits;
use serde::{Deserialize, Serialize};

/// A model's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModelTier {
    /// A run needs at most [`ModelTier::SMALL_MAX`]: nearly any worker, a browser tab included.
    Small,
    /// A run needs at most [`ModelTier::MEDIUM_MAX`], the most one sandbox gives a run (a
    /// 32-bit WebAssembly memory): workers with memory to spare.
    Medium,
    /// A run needs more than one sandbox can give: no worker can serve it.
    Large,
}

impl ModelTier {
    /// Most memory a run of a small model needs.
    pub const SMALL_MAX: u64 = 512 << 20;
    /// Most memory a run of a medium model needs: [`Limits::MAX_MEMORY`].
    pub const MEDIUM_MAX: u64 = Limits::MAX_MEMORY;

    /// The tier of a model whose runs need `memory_bytes`.
    pub fn for_memory(memory_bytes: u64) -> ModelTier {
        if memory_bytes <= Self::SMALL_MAX {
            ModelTier::Small
        } else if memory_bytes <= Self::MEDIUM_MAX {
            ModelTier::Medium
        } else {
            ModelTier::Large
        }
    }

    /// The most memory a run of a model of this tier needs (`None`: no bound).
    pub fn max_memory(self) -> Option<u64> {
        match self {
            ModelTier::Small => Some(Self::SMALL_MAX),
            ModelTier::Medium => Some(Self::MEDIUM_MAX),
            ModelTier::Large => None,
        }
    }
}

impl std::fmt::Display for ModelTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelTier::Small => "small",
            ModelTier::Medium => "medium",
            ModelTier::Large => "large",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tiers_have_their_bounds() {
        assert_eq!(ModelTier::for_memory(160 << 20), ModelTier::Small);
        assert_eq!(ModelTier::for_memory(512 << 20), ModelTier::Small);
        assert_eq!(ModelTier::for_memory((512 << 20) + 1), ModelTier::Medium);
        assert_eq!(ModelTier::for_memory(Limits::MAX_MEMORY), ModelTier::Medium);
        assert_eq!(
            ModelTier::for_memory(Limits::MAX_MEMORY + 1),
            ModelTier::Large
        );
        assert_eq!(
            serde_json::to_string(&ModelTier::Medium).unwrap(),
            "\"medium\""
        );
        assert_eq!(ModelTier::Large.to_string(), "large");
    }

    proptest! {
        /// More memory never means a lower tier, and a tier's bound holds its models.
        #[test]
        fn tiers_grow_with_memory(a in any::<u64>(), b in any::<u64>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(ModelTier::for_memory(lo) <= ModelTier::for_memory(hi));
            let t = ModelTier::for_memory(a);
            prop_assert!(t.max_memory().is_none_or(|max| a <= max));
        }
    }
}
