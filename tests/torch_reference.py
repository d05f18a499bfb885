"""A small PyTorch implementation of the official I-JEPA, V-JEPA and V-JEPA 2 architectures, for parity tests.

Written from the documented behaviour of the reference repositories (../shared/reference/ijepa_vjepa.md,
sections 1-3 and 10), independently of jepa.models: its own sin-cos tables, RoPE and predictor batching, so
that a test that converts its state dicts and compares forward passes checks the converter and our models
against the spec rather than against themselves. Only what the tests need: no drop-path, no interpolation of
tables.

  ViT          Conv2d / Conv3d patch embedding, `pos_embed` parameter [1, N, D] (requires_grad False) added
               before masking (I-JEPA: column-first 2D; V-JEPA: [t | h | w] uniform-power 3D), or RoPE
               (V-JEPA 2: tiled frequencies, positions from the actual grid), pre-LN blocks (eps 1e-6, fused
               qkv, exact GELU), final LayerNorm.
  Predictor    predictor_embed, mask_token (I-JEPA) or mask_tokens.{k} (V-JEPA), predictor_pos_embed (or
               RoPE), predictor_blocks, predictor_norm, predictor_proj; targets repeated mask-major
               ([M*B, K, D]); V-JEPA 2 sorts [context ; targets] by position before its RoPE blocks.
  Wrappers     `DDP` (child `module`) and `MultiMaskWrapper` (child `backbone`) give the official key prefixes
               `module.` and `module.backbone.`.
"""
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


