"""Named parts of the input pipeline: a registry per kind, so a config names what it uses.

A new temporal sampler, train crop or augmentation is a function registered under a name
(`@SAMPLERS.register('dense')` in data/sampling.py, `@CROP_BOXES.register(...)` and
`@AUGMENTATIONS.register(...)` in data/augment.py); a config selects it by that name
(`config.data.temporal_sampling`, `config.data.train_crop`, `config.data.train_augmentations`)
and the part reads its numbers from `config.data`, whose defaults (a new part's new fields too)
are in configs/base.py. Nothing else is edited (big_vision's op registry and DMVR's builders are
the models).
"""

from typing import Callable, Dict, Tuple

from data import errors


class UnknownOpError(errors.DataError, ValueError):
  """A config names a part that is not registered (the message lists the names there are)."""


class Registry:
  """Functions of one kind of pipeline part, by name."""

  def __init__(self, kind: str, field: str):
    self.kind = kind  # e.g. 'temporal sampler'
    self.field = field  # the config field that names one, e.g. 'config.data.temporal_sampling'
    self._parts: Dict[str, Callable] = {}

  def register(self, name: str) -> Callable[[Callable], Callable]:
    def add(fn: Callable) -> Callable:
      if name in self._parts:
        raise ValueError(f'{self.kind} {name!r} is registered twice.')
      self._parts[name] = fn
      return fn
    return add

  def get(self, name: str) -> Callable:
    if name not in self._parts:
      raise UnknownOpError(f'{self.field} must be one of {self.names()}, got {name!r}.')
    return self._parts[name]

  def names(self) -> Tuple[str, ...]:
    return tuple(sorted(self._parts))

  def __contains__(self, name: str) -> bool:
    return name in self._parts


# Temporal samplers whose clips hold a video's frames there are, padded to num_frames and masked:
# the model is given each clip's count of real frames (`num_valid`). Here, beside the registries,
# because code that must not load TensorFlow (the model's engine) checks it too.
PADDED_SAMPLERS = ('all_frames',)
# The config.data fields each temporal sampler (data/sampling.py) reads beside num_frames and
# eval_num_clips, and each train crop (data/augment.py) beside crop_size: an override of another
# one's field changes nothing (main.py refuses it; tsn takes one frame per segment, no stride).
# Parts registered elsewhere are not checked.
SAMPLER_FIELDS = {'dense': ('frame_stride',), 'pyslowfast': ('frame_stride', 'target_fps'),
                  'tsn': (), 'all_frames': ('frame_stride', 'all_frames_trim_fraction')}
CROP_FIELDS = {'short_side_jitter': ('train_min_scale', 'train_max_scale'),
               'inception': ('inception_area_range', 'inception_aspect_range'),
               'tsm_multiscale': ('tsm_scales', 'tsm_max_distort', 'tsm_more_fix_crop')}


def pads_frames(data_config) -> bool:
  """Whether the config's sampler gives variable-length clips that are padded and masked."""
  return data_config.temporal_sampling in PADDED_SAMPLERS
