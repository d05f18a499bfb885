"""The interface every method implements; the training loop only calls these.

A method says what differs between JEPAs and nothing else:
  - `init_model(rngs)`: the trained model (an nnx.Module; e.g. encoder + predictor, or backbone + projector);
  - `ema_target`: the attribute name of the submodule that an EMA target follows (`"encoder"`), or None for
    methods without a teacher (LeJEPA); the loop keeps the EMA copy and passes it to `loss` as `target`;
  - `example_fn(train)`: the per-example data transform (decode → augment → views/masks), run in the grain
    pipeline with a per-example NumPy generator;
  - `loss(model, target, batch, rng)`: (scalar loss, dict of scalar metrics), built from `jepa.losses`;
  - `features(model, target, images)`: frozen features for the probes (no gradient): pooled [B, F], or tokens
    [B, N, D] (the linear probe average-pools them; the attentive probe needs them);
  - `probes`: which probes evaluate the method, from 'linear' and 'attentive' (jepa/train.py `PROBES`);
  - `validate()`: method-specific config checks that raise one-line ConfigErrors;
  - `extra_evaluations(trainer, state)`: the method's own evaluators (IWM: MRR), {name: value}, logged by
    Trainer.evaluate beside the probes; none by default.
"""
import abc

import numpy as np

from jepa import schedules
from jepa.errors import ConfigError  # noqa: F401  (re-exported for methods)
from jepa.data import augment


class Method(abc.ABC):
  """Base class: holds the config and the pieces every image method shares."""

  ema_target = None  # Name of the submodule followed by the EMA target, or None.
  probes = ("linear",)  # Probes run by Trainer.evaluate on `features`.

  def __init__(self, config):
    self.config = config

  # --- the method's own parts -------------------------------------------------------------------------------
  @abc.abstractmethod
  def init_model(self, rngs):
    """Returns the trained nnx.Module."""

  @abc.abstractmethod
  def example_fn(self, train):
    """Returns fn(example, rng) -> dict of NumPy arrays (one training example)."""

  @abc.abstractmethod
  def loss(self, model, target, batch, rng):
    """Returns (loss, metrics) for a batch; `target` is the EMA copy of `ema_target` or None."""

  @abc.abstractmethod
  def features(self, model, target, images):
    """Returns frozen features for the probes: [B, F], or tokens [B, N, D]."""

  def validate(self):
    """Method-specific checks; the base has none."""

  def extra_evaluations(self, trainer, state):
    """{name: float} from the method's own evaluators on `state` (a jepa.train.Trainer state); none here."""
    del trainer, state
    return {}

  # --- shared helpers ---------------------------------------------------------------------------------------
  def schedules(self, num_steps):
    return schedules.from_config(self.config.optim, self.config.ema, num_steps)

  def eval_example_fn(self):
    """Deterministic eval transform shared by image methods: resize + centre crop, normalise."""
    data = self.config.data

    def fn(example, rng):
      del rng
      image = augment.to_rgb(example["image"])
      image = augment.center_crop_resize(image, data.image_size)
      image = augment.normalize(image, data.mean, data.std)
      return {"image": image.astype(np.float32), "label": np.int32(example["label"])}

    return fn
