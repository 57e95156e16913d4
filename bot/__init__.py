"""Live side of the progressive-distillation system: data plane, regime routing, tiers, paper trading."""