# --- fixed tables (NumPy float64, as the references) --------------------------------------------------------
def sincos_1d(dim, pos):
  omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
  omega = 1.0 / 10000**omega
  out = np.einsum("m,d->md", np.asarray(pos, np.float64).reshape(-1), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def ijepa_2d_table(dim, side):
  """I-JEPA: meshgrid(w, h) puts the column index in the first half of the channels."""
  grid_h = np.arange(side, dtype=np.float64)
  grid_w = np.arange(side, dtype=np.float64)
  grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # [2, H, W]: grid[0] = column, grid[1] = row
  emb_first = sincos_1d(dim // 2, grid[0])
  emb_second = sincos_1d(dim // 2, grid[1])
  return np.concatenate([emb_first, emb_second], axis=1)


def vjepa_3d_table(dim, depth, side, uniform_power=True):
  """V-JEPA: [t | h | w], each 2*ceil(dim/6) channels with uniform power, truncated to dim."""
  grid_d, grid_h, grid_w = np.meshgrid(np.arange(depth, dtype=np.float64), np.arange(side, dtype=np.float64),
                                       np.arange(side, dtype=np.float64), indexing="ij")
  if uniform_power:
    h_dim = w_dim = d_dim = int(np.ceil(dim / 6) * 2)
  else:
    h_dim = w_dim = int(np.ceil(dim / 4))
    d_dim = dim // 2
  emb = np.concatenate([sincos_1d(d_dim, grid_d), sincos_1d(h_dim, grid_h), sincos_1d(w_dim, grid_w)], axis=1)
  return emb[:, :dim]


def apply_masks(x, masks):
  """x [B, N, D], masks: list of [B, K] index tensors -> [len(masks) * B, K, D], mask-major."""
  return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks], dim=0)


# --- RoPE (V-JEPA 2) ----------------------------------------------------------------------------------------
def rotate_queries_or_keys(x, pos):
  """x [B, heads, N, d], pos [B, 1 or heads, N]: the reference form, cos/sin *tiled* over the pairs."""
  d = x.size(-1)
  omega = torch.arange(d // 2, dtype=x.dtype, device=x.device) / (d / 2.0)
  omega = 1.0 / 10000**omega
  freq = pos.unsqueeze(-1).to(x.dtype) * omega  # [..., N, d/2]
  emb_sin = freq.sin().repeat(1, 1, 1, 2)  # tiled: [θ0 … θ(d/2-1), θ0 … θ(d/2-1)]
  emb_cos = freq.cos().repeat(1, 1, 1, 2)
  y = x.unflatten(-1, (-1, 2))
  y1, y2 = y.unbind(dim=-1)
  y = torch.stack((-y2, y1), dim=-1).flatten(-2)
  return x * emb_cos + y * emb_sin


# --- blocks -------------------------------------------------------------------------------------------------
class MLP(nn.Module):

  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
  """Fused qkv split as (3, heads, head_dim); with `use_rope`, V-JEPA 2's 3D RoPE on q and k."""

  def __init__(self, dim, heads, use_rope=False):
    super().__init__()
    self.heads = heads
    self.head_dim = dim // heads
    self.use_rope = use_rope
    self.d_dim = int(2 * ((self.head_dim // 3) // 2))
    self.qkv = nn.Linear(dim, 3 * dim, bias=True)
    self.proj = nn.Linear(dim, dim)

  def _rope(self, t, pos):
    d = self.d_dim
    parts = [rotate_queries_or_keys(t[..., i * d:(i + 1) * d], pos[i]) for i in range(3)]
    return torch.cat([*parts, t[..., 3 * d:]], dim=-1)

  def forward(self, x, positions=None):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, hd]
    if self.use_rope:
      pos = [p.unsqueeze(1) for p in positions]  # (t, h, w), each [B, 1, N]
      q, k = self._rope(q, pos), self._rope(k, pos)
    x = F.scaled_dot_product_attention(q, k, v)
    return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):

  def __init__(self, dim, heads, mlp_ratio=4.0, use_rope=False):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, heads, use_rope=use_rope)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = MLP(dim, int(dim * mlp_ratio))

  def forward(self, x, positions=None):
    x = x + self.attn(self.norm1(x), positions)
    return x + self.mlp(self.norm2(x))


def separate_positions(ids, grid_hw):
  """Flat raster index -> (t, h, w) integer coordinates for a grid with grid_hw = (H, W)."""
  h, w = grid_hw
  t_ids = torch.div(ids, h * w, rounding_mode="floor")
  h_ids = torch.div(ids - t_ids * h * w, w, rounding_mode="floor")
  w_ids = ids - t_ids * h * w - h_ids * w
  return t_ids.float(), h_ids.float(), w_ids.float()


# --- encoder ------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):

  def __init__(self, dim, patch, tubelet=0):
    super().__init__()
    if tubelet:
      self.proj = nn.Conv3d(3, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
    else:
      self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
  """kind: 'ijepa' (2D, column-first table), 'vjepa' (3D uniform-power table) or 'vjepa2' (3D RoPE)."""

  def __init__(self, kind, *, image_size, patch, dim, depth, heads, mlp_ratio=4.0, num_frames=0, tubelet=2):
    super().__init__()
    self.kind = kind
    self.patch, self.tubelet = patch, tubelet if num_frames else 0
    self.patch_embed = PatchEmbed(dim, patch, self.tubelet)
    side = image_size // patch
    use_rope = kind == "vjepa2"
    if kind == "ijepa":
      table = ijepa_2d_table(dim, side)
    elif kind == "vjepa":
      table = vjepa_3d_table(dim, num_frames // tubelet, side)
    if use_rope:
      self.pos_embed = None
    else:
      self.pos_embed = nn.Parameter(torch.from_numpy(table).float().unsqueeze(0), requires_grad=False)
    self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, use_rope=use_rope) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)

  def forward(self, x, masks=None):
    """x [B, 3, H, W] or [B, 3, T, H, W]; masks: optional [B, K] indices of the kept tokens."""
    grid_hw = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
    x = self.patch_embed(x)
    if self.pos_embed is not None:
      x = x + self.pos_embed
    b, n, _ = x.shape
    ids = torch.arange(n).unsqueeze(0).expand(b, -1)
    if masks is not None:
      x = apply_masks(x, [masks])
      ids = masks
    positions = separate_positions(ids, grid_hw) if self.kind == "vjepa2" else None
    for blk in self.blocks:
      x = blk(x, positions)
    return self.norm(x)


# --- predictor ----------------------------------------------------------------------------------------------
class Predictor(nn.Module):
  """The reference `VisionTransformerPredictor` of each family, at any (tiny) size."""

  def __init__(self, kind, *, grid, embed_dim, dim, depth, heads, num_mask_tokens=1):
    super().__init__()
    self.kind = kind
    self.grid = grid
    self.predictor_embed = nn.Linear(embed_dim, dim, bias=True)
    if kind == "ijepa":
      self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
    else:
      tokens = [nn.Parameter(torch.zeros(1, 1, dim)) for _ in range(num_mask_tokens)]
      self.mask_tokens = nn.ParameterList(tokens)
    if kind == "ijepa":
      self.predictor_pos_embed = nn.Parameter(torch.from_numpy(ijepa_2d_table(dim, grid[-1])).float()[None],
                                              requires_grad=False)
    elif kind == "vjepa":
      self.predictor_pos_embed = nn.Parameter(torch.from_numpy(vjepa_3d_table(dim, *grid[:2])).float()[None],
                                              requires_grad=False)
    else:
      self.predictor_pos_embed = None
    blocks = [Block(dim, heads, use_rope=kind == "vjepa2") for _ in range(depth)]
    self.predictor_blocks = nn.ModuleList(blocks)
    self.predictor_norm = nn.LayerNorm(dim, eps=1e-6)
    self.predictor_proj = nn.Linear(dim, embed_dim, bias=True)

  def forward(self, ctx, masks_x, masks_y, mask_index=0):
    """ctx [B, Kc, D] at indices masks_x [B, Kc]; masks_y: list of M [B, Kt] -> [M*B, Kt, D] (mask-major)."""
    b = ctx.size(0)
    m = len(masks_y)
    x = self.predictor_embed(ctx)
    if self.predictor_pos_embed is not None:
      x = x + apply_masks(self.predictor_pos_embed.repeat(b, 1, 1), [masks_x])
    n_ctx = x.size(1)
    token = self.mask_token if self.kind == "ijepa" else self.mask_tokens[mask_index % len(self.mask_tokens)]
    tgt = token.repeat(m * b, masks_y[0].size(1), 1)
    if self.predictor_pos_embed is not None:
      tgt = tgt + apply_masks(self.predictor_pos_embed.repeat(b, 1, 1), masks_y)
    x = x.repeat(m, 1, 1)
    x = torch.cat([x, tgt], dim=1)
    positions = None
    if self.kind == "vjepa2":
      ids = torch.cat([masks_x.repeat(m, 1), torch.cat(masks_y, dim=0)], dim=1)
      # V-JEPA 2 runs its blocks on the tokens sorted by position, then restores the order.
      order = torch.argsort(ids, dim=1)
      x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.size(-1)))
      ids = torch.gather(ids, 1, order)
      positions = separate_positions(ids, self.grid[-2:])
    for blk in self.predictor_blocks:
      x = blk(x, positions)
    x = self.predictor_norm(x)
    if self.kind == "vjepa2":
      x = torch.scatter(torch.zeros_like(x), 1, order.unsqueeze(-1).expand(-1, -1, x.size(-1)), x)
    return self.predictor_proj(x[:, n_ctx:])


