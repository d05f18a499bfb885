"""Cutting XLA's CPU fusion of a residual network's backward pass at every block.

The residual stream's gradient is a chain of element-wise adds and normalisation backward terms that runs
through every block. XLA's CPU backend fuses that whole chain into each weight gradient's operand and
recomputes it there, so the backward pass does O(depth^2) element-wise work. Measured on 2 cores (AVX-512
Xeon) on I-JEPA's CIFAR recipe (ViT 192 x 6): these fusions took ~300 ms of a ~1.5 s step; cut at every block,
the context encoder's forward + backward alone fell from ~0.95 s to ~0.57 s (cores shared with a training
run), and the whole step, timed interleaved with the uncut one in one process, from 1.526 to 1.416 s on
quiet cores (1.08x; 3.1 -> 2.4 s, 1.3x, with the cores shared at load ~4, where the recomputation's memory
traffic costs more). The gradients are the same up to float reassociation. The ViT and the predictor use it
(`vit.run_blocks`); the ResNet does not: its step was 0.94x as fast with the cut (interleaved, quiet).

`materialise_cotangent` is the identity whose gradient passes through `lax.cond`: a conditional is the one
cheap op XLA never fuses across (an optimisation barrier is removed before fusion on CPU), so the cotangent
is computed once, into memory. Both branches return it unchanged; the second, taken only when its first
element is NaN, propagates the NaN. On GPUs a conditional costs a host round trip, hence `setting('auto')`
turns the cut on only when JAX's default backend is the CPU.
"""
import jax

from jepa.errors import ConfigError

SETTINGS = ("auto", "on", "off")


@jax.custom_vjp
def materialise_cotangent(x: jax.Array) -> jax.Array:
  """The identity; its gradient is computed once, into memory, before anything uses it."""
  return x


def _forward(x):
  return x, None


def _backward(_, g):
  first = g.reshape(-1)[0]
  return (jax.lax.cond(first == first, lambda g: g, lambda g: g + 0.0 * g, g),)


materialise_cotangent.defvjp(_forward, _backward)


def setting(value: str) -> bool:
  """model.backward_cut as the models take it: 'auto' (on when JAX's default backend is the CPU), 'on', 'off'."""
  if value not in SETTINGS:
    raise ConfigError(f"model.backward_cut={value!r} is unknown; use 'auto' (on for CPU), 'on' or 'off'")
  return value == "on" or (value == "auto" and jax.default_backend() == "cpu")
