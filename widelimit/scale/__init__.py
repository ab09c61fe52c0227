"""Scaling helpers: blocked kernel computation under a memory budget."""
from widelimit.scale.blocking import plan_blocks, run_blocked

__all__ = ["plan_blocks", "run_blocked"]
