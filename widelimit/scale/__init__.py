"""Scaling helpers: blocked kernel computation under a memory budget (blocks of input
pairs, and bands of spatial positions when one pair does not fit)."""
from widelimit.scale.blocking import plan_blocks, run_blocked
from widelimit.scale.spatial import spatial_kernel

__all__ = ["plan_blocks", "run_blocked", "spatial_kernel"]
