r"""EB-JEPA's action-conditioned world model as Flax NNX modules: IMPALA encoder, GRU predictor, inverse dynamics.

The networks of the world_model method (jepa/methods/world_model.py, which holds the loss, the planning
evaluator and the config checks). Frames o_t [65, 65, 2], actions a_t in R^2 (Two Rooms, jepa/envs/two_rooms.py).
The reference sizes (configs/world_model.py scales them down for CPUs):

  z_t    = LN(W flatten(relu(S_3(S_2(S_1(nrm(o_t)))))) + b)        encoder, z_t in R^D (D = latent_dim, 512)
  S_i(x) = R_i2(R_i1(maxpool_3x3/2(conv_3x3(x))))                   an IMPALA stage, channels 16 / 32 / 32
  R(x)   = relu(x + conv_3x3(relu(conv_3x3(x))))                    residual block (2 per stage); 65 -> 33 -> 17 -> 9
  zhat_{t+1} = LN(GRU(h = zhat_t, x = a_t)),  zhat_0 = z_0          predictor: the latent is the GRU's hidden
                                                                    state, the raw action its input, and LN the
                                                                    encoder's own final LayerNorm (shared)
  GRU(h, x): r = s(W_ir x + b_ir + W_hr h + b_hr), u = s(W_iz x + b_iz + W_hz h + b_hz),
             n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - u) * n + u * h          (torch.nn.GRU)
  ahat_t = MLP([z_t, z_{t+1}])                                      inverse dynamics, 2D -> 256 -> 256 -> 2

nrm is the reference's observation normaliser (per-frame min-max, then the dataset's channel mean / std,
`two_rooms.normalize_observation`), applied inside `WorldModel.encode`, so training frames and planning
observations go through the same code.

Initialisation follows PyTorch's defaults (U(+-1/sqrt(fan_in)) for convolutions, linears and biases;
U(+-1/sqrt(D)) for every GRU weight and bias), the inverse-dynamics head the reference's truncated normal (std
0.02, zero biases).

Constants: ACTION_DIM = 2 (Two Rooms' actions), IN_CHANNELS = 2 (a frame's channels: the agent's dot, the
walls), LN_EPS = 1e-5 (torch.nn.LayerNorm's default).

Source: facebookresearch/eb_jepa @ 966e61e: eb_jepa/architectures.py (ImpalaEncoder, ResnetStack, ResnetBlock,
RNNPredictor, InverseDynamicsModel); read, not copied.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jepa.envs import two_rooms
from jepa.models import conv as conv_lib

ACTION_DIM = 2
IN_CHANNELS = 2
LN_EPS = 1e-5  # torch.nn.LayerNorm's default.


# --- initialisers (PyTorch's defaults) ------------------------------------------------------------------------
def _uniform(bound):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _torch_conv(c_in, c_out, impl, rngs, dtype):
  """3x3 convolution, padding 1, with torch.nn.Conv2d's default init: weight and bias U(+-1/sqrt(9 c_in)).

  `impl` is model.conv: XLA's convolution or im2col (jepa/models/conv.py); 'auto' gathers patches for the
  first stage's conv on the 2-channel frames, where XLA's CPU convolution is slowest."""
  bound = 1.0 / np.sqrt(9 * c_in)
  return conv_lib.Conv(c_in, c_out, 3, 1, impl=impl, use_bias=True, kernel_init=_uniform(bound),
                       bias_init=_uniform(bound), dtype=dtype, rngs=rngs)


def _torch_linear(d_in, d_out, rngs, dtype=None):
  bound = 1.0 / np.sqrt(d_in)
  return nnx.Linear(d_in, d_out, kernel_init=_uniform(bound), bias_init=_uniform(bound), dtype=dtype, rngs=rngs)


# --- encoder --------------------------------------------------------------------------------------------------
class ResidualBlock(nnx.Module):
  """relu(x + conv(relu(conv(x)))) (eb_jepa ResnetBlock)."""

  def __init__(self, channels, *, conv, dtype, rngs):
    self.conv1 = _torch_conv(channels, channels, conv, rngs, dtype)
    self.conv2 = _torch_conv(channels, channels, conv, rngs, dtype)

  def __call__(self, x):
    return nnx.relu(x + self.conv2(nnx.relu(self.conv1(x))))


class ImpalaStage(nnx.Module):
  """conv 3x3 -> max-pool 3x3 stride 2 (padding 1, so 65 -> 33) -> residual blocks (eb_jepa ResnetStack)."""

  def __init__(self, c_in, c_out, num_blocks, *, conv, dtype, rngs):
    self.conv = _torch_conv(c_in, c_out, conv, rngs, dtype)
    self.blocks = nnx.List([ResidualBlock(c_out, conv=conv, dtype=dtype, rngs=rngs) for _ in range(num_blocks)])

  def __call__(self, x):
    x = nnx.max_pool(self.conv(x), window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for block in self.blocks:
      x = block(x)
    return x


def pooled_side(size, num_stages):
  """Spatial side after `num_stages` max-pools 3x3 / 2 with padding 1: s -> floor((s - 1) / 2) + 1."""
  for _ in range(num_stages):
    size = (size - 1) // 2 + 1
  return size


class ImpalaEncoder(nnx.Module):
  """Frames [..., 65, 65, 2] (already normalised) -> latents [..., D]: stages, relu, flatten, linear, LayerNorm."""

  def __init__(self, channels, num_blocks, latent_dim, *, img_size, conv="auto", dtype, rngs):
    widths = (IN_CHANNELS,) + tuple(channels)
    self.stages = nnx.List([ImpalaStage(widths[i], widths[i + 1], num_blocks, conv=conv, dtype=dtype, rngs=rngs)
                            for i in range(len(channels))])
    flat = pooled_side(img_size, len(channels)) ** 2 * widths[-1]
    self.proj = _torch_linear(flat, latent_dim, rngs, dtype)
    # The final LayerNorm, shared with the predictor (eb_jepa: RNNPredictor(final_ln=encoder.final_ln)).
    self.norm = nnx.LayerNorm(latent_dim, epsilon=LN_EPS, rngs=rngs)

  def __call__(self, x):
    lead = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    for stage in self.stages:
      x = stage(x)
    x = nnx.relu(x).reshape(x.shape[0], -1)
    z = self.norm(self.proj(x).astype(jnp.float32))
    return z.reshape(lead + z.shape[-1:])


# --- predictor and inverse dynamics ---------------------------------------------------------------------------
class GRU(nnx.Module):
  """torch.nn.GRU's cell (gates r, z, n in that order; both biases), weights and biases U(+-1/sqrt(D))."""

  def __init__(self, input_dim, hidden_dim, *, rngs):
    bound = 1.0 / np.sqrt(hidden_dim)
    self.input = nnx.Linear(input_dim, 3 * hidden_dim, kernel_init=_uniform(bound), bias_init=_uniform(bound),
                            rngs=rngs)
    self.hidden = nnx.Linear(hidden_dim, 3 * hidden_dim, kernel_init=_uniform(bound), bias_init=_uniform(bound),
                             rngs=rngs)

  def __call__(self, h, x):
    xr, xz, xn = jnp.split(self.input(x), 3, axis=-1)
    hr, hz, hn = jnp.split(self.hidden(h), 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    u = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1.0 - u) * n + u * h