# --- official checkpoint layout -----------------------------------------------------------------------------
class DDP(nn.Module):
  """Stands in for DistributedDataParallel: the child is `module`, hence the `module.` key prefix."""

  def __init__(self, module):
    super().__init__()
    self.module = module


class MultiMaskWrapper(nn.Module):
  """V-JEPA's PredictorMultiMaskWrapper / MultiMaskWrapper: the child is `backbone`."""

  def __init__(self, backbone):
    super().__init__()
    self.backbone = backbone


def official_state_dict(model, kind):
  """The state dict as the reference saves it: `module.` (I-JEPA) or `module.backbone.` (V-JEPA, V-JEPA 2)."""
  wrapped = DDP(model) if kind == "ijepa" else DDP(MultiMaskWrapper(model))
  return wrapped.state_dict()


def randomize(model, seed, scale=0.1):
  """Random values for every trainable tensor (LayerNorm scales around 1), so that no layout mix-up hides."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if not p.requires_grad:
        continue
      noise = torch.randn(p.shape, generator=gen) * scale
      p.copy_(1.0 + noise if name.endswith("norm1.weight") or name.endswith("norm2.weight")
              or name.endswith("norm.weight") else noise)
  return model


def make_models(kind, *, image_size, patch, dim, depth, heads, pred_dim, pred_depth, pred_heads, num_frames=0,
                tubelet=2, num_mask_tokens=1, seed=0):
  """(encoder, target_encoder, predictor) with random, distinct weights."""
  enc_kw = dict(image_size=image_size, patch=patch, dim=dim, depth=depth, heads=heads, num_frames=num_frames,
                tubelet=tubelet)
  encoder = randomize(VisionTransformer(kind, **enc_kw), seed)
  target = randomize(VisionTransformer(kind, **enc_kw), seed + 1)
  side = image_size // patch
  grid = (num_frames // tubelet, side, side) if num_frames else (side, side)
  predictor = randomize(Predictor(kind, grid=grid, embed_dim=dim, dim=pred_dim, depth=pred_depth,
                                  heads=pred_heads, num_mask_tokens=num_mask_tokens), seed + 2)
  return encoder, target, predictor


def save_official(path, kind, encoder, target, predictor, *, stale_pos_embed=None):
  """Writes a checkpoint file like the references' (plus optimizer-like entries the converter ignores)."""
  ckpt = {"encoder": official_state_dict(encoder, kind), "predictor": official_state_dict(predictor, kind),
          "target_encoder": official_state_dict(target, kind), "opt": {"state": {}, "param_groups": []},
          "scaler": None, "epoch": 3, "loss": 0.5, "batch_size": 8, "world_size": 1, "lr": 1e-3}
  if stale_pos_embed is not None:  # V-JEPA 2's files keep a pos_embed its RoPE model does not use.
    prefix = "module." if kind == "ijepa" else "module.backbone."
    for name in ("encoder", "target_encoder"):
      ckpt[name][prefix + "pos_embed"] = stale_pos_embed
  torch.save(ckpt, path)
  return ckpt


def to_numpy_state_dicts(ckpt):
  """{name: {key: float32 ndarray}} of a checkpoint dict (what jepa.official_weights.load_torch_checkpoint returns)."""
  return {name: {k: v.detach().float().numpy() for k, v in ckpt[name].items()}
          for name in ("encoder", "predictor", "target_encoder")}


def max_abs(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))

