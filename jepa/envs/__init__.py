"""Small pure-JAX environments for action-conditioned world models (jit- and vmap-able)."""