class InverseDynamics(nnx.Module):
  """[z_t, z_{t+1}] -> a_t: Linear(2D, H), relu, Linear(H, H), relu, Linear(H, 2); trunc-normal 0.02, bias 0."""

  def __init__(self, latent_dim, hidden, *, rngs):
    init = nnx.initializers.truncated_normal(stddev=0.02)
    zeros = nnx.initializers.zeros_init()
    self.fc1 = nnx.Linear(2 * latent_dim, hidden, kernel_init=init, bias_init=zeros, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, hidden, kernel_init=init, bias_init=zeros, rngs=rngs)
    self.fc3 = nnx.Linear(hidden, ACTION_DIM, kernel_init=init, bias_init=zeros, rngs=rngs)

  def __call__(self, z_t, z_next):
    h = nnx.relu(self.fc1(jnp.concatenate([z_t, z_next], axis=-1)))
    return self.fc3(nnx.relu(self.fc2(h)))


# --- the whole model ------------------------------------------------------------------------------------------
class WorldModel(nnx.Module):
  """Encoder, GRU predictor (`dynamics`, sharing the encoder's final LayerNorm) and inverse-dynamics head."""

  def __init__(self, encoder, dynamics, idm):
    self.encoder = encoder
    self.dynamics = dynamics
    self.idm = idm

  def encode(self, frames):
    """Raw frames [..., 65, 65, 2] (floats in [0, 1]) -> latents [..., D] (normalised here, then encoded)."""
    return self.encoder(two_rooms.normalize_observation(frames))

  def step(self, z, action):
    """One predicted step: LN(GRU(h = z, x = action)) with the encoder's LayerNorm."""
    return self.encoder.norm(self.dynamics(z, action.astype(jnp.float32)))

  def rollout(self, z0, actions):
    """z0 [..., D], actions [..., K, A] -> predicted latents [..., K, D] (zhat_1..zhat_K), autoregressively."""
    def body(z, a):
      z = self.step(z, a)
      return z, z
    _, zs = jax.lax.scan(body, z0, jnp.moveaxis(actions, -2, 0))
    return jnp.moveaxis(zs, 0, -2)
