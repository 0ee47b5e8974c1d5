"""The named pipeline parts on hand-made tensors: temporal samplers, crop boxes, fused decode,
augmentations, and their selection by config."""

import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO_ROOT
from conftest import TESTDATA
from conftest import subprocess_env
from configs import base
from data import augment
from data import convert
from data import ops
from data import pipeline
from data import records
from data import sampling
from data import video_io
from salinet_jax import inputs


def _data(**fields):
  """The base config's data fields with `fields` replaced."""
  data = base.get_base_config().data
  data.update(fields)
  return data


def _seed(i):
  return tf.constant([i, 7 * i + 1], tf.int64)


def _frames(n):
  return {'frames_jpeg': tf.constant([str(i).encode() for i in range(n)])}


def _ints(tensor):
  return tensor.numpy().astype(int)


# ----------------------------------------------------------------------------- dense
def test_a_train_clip_starts_anywhere_from_the_first_frame_to_the_last_whole_clip():
  """Mutation audit: a span one frame too long (the last start never drawn) passed every test."""
  starts = set()
  for i in range(400):
    out = sampling.sample_random_clip(_frames(20), num_frames=4, stride=3,
                                      seed=tf.constant([i, 3], tf.int64))
    indices = _ints(out['frames_jpeg'])[0]
    np.testing.assert_array_equal(indices, indices[0] + 3 * np.arange(4))
    starts.add(int(indices[0]))
  assert starts == set(range(20 - 10 + 1))  # a clip spans 10 frames


def test_a_single_test_clip_is_the_centre_one():
  """Mutation audit: one test clip taken from the start passed every test."""
  out = sampling.sample_uniform_clips(_frames(20), num_frames=4, stride=2, num_clips=1)
  np.testing.assert_array_equal(_ints(out['frames_jpeg']), [[6, 8, 10, 12]])


def test_the_centre_crop_offset_rounds_up_like_pyslowfast():
  """Mutation audit: an offset rounded down passed every test. PySlowFast's uniform_crop takes
  ceil((size - crop) / 2)."""
  video = tf.reshape(tf.range(9 * 12, dtype=tf.float32), [1, 1, 9, 12, 1])
  video = tf.tile(video, [1, 1, 1, 1, 3])
  out = augment.spatial_test_crops({'video': video}, short_side=9, crop_size=8, num_crops=1,
                                     rounding='pyslowfast', resize_filter='bilinear')
  assert out['video'].shape == (1, 1, 8, 8, 3)
  assert float(out['video'][0, 0, 0, 0, 0]) == 1 * 12 + 2  # rows ceil(1/2) = 1, columns 2


def test_each_centre_rounding_is_its_reference_s():
  """PySlowFast's uniform_crop takes ceil(margin / 2); torchvision's CenterCrop (the S2DNet and
  TSM releases) int(round(margin / 2)), Python's round, which takes a half to the even side."""
  margins = tf.range(0, 300)
  up = augment.CENTRE_ROUNDINGS.get('pyslowfast')(margins).numpy().tolist()
  even = augment.CENTRE_ROUNDINGS.get('torchvision')(margins).numpy().tolist()
  assert up == [math.ceil(m / 2) for m in range(300)]
  assert even == [int(round(m / 2.)) for m in range(300)]
  assert even[117] == 58 and up[117] == 59  # a 4:3 frame at short side 256 (341 wide), 224


def test_the_s2dnet_test_crop_of_a_4_3_frame_starts_where_torchvision_s_does():
  """The S2DNet releases cut the test view with GroupCenterCrop(224) (torchvision's CenterCrop)
  from frames of short side 256: a 4:3 video's are 341 wide, and the crop starts at column
  round(58.5) = 58. Every test crop here took PySlowFast's ceil, column 59 (views audit)."""
  from configs import mini_kinetics_s2dnet  # pylint: disable=g-import-not-at-top
  pixels = np.random.default_rng(0).integers(0, 256, (256, 341, 3), dtype=np.uint8)
  jpeg = video_io.encode_jpeg(pixels, 95)
  frame = records.decode_frame(tf.constant(jpeg)).numpy()
  for stage in mini_kinetics_s2dnet.STAGES:
    data = mini_kinetics_s2dnet.get_config(stage).data
    view = augment.eval_views({'frames_jpeg': tf.constant([[jpeg]])}, data)['video'].numpy()
    columns = [x for x in range(341 - 224 + 1)
               if np.array_equal(view[0, 0], frame[16:240, x:x + 224])]
    assert columns == [58], (stage, columns)


def test_an_unknown_centre_rounding_is_named_before_any_reading():
  data = _data(eval_crop_rounding='nearest')
  with pytest.raises(ops.UnknownOpError, match=r"^config\.data\.eval_crop_rounding must be one "
                     r"of \('pyslowfast', 'torchvision'\), got 'nearest'\.$"):
    pipeline.check_eval_views(data)


def _pillow_resize(frame, height, width):
  return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def _real_frame(height, width):
  """The first frame of a real video (fight_surv fi001, 360 x 480) resized by Pillow to
  height x width and stored as a JPEG: (the JPEG, the frame it decodes to)."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(TESTDATA / 'real_clips' / 'fight_surv' / 'fight' / 'fi001.mp4')) as video:
    frame = next(video.decode(video=0)).to_ndarray(format='rgb24')
  if frame.shape[:2] != (height, width):
    frame = _pillow_resize(frame, height, width)
  jpeg = video_io.encode_jpeg(frame, 95)
  return jpeg, records.decode_frame(tf.constant(jpeg)).numpy()


def _levels_apart(a, b):
  return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))


@pytest.mark.parametrize('size', [(224, 224), (256, 341), (252, 336), (468, 624)])
def test_the_pil_bilinear_filter_resizes_as_pillow_does(size):
  """TSM's transforms, which S2DNet trains (GroupMultiScaleCrop) and tests (GroupScale) with,
  resize with Pillow's BILINEAR: shrinking, its triangle widens to cover every source pixel under
  an output pixel. A real 360 x 480 frame shrunk to each size (and enlarged, the last) is
  Pillow's to 1 level; 'bilinear' (PySlowFast's interpolate) samples the 2 x 2 nearest pixels
  and differs by tens of levels where the frame has edges (views audit: mean 1.42 at 224)."""
  _, frame = _real_frame(360, 480)
  pillow = _pillow_resize(frame, *size)
  resize = augment.RESIZE_FILTERS.get('pil_bilinear')
  ours = augment.to_pixels(resize(tf.constant(frame[None], tf.float32), size))[0]
  apart = _levels_apart(ours, pillow)
  assert apart.max() <= 1 and apart.mean() < 0.2, (apart.max(), apart.mean())
  plain = augment.RESIZE_FILTERS.get('bilinear')(tf.constant(frame[None], tf.float32), size)
  if size[0] < 360:
    assert _levels_apart(augment.to_pixels(plain)[0], pillow).max() > 20


def test_the_bilinear_filter_resizes_as_torch_interpolate_does():
  """PySlowFast scales frames with torch.nn.functional.interpolate (bilinear, corners not
  aligned), in its short-side jitter and its test resize."""
  torch = pytest.importorskip('torch', reason='torch (requirements-test.txt) is not installed')
  _, frame = _real_frame(360, 480)
  for size in ((224, 224), (256, 341), (468, 624)):
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(frame).permute(2, 0, 1)[None].double(), size=size, mode='bilinear',
        align_corners=False)[0].permute(1, 2, 0).numpy()
    ours = augment.RESIZE_FILTERS.get('bilinear')(tf.constant(frame[None], tf.float32), size)
    np.testing.assert_allclose(ours[0].numpy(), reference, atol=5e-3)  # float32 weights


def test_the_s2dnet_test_view_of_larger_frames_is_shrunk_as_pillow_shrinks_them():
  """TSM extracts Kinetics frames 331 px high (tools/vid2img_kinetics.py); S2DNet's test view
  is GroupScale(256), Pillow's BILINEAR, then GroupCenterCrop(224). Each S2DNet stage's test
  view of such a real 4:3 frame is Pillow's to 1 level (it was up to 13 levels apart, 0.55 on
  average)."""
  from configs import mini_kinetics_s2dnet  # pylint: disable=g-import-not-at-top
  jpeg, frame = _real_frame(331, 441)
  pillow = _pillow_resize(frame, 256, 341)[16:240, 58:282]
  for stage in mini_kinetics_s2dnet.STAGES:
    data = mini_kinetics_s2dnet.get_config(stage).data
    view = augment.eval_views({'frames_jpeg': tf.constant([[jpeg]])}, data)['video'][0, 0]
    apart = _levels_apart(view, pillow)
    assert apart.max() <= 1 and apart.mean() < 0.2, (stage, apart.max(), apart.mean())


@pytest.mark.parametrize('on_device', [False, True])
def test_an_s2dnet_train_crop_larger_than_224_is_shrunk_as_pillow_shrinks_it(on_device):
  """GroupMultiScaleCrop cuts a crop of 1, .875, .75 or .66 of the short side and resizes it to
  224 with Pillow's BILINEAR: from frames of short side 256 its largest crop shrinks, from
  TSM's 331 px frames most do. The whole 256 x 256 frame as the crop (scale 1 only) comes out
  as Pillow shrinks it, resized on the host or with `train_resize_on_device` (it was up to 18
  levels apart, 0.62 on average)."""
  from configs import mini_kinetics_s2dnet  # pylint: disable=g-import-not-at-top
  jpeg, frame = _real_frame(256, 256)
  data = mini_kinetics_s2dnet.get_config('warmup').data
  data.update(dict(tsm_scales=(1.0,), train_augmentations=(), num_frames=1,
                   train_resize_on_device=on_device))
  clip = augment.train_clip({'frames_jpeg': tf.constant([[jpeg]])}, data, _seed(3))['video']
  apart = _levels_apart(clip[0, 0], _pillow_resize(frame, 224, 224))
  assert apart.max() <= 1 and apart.mean() < 0.2, (apart.max(), apart.mean())


def test_an_unknown_resize_filter_is_named_before_any_reading():
  message = (r"^config\.data\.resize_filter must be one of \('bilinear', 'pil_bilinear'\), "
             r"got 'bicubic'\.$")
  data = _data(resize_filter='bicubic')
  with pytest.raises(ops.UnknownOpError, match=message):
    pipeline.check_eval_views(data)
  with pytest.raises(ops.UnknownOpError, match=message):
    pipeline.check_train_clips(data)


def test_three_test_crops_of_a_square_frame_run_left_to_right_like_pyslowfast():
  """PySlowFast's uniform_crop takes a square frame's three crops along its width (mutation
  audit: top/centre/bottom passed every test)."""
  video = tf.reshape(tf.range(4 * 4, dtype=tf.float32), [1, 1, 4, 4, 1]) * tf.ones([3])
  out = augment.spatial_test_crops({'video': video}, short_side=4, crop_size=2, num_crops=3,
                                     rounding='pyslowfast', resize_filter='bilinear')
  corners = [int(out['video'][k, 0, 0, 0, 0]) for k in range(3)]
  assert corners == [1 * 4 + 0, 1 * 4 + 1, 1 * 4 + 2]  # row 1 (the centre), columns 0, 1, 2


def test_three_test_crops_of_a_portrait_frame_run_top_to_bottom():
  """Mutation audit: a portrait frame cut left/centre/right (all three crops near the centre
  row) passed every test; only landscape and square frames were tried."""
  video = tf.reshape(tf.range(6 * 4, dtype=tf.float32), [1, 1, 6, 4, 1]) * tf.ones([3])
  out = augment.spatial_test_crops({'video': video}, short_side=4, crop_size=2, num_crops=3,
                                     rounding='pyslowfast', resize_filter='bilinear')
  corners = [int(out['video'][k, 0, 0, 0, 0]) for k in range(3)]
  assert corners == [0 * 4 + 1, 2 * 4 + 1, 4 * 4 + 1]  # rows 0, 2, 4; column 1 (the centre)


def test_resize_short_side_floors_the_long_side_of_either_orientation():
  """PySlowFast and torchvision floor long * short_side / short (mutation audit: a long side
  rounded up passed every test, whose frames were never resized)."""
  frames = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 7, 10, 3)), tf.float32)
  for video, expected_hw in ((frames, (4, 5)), (tf.transpose(frames, [0, 2, 1, 3]), (5, 4))):
    resized = augment.resize_short_side(video, 4, resize_filter='bilinear')  # 10 * 4 / 7 = 5.7 px
    np.testing.assert_allclose(resized.numpy(), tf.image.resize(video, expected_hw).numpy())


# ----------------------------------------------------------------------------- TSN
def test_tsn_test_views_take_segment_centres():
  out = sampling.sample_tsn_segments(_frames(20), num_segments=4, train=False)
  np.testing.assert_array_equal(_ints(out['frames_jpeg']), [[2, 7, 12, 17]])
  out = sampling.sample_tsn_segments(_frames(20), num_segments=4, train=False, num_clips=2)
  np.testing.assert_array_equal(_ints(out['frames_jpeg']), [[1, 6, 11, 16], [3, 8, 13, 18]])
  # 10-frame segments, where a position off the centre floors to another frame (mutation audit:
  # views at (k + 0.4) / K passed, as 5-frame segments floor them to the same frames).
  out = sampling.sample_tsn_segments(_frames(40), num_segments=4, train=False)
  np.testing.assert_array_equal(_ints(out['frames_jpeg']), [[5, 15, 25, 35]])
  out = sampling.sample_tsn_segments(_frames(40), num_segments=4, train=False, num_clips=3)
  np.testing.assert_array_equal(_ints(out['frames_jpeg'])[:, 0], [1, 5, 8])  # 10 x (1, 3, 5) / 6


def test_tsn_train_takes_one_random_frame_inside_each_segment():
  seen = set()
  for i in range(60):
    out = sampling.sample_tsn_segments(_frames(23), num_segments=4, train=True, seed=_seed(i))
    indices = _ints(out['frames_jpeg'])[0]
    assert out['frames_jpeg'].shape == (1, 4)
    for k, index in enumerate(indices):
      assert int(np.floor(k * 23 / 4)) <= index < int(np.ceil((k + 1) * 23 / 4))
    seen.add(tuple(indices))
  assert len(seen) > 20  # random, not fixed
  # Each segment draws its own position (mutation audit: one position shared by all passed).
  offsets = [tuple(_ints(sampling.sample_tsn_segments(_frames(40), num_segments=4, train=True,
                                                      seed=_seed(i))['frames_jpeg'])[0]
                   - 10 * np.arange(4)) for i in range(10)]
  assert any(len(set(row)) > 1 for row in offsets)


def test_tsn_short_videos_repeat_frames():
  out = sampling.sample_tsn_segments(_frames(3), num_segments=8, train=False)
  indices = _ints(out['frames_jpeg'])[0]
  assert len(indices) == 8 and set(indices) == {0, 1, 2}
  assert list(indices) == sorted(indices)


# ----------------------------------------------------------------------------- all frames
def test_all_frames_test_keeps_the_first_n():
  out = sampling.sample_all_frames(_frames(200), max_frames=150, train=False)
  np.testing.assert_array_equal(_ints(out['frames_jpeg'])[0], np.arange(150))
  assert int(out['num_valid']) == 150
  out = sampling.sample_all_frames(_frames(40), max_frames=150, train=False)
  assert int(out['num_valid']) == 40 and out['frames_jpeg'].shape == (1, 40)


def test_all_frames_train_trims_up_to_its_own_length_over_16_at_each_end():
  """The reference trims randrange(n // 16 + 1) frames at each end, n being the video's own
  (strided) length, not the frame budget."""
  for length, stride in ((100, 1), (100, 2), (40, 2)):
    strided = (length + stride - 1) // stride
    starts, ends, trim_pairs = set(), set(), set()
    for i in range(120):
      out = sampling.sample_all_frames(_frames(length), max_frames=150, train=True,
                                       seed=_seed(i), stride=stride)
      indices = _ints(out['frames_jpeg'])[0]
      assert len(indices) == int(out['num_valid'])
      np.testing.assert_array_equal(np.diff(indices), stride)  # contiguous, in order
      starts.add(indices[0] // stride)
      ends.add(strided - 1 - indices[-1] // stride)
      trim_pairs.add((indices[0] // stride, strided - 1 - indices[-1] // stride))
    assert starts == ends == set(range(strided // 16 + 1)), (length, stride)
    # The two ends draw their trims apart (mutation audit: one trim for both ends passed).
    assert len(trim_pairs) > strided // 16 + 1, (length, stride, trim_pairs)
  # Long videos: after the trim, the first 150 frames.
  out = sampling.sample_all_frames(_frames(400), max_frames=150, train=True, seed=_seed(3))
  assert int(out['num_valid']) == 150


def test_all_frames_train_never_trims_a_video_away():
  for i in range(30):
    out = sampling.sample_all_frames(_frames(2), max_frames=160, train=True, seed=_seed(i))
    assert 1 <= int(out['num_valid']) <= 2


def test_pad_frames_pads_with_zeros_and_masks():
  video = tf.ones([3, 5, 4, 4, 3])
  out = sampling.pad_frames({'video': video}, max_frames=8)
  assert out['video'].shape == (3, 8, 4, 4, 3)
  np.testing.assert_array_equal(out['frame_mask'].numpy(), [1] * 5 + [0] * 3)
  assert float(tf.reduce_sum(out['video'][:, 5:])) == 0.0
  assert int(out['num_valid']) == 5


# ----------------------------------------------------------------------------- crop boxes
def _box(name, height, width, i, **fields):
  box = augment.CROP_BOXES.get(name)
  return [float(v) for v in box(tf.constant(height), tf.constant(width), _seed(i),
                                _data(**fields))]


def test_short_side_jitter_box_is_a_square_of_crop_over_scale():
  for height, width in ((256, 340), (340, 256)):
    fractions = []  # where each box sits in the free space, per axis, in [0, 1]
    for i in range(40):
      y, x, h, w = _box('short_side_jitter', height, width, i, crop_size=224,
                        train_min_scale=256, train_max_scale=320)
      assert h == pytest.approx(w)
      assert 224 * 256 / 320 - 1e-3 <= h <= 224 + 1e-3
      assert 0 <= y <= height - h + 1e-3 and 0 <= x <= width - w + 1e-3
      fractions.append((y / (height - h), x / (width - w)))
    # The box roams the whole free space along both axes, independently (mutation audit: x
    # scaled by the height's free space, or drawn with y's seed, passed every test).
    fractions = np.array(fractions)
    assert np.all(fractions.min(axis=0) < 0.2) and np.all(fractions.max(axis=0) > 0.8), fractions
    assert np.abs(fractions[:, 0] - fractions[:, 1]).max() > 0.3


def test_short_side_jitter_draws_every_scale_from_min_to_max():
  """Mutation audit: a jitter that never drew train_max_scale passed every test."""
  # Portrait frames too (mutation audit: scaling by the height, not the short side, passed).
  for height, width in ((100, 150), (150, 100)):
    scales = set()
    for i in range(200):
      _, _, h, w = _box('short_side_jitter', height, width, i, crop_size=8, train_min_scale=10,
                        train_max_scale=14)
      assert h == pytest.approx(w), (height, width)
      scales.add(round(8 * 100 / h))  # the crop is crop_size / scale of the 100 px short side
    assert scales == {10, 11, 12, 13, 14}, (height, width)


def test_inception_box_area_and_aspect_ranges():
  areas = []
  for i in range(60):
    y, x, h, w = _box('inception', 240, 320, i)
    assert 0 <= y and y + h <= 240 and 0 <= x and x + w <= 320
    area = h * w / (240 * 320)
    areas.append(area)
    if area < 1.0:  # the whole frame is the fallback when no box fits
      assert 0.08 - 0.01 <= area and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
  assert min(areas) < 0.5 < max(areas)


def test_tsm_multiscale_box_scales_distortion_and_grid():
  height, width, crop = 256, 340, 224
  sizes = [256, 224, 192, 168]  # int(256 * s) for 1/.875/.75/.66; 224 snaps to crop_size
  pairs, positions = set(), set()
  for i in range(400):
    y, x, h, w = (int(v) for v in _box('tsm_multiscale', height, width, i, crop_size=crop))
    assert h in sizes and w in sizes
    assert abs(sizes.index(h) - sizes.index(w)) <= 1  # max distortion 1
    h_step, w_step = (height - h) // 4, (width - w) // 4
    assert (h_step == 0 and y == 0) or (y % h_step == 0 and y // h_step in range(5))
    assert x % w_step == 0 and x // w_step in range(5)
    pairs.add((h, w))
    if h_step:  # a full-height crop has one row of positions
      positions.add((y // h_step, x // w_step))
  assert len(pairs) == 10  # 4 + 2 * 3 (h, w) index pairs with |i - j| <= 1
  grid = {(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3),
          (3, 1), (3, 3)}
  assert positions <= grid and len(positions) >= 12


def test_tsm_multiscale_snaps_sizes_less_than_3_px_from_the_crop():
  """TSM snaps a scaled size to the crop size when abs(size - crop) < 3: 96 px (0.75 x 128)
  stays 96 beside a 99 px crop (mutation audit: a snap at <= 3 passed every test)."""
  drawn = set()
  for i in range(200):
    _, _, h, w = _box('tsm_multiscale', 128, 160, i, crop_size=99)
    drawn |= {int(h), int(w)}
  assert drawn == {128, 112, 96, 84}  # int(128 x (1, .875, .75, .66))
  drawn = set()
  for i in range(200):
    _, _, h, w = _box('tsm_multiscale', 128, 160, i, crop_size=98)
    drawn |= {int(h), int(w)}
  assert drawn == {128, 112, 98, 84}  # 96 is 2 px from 98
  # The scales apply to the short side of a portrait frame too (mutation audit: to its height).
  drawn = set()
  for i in range(200):
    _, _, h, w = _box('tsm_multiscale', 160, 128, i, crop_size=99)
    drawn |= {int(h), int(w)}
  assert drawn == {128, 112, 96, 84}


def test_tsm_offsets_five_or_thirteen_positions():
  # Steps of 10 rows and 15 columns: unequal, so rows and columns swapped show.
  five = augment.tsm_offsets(tf.constant(100), tf.constant(140), tf.constant(60), tf.constant(80),
                              more_fix_crop=False).numpy()
  assert sorted(map(tuple, five)) == [(0, 0), (0, 60), (20, 30), (40, 0), (40, 60)]
  assert augment.tsm_offsets(100, 120, 60, 80, more_fix_crop=True).shape == (13, 2)


def test_integer_window_rounds_to_nearest_and_clamps_each_axis_to_its_own_side():
  """Mutation audit: a window whose y was rounded up, or whose x was clamped by the height, passed
  every test (the fused-decode test builds its reference window with this same function)."""
  def window(box, height, width):
    return augment.integer_window(*box, tf.constant(height), tf.constant(width)).numpy().tolist()

  assert window((2.4, 29.6, 9.4, 10.2), 20, 40) == [2, 30, 9, 10]  # the right edge of a 40 px row
  assert window((29.6, 2.4, 10.2, 9.4), 40, 20) == [30, 2, 10, 9]  # the bottom of a 40 px column
  assert window((-3.0, 50.0, 30.0, 0.2), 20, 40) == [0, 39, 20, 1]  # clamped, at least 1 px
  assert window((50.0, -3.0, 0.2, 30.0), 40, 20) == [39, 0, 1, 20]


# ----------------------------------------------------------------------------- fused decode
def _jpeg_clip(num_frames=4, height=48, width=64):
  rng = np.random.default_rng(0)
  frames = []
  for t in range(num_frames):
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 4 + t * 10, yy * 5, (xx + yy) * 2], -1) % 256
    image = (image + rng.integers(0, 3, image.shape)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='JPEG', quality=95)
    frames.append(buffer.getvalue())
  return tf.constant([frames])  # (1, T)


def _crop_box_resize(video, box_fn, crop_size, seed):
  """The reference for the fused decode: crop the decoded (1, T, H, W, 3) clip to the same
  window, then resize (float32)."""
  height, width = tf.shape(video)[2], tf.shape(video)[3]
  window = augment.integer_window(*box_fn(height, width, seed), height, width)
  frames = video[0, :, window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
  return tf.image.resize(frames, [crop_size, crop_size], method='bilinear')[None]


@pytest.mark.parametrize('crop', augment.CROP_BOXES.names())
def test_fused_decode_and_crop_matches_decode_then_crop(crop):
  data = _data(train_crop=crop, crop_size=32, train_min_scale=40, train_max_scale=56)
  box_fn = augment.train_box_fn(data)
  jpegs = _jpeg_clip()
  for i in range(5):
    fused = augment.decode_crop_resize({'frames_jpeg': jpegs}, box_fn, 32, _seed(i),
                                        resize_filter='bilinear')['video']
    decoded = augment.decode_jpeg_frames({'frames_jpeg': jpegs})['video']
    plain = _crop_box_resize(decoded, box_fn, 32, _seed(i))
    assert fused.shape == plain.shape == (1, 4, 32, 32, 3) and fused.dtype == tf.uint8
    # JPEG block-edge decoding and rounding to uint8 only.
    assert float(tf.reduce_mean(tf.abs(tf.cast(fused, tf.float32) - plain))) < 2.0


def test_stored_frames_decode_as_pillow_decodes_them(tmp_path):
  """TensorFlow's default JPEG decoding (its fast integer inverse DCT) read every stored frame of
  a real video with red about 1.1 and blue about 1.3 levels low against Pillow, which the TSM and
  S2DNet references decode their frames with (audit: a colour cast no reference has). Each path
  that decodes stored frames now reads them as Pillow does: eval's, train's fused decode and
  crop, and the records reader."""
  fight = TESTDATA / 'real_clips' / 'fight_surv'
  for name in ('fight/fi001.mp4', 'noFight/nofi001.mp4'):
    (tmp_path / 'videos' / name).parent.mkdir(parents=True)
    (tmp_path / 'videos' / name).symlink_to(fight / name)
  out = tmp_path / 'records'
  assert convert.main(['--dataset=folder', f'--input={tmp_path / "videos"}', f'--output={out}',
                       '--split=val',
                       '--short_side=64', '--max_frames=3', '--quiet']) == 0
  video = next(records.tfds_video_dataset(str(out), 'val', decode_frames=False)
               .as_numpy_iterator())
  jpegs = list(video['frames_jpeg'])
  pillow = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert('RGB')) for j in jpegs])
  assert pillow.shape[0] == 3 and min(pillow.shape[1:3]) == 64, pillow.shape
  decoded = augment.decode_jpeg_frames({'frames_jpeg': tf.constant([jpegs])})['video'][0]
  np.testing.assert_array_equal(decoded, pillow)
  read = next(records.tfds_video_dataset(str(out), 'val').as_numpy_iterator())['video']
  np.testing.assert_array_equal(read, pillow)
  # The fused decode of a window that fits the crop (it travels unresized): equal but at the
  # window's edges, where the chroma is upsampled without the pixels beyond them.
  window = (8, 16, 40, 48)
  fused = augment.decode_crop_resize({'frames_jpeg': tf.constant([jpegs])},
                                     lambda h, w, seed: window, 64, _seed(0),
                                     resize_filter='bilinear',
                                     resize_on_device=True)['video'][0, :, :40, :48]
  difference = fused.numpy().astype(float) - pillow[:, 8:48, 16:64]
  assert np.abs(difference.mean(axis=(0, 1, 2))).max() < 0.2, difference.mean(axis=(0, 1, 2))
  np.testing.assert_array_equal(fused[:, 1:-1, 1:-1], pillow[:, 9:47, 17:63])


def test_eval_views_are_the_decoded_frames_own_crops_in_rgb_order():
  """Mutation audit: eval views mirrored left-right, or with their channels reversed (BGR),
  passed every test (the crop tests build float tensors and skip the decode and the rounding).
  The frames' red runs along x and differs from green and blue, so both show."""
  jpegs = _jpeg_clip()  # 48 x 64: the short side is already eval_short_side, no resize
  data = _data(eval_short_side=48, eval_crop_size=32, eval_num_crops=3)
  views = augment.eval_views({'frames_jpeg': jpegs}, data)['video'].numpy()
  frames = augment.decode_jpeg_frames({'frames_jpeg': jpegs})['video'].numpy()[0]
  assert views.shape == (3, 4, 32, 32, 3) and views.dtype == np.uint8
  for view, x in zip(views, (0, 16, 32)):  # rows 8..40, the centre ((48 - 32 + 1) // 2)
    np.testing.assert_array_equal(view, frames[:, 8:40, x:x + 32])
  # Resized to a 36 px short side (48 x 36), the resampled pixels round to the nearest level
  # (mutation audit: truncated, half a level darker, they passed every test).
  data.eval_short_side = 36
  views = augment.eval_views({'frames_jpeg': jpegs}, data)['video'].numpy()
  resized = tf.image.resize(tf.cast(frames, tf.float32), [36, 48]).numpy()
  expected = np.floor(resized + 0.5).astype(np.uint8)
  for view, x in zip(views, (0, 8, 16)):  # rows 2..34, the centre ((36 - 32 + 1) // 2)
    np.testing.assert_array_equal(view, expected[:, 2:34, x:x + 32])


def test_random_flip_mirrors_the_clip():
  jpegs = _jpeg_clip()
  box_fn = lambda h, w, seed: (0, 0, h, w)  # whole frame
  plain = augment.decode_crop_resize({'frames_jpeg': jpegs}, box_fn, 40, _seed(0),
                                      resize_filter='bilinear')['video']
  flips = []
  for i in range(20):
    out = augment.decode_crop_resize({'frames_jpeg': jpegs}, box_fn, 40, _seed(0),
                                    resize_filter='bilinear')
    out = augment.augment(out, _data(train_augmentations=('random_flip',)), _seed(i))['video']
    out, reference = out.numpy().astype(int), plain.numpy().astype(int)
    if np.array_equal(out, reference):
      flips.append(False)
    else:  # mirrored
      np.testing.assert_array_equal(out, reference[:, :, :, ::-1])
      flips.append(True)
  assert 0 < sum(flips) < len(flips)


def test_random_flip_flips_half_of_the_clips():
  """Mutation audit: a flip probability of 0.2 instead of 0.5 passed every test."""
  data = _data(train_augmentations=('random_flip',))
  flips = [bool(augment.augment({'flip': tf.constant(False)}, data, _seed(i))['flip'])
           for i in range(1000)]
  assert 0.45 < np.mean(flips) < 0.55


def test_host_resize_rounds_to_the_nearest_level():
  """Mutation audit: truncating the resized pixels (a darker image, -0.5 levels on average)
  passed every test."""
  frames = np.random.default_rng(0).integers(0, 256, (2, 7, 9, 3)).astype(np.uint8)
  resized = tf.image.resize(tf.cast(frames, tf.float32), [8, 8], method='bilinear').numpy()
  resized_here = augment.host_resize(tf.constant(frames), 8, resize_filter='bilinear')
  np.testing.assert_array_equal(resized_here.numpy(),
                                np.floor(resized + 0.5).astype(np.uint8))


def test_device_resize_matches_tf_resize_then_flip():
  rng = np.random.default_rng(0)
  size = 24
  for h, w in [(1, 1), (5, 24), (24, 7), (13, 19), (24, 24)]:
    crops = rng.integers(0, 256, (2, 3, h, w, 3)).astype(np.uint8)
    canvas = np.full((2, 3, size, size, 3), 255, np.uint8)  # what lies outside must not leak
    canvas[:, :, :h, :w] = crops
    out = np.asarray(inputs.resize_crops_on_device(canvas, np.array([[h, w]] * 2),
                                                     np.array([False, True])))
    expected = tf.image.resize(tf.cast(crops.reshape(6, h, w, 3), tf.float32),
                               [size, size]).numpy().reshape(2, 3, size, size, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected[0], atol=1e-3)
    np.testing.assert_allclose(out[1], expected[1][:, :, ::-1], atol=1e-3)


@pytest.mark.parametrize('crop', augment.CROP_BOXES.names())
def test_device_resized_crops_match_the_host_path(crop):
  size = 40  # the 48x64 frames give windows both smaller and larger than this for every crop
  data = _data(train_crop=crop, crop_size=size, train_min_scale=40, train_max_scale=56,
               train_augmentations=('random_flip',))
  where = set()
  for i in range(12):
    data.train_resize_on_device = False
    host = augment.train_clip({'frames_jpeg': _jpeg_clip()}, data, _seed(i))['video']
    data.train_resize_on_device = True
    sent = augment.train_clip({'frames_jpeg': _jpeg_clip()}, data, _seed(i))
    hw = sent['crop_hw'].numpy()
    canvas = sent['video'].numpy()
    assert canvas.shape == (1, 4, size, size, 3) and canvas.dtype == np.uint8
    assert np.all(canvas[:, :, hw[0]:] == 0) and np.all(canvas[:, :, :, hw[1]:] == 0)
    where.add('device' if tuple(hw) != (size, size) else 'host (or no resize)')
    finished = inputs.resize_crops_on_device(canvas, hw[None], sent['flip'].numpy()[None])
    # Within one uint8 step: the host path rounds its resampled pixels (the device path keeps
    # float32 where it resizes).
    np.testing.assert_allclose(np.asarray(finished), host.numpy().astype(np.float32),
                               atol=1 + 1e-3)
  assert where == {'device', 'host (or no resize)'}


@pytest.mark.parametrize('preset', sorted(inputs.NORMALIZATION_PRESETS))
def test_device_normalisation_matches_the_preset_formula(preset):
  import ml_collections  # pylint: disable=g-import-not-at-top
  mean, std = inputs.NORMALIZATION_PRESETS[preset]
  pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5, 5, 3)).astype(np.uint8)
  data = ml_collections.ConfigDict({'normalization': preset})
  expected = (pixels / 255.0 - np.asarray(mean)) / np.asarray(std)
  out = np.asarray(inputs.normalize_on_device(pixels, data))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, expected, atol=1e-5)
  # Padded frames (mask False) are zeros, for train (B, T, ...) and eval (B, V, T, ...) videos.
  frame_mask = np.array([[True, True, False, False], [True, False, False, False]])
  for video in (pixels[:, 0], pixels):
    masked = np.asarray(inputs.normalize_on_device(video, data, frame_mask))
    keep = frame_mask.reshape((2,) + (1,) * (video.ndim - 5) + (4, 1, 1, 1))
    np.testing.assert_allclose(masked, np.where(keep, expected if video.ndim == 6 else
                                                expected[:, 0], 0.0), atol=1e-5)


def test_normalisation_presets_are_the_published_rgb_statistics():
  """Mutation audit: the ImageNet mean and std in BGR order passed every test (the formula test
  reads the presets it checks). Pure red, green and blue pixels against the published values:
  torchvision's ImageNet (TSM, S2DNet) and PySlowFast's Kinetics ones."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  pixels = np.array([[[[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]]], np.uint8)  # (1, 1, 1, 3, 3)
  published = {'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
               'kinetics': ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))}
  for preset, (mean, std) in published.items():
    out = np.asarray(inputs.normalize_on_device(
        pixels, ml_collections.ConfigDict({'normalization': preset})))[0, 0, 0]
    mean, std = np.array(mean), np.array(std)
    np.testing.assert_allclose(out, (np.eye(3) - mean) / std, atol=1e-5, err_msg=preset)


def test_malloc_settings_apply_on_glibc_and_zero_keeps_defaults():
  import platform  # pylint: disable=g-import-not-at-top
  from data import host_malloc  # pylint: disable=g-import-not-at-top
  assert host_malloc.keep_buffers_in_heap(0, 8) is False
  if platform.libc_ver()[0] != 'glibc':
    pytest.skip('mallopt is glibc-only; elsewhere the setting is a documented no-op')
  assert host_malloc.apply_settings(base.get_base_config().data) is True


# A worker thread (its own glibc heap) fills 48 MiB of 1 MiB blocks and frees them: what stays
# resident once they are freed, under the config's malloc settings with the given trim threshold.
_THREAD_HEAP_LEFT = r"""
import ctypes, json, sys, threading
from configs import base
from data import host_malloc

def rss_mib():
  with open('/proc/self/status') as f:
    return next(int(l.split()[1]) / 1024 for l in f if l.startswith('VmRSS'))

data = base.get_base_config().data
data.malloc_trim_threshold_mib = int(sys.argv[1])
assert host_malloc.apply_settings(data)
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
result = {}

def work():
  before = rss_mib()
  blocks = [libc.malloc(1 << 20) for _ in range(48)]
  for block in blocks:
    libc.memset(block, 1, 1 << 20)
  result['held_mib'] = rss_mib() - before
  for block in reversed(blocks):
    libc.free(block)
  result['left_mib'] = rss_mib() - before

thread = threading.Thread(target=work)
thread.start()
thread.join()
print(json.dumps(result))
"""


def test_a_threads_freed_heap_beyond_the_trim_threshold_goes_back_to_the_kernel():
  """XLA's and tf.data's threads each allocate in a heap of their own, whose free top glibc kept
  up to twice the 32 MiB mmap threshold; the config now sets that threshold
  (data/host_malloc.py has what it trades)."""
  import platform  # pylint: disable=g-import-not-at-top
  if platform.libc_ver()[0] != 'glibc':
    pytest.skip('mallopt is glibc-only; elsewhere the setting is a documented no-op')

  def left_after_freeing(trim_threshold_mib):
    out = subprocess.run([sys.executable, '-c', _THREAD_HEAP_LEFT, str(trim_threshold_mib)],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300,
                         check=True, cwd=REPO_ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])

  trimmed = left_after_freeing(8)
  kept = left_after_freeing(64)  # the threshold before: twice the mmap threshold
  assert trimmed['held_mib'] > 40 and kept['held_mib'] > 40, (trimmed, kept)
  assert trimmed['left_mib'] < 8, trimmed
  assert kept['left_mib'] > 40, kept  # the measurement sees a heap that keeps its pages


def test_unknown_normalisation_preset_is_named():
  import ml_collections  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="config.data.normalization must be one of .* 'imagenet2'"):
    inputs.normalization(ml_collections.ConfigDict({'normalization': 'imagenet2'}))


# ----------------------------------------------------------------------------- from the config
@pytest.mark.parametrize('sampler,crop', [('tsn', 'inception'), ('dense', 'tsm_multiscale'),
                                          ('all_frames', 'short_side_jitter'),
                                          ('pyslowfast', 'short_side_jitter')])
def test_train_dataset_selects_ops_from_config(config, sampler, crop):
  config.data.temporal_sampling = sampler
  config.data.train_crop = crop
  batch = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=0)))
  assert batch['video'].shape == (4, 4, 16, 16, 3)
  if sampler == 'all_frames':  # the 6-frame videos give 4 frames, padding never needed here
    assert batch['frame_mask'].shape == (4, 4) and batch['frame_mask'].all()
  else:
    assert 'frame_mask' not in batch


def test_all_frames_pads_short_videos_in_train_and_eval(config):
  config.data.temporal_sampling = 'all_frames'
  config.data.num_frames = 10  # the tiny videos have 6 frames
  config.data.eval_num_clips = 1
  batch = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=0)))
  assert batch['video'].shape == (4, 10, 16, 16, 3)
  # floor(6 / 16) = 0 frames of trim: every 6-frame video is kept whole and padded by 4.
  np.testing.assert_array_equal(batch['frame_mask'].sum(axis=1), 6)
  for row, mask in zip(batch['video'], batch['frame_mask']):
    assert np.all(row[~mask] == 0)
  ds, _, _ = pipeline.eval_dataset(config, 'val')
  batch = next(pipeline.as_numpy(ds))
  assert batch['video'].shape == (4, 1, 10, 16, 16, 3)
  np.testing.assert_array_equal(batch['frame_mask'][batch['mask']].sum(axis=1), 6)


def test_tsn_eval_views(config):
  config.data.temporal_sampling = 'tsn'
  ds, _, _ = pipeline.eval_dataset(config, 'val')
  batch = next(pipeline.as_numpy(ds))
  assert batch['video'].shape == (4, 2, 4, 16, 16, 3)  # eval_num_clips=2 x 1 crop


def test_bad_op_names_and_all_frames_views_fail_clearly(config):
  config.data.train_crop = 'random'
  with pytest.raises(ValueError, match='config.data.train_crop must be one of'):
    pipeline.train_dataset(config, seed=0)
  config.data.train_crop = 'inception'
  config.data.temporal_sampling = 'uniform'
  with pytest.raises(ValueError, match='config.data.temporal_sampling must be one of'):
    pipeline.train_dataset(config, seed=0)
  config.data.temporal_sampling = 'all_frames'
  with pytest.raises(ValueError, match='eval_num_clips=1'):
    pipeline.eval_dataset(config, 'val')


def test_all_frames_with_stride_takes_every_other_frame():
  out = sampling.sample_all_frames(_frames(9), max_frames=150, train=False, stride=2)
  assert int(out['num_valid']) == 5
  assert [int(b) for b in out['frames_jpeg'].numpy()[0]] == [0, 2, 4, 6, 8]
  out = sampling.sample_all_frames(_frames(400), max_frames=150, train=False, stride=2)
  assert int(out['num_valid']) == 150 and int(out['frames_jpeg'].numpy()[0][-1]) == 298


def test_a_new_augmentation_is_a_function_and_a_name(config):
  """Registering a function under a name and listing it in the config is all it takes."""
  name = 'invert_for_test'
  if name not in augment.AUGMENTATIONS:
    @augment.AUGMENTATIONS.register(name)
    def invert(features, data, seed):  # pylint: disable=unused-variable
      del data, seed
      features['video'] = 255 - features['video']
      return features
  config.data.train_resize_on_device = False
  plain = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=1)))
  config.data.train_augmentations = (name,)
  inverted = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=1)))
  np.testing.assert_array_equal(inverted['video'], 255 - plain['video'])
  config.data.train_augmentations = ('no_such_augmentation',)
  with pytest.raises(ValueError, match=r'config.data.train_augmentations must be one of \(.*'
                     "'random_flip'"):
    pipeline.train_dataset(config, seed=0)


# ----------------------------------------------------------------------------- PySlowFast
def pyslowfast_reference(num_frames_video, fps, k, num_clips, frames=8, rate=8, target=30.0):
  """PySlowFast's decoder (its decode-all path), written from its formulas: L = T s F / F0,
  delta = max(N - L, 0), start = delta k / K, indices floor(start + j (L - 1) / (T - 1))
  clamped to N - 1."""
  length = frames * rate * fps / target
  delta = max(num_frames_video - length, 0.0)
  start = delta * k / num_clips
  return [min(int(np.floor(start + j * (length - 1) / (frames - 1))), num_frames_video - 1)
          for j in range(frames)]


@pytest.mark.parametrize('num_frames_video,fps', [(300, 30.0), (250, 25.0), (40, 30.0),
                                                  (151, 29.97), (600, 60.0), (64, 30.0)])
def test_pyslowfast_test_clips_follow_the_reference_formula(num_frames_video, fps):
  data = _data(temporal_sampling='pyslowfast', num_frames=8, frame_stride=8, target_fps=30.0,
               eval_num_clips=10)
  features = dict(_frames(num_frames_video), fps=tf.constant(fps, tf.float32))
  out = sampling.sample(features, data, train=False)['frames_jpeg'].numpy().astype(int)
  assert out.shape == (10, 8)
  for k in range(10):
    assert out[k].tolist() == pyslowfast_reference(num_frames_video, fps, k, 10), k
  if num_frames_video == 300:  # the step between frames is 63 / 7 = 9 at 30 fps, not 8
    assert out[0].tolist() == [0, 9, 18, 27, 36, 45, 54, 63]
  if num_frames_video == 40:  # shorter than a clip: the last frame repeats, no looping
    assert out[0].tolist() == [0, 9, 18, 27, 36, 39, 39, 39]


def _numbered_video(path, count, fps):
  """A real MPEG-4 video (the container from the file name) whose every frame has its own pair
  of grey levels, so a decoded frame tells its number."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path), mode='w') as container:
    stream = container.add_stream('mpeg4', rate=fps)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    for i in range(count):
      frame = np.zeros((48, 64, 3), np.uint8)
      frame[:, :32], frame[:, 32:] = (i % 16) * 16 + 8, (i // 16) * 12 + 8
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


# PySlowFast's own decoder (decoder.py @ 3123669, DATA.DECODING_BACKEND 'pyav') run on the
# _numbered_video files, its frames mapped back to frame numbers (a views audit; the numbers are
# its output, not recomputed here). 300 frames at 30 fps, MP4 (time base 1/15360): clip k from
# frame ceil(23.6 k), then 9 apart.
REFERENCE_MP4_30FPS_300 = [[first + 9 * j for j in range(8)]
                           for first in (0, 24, 48, 71, 95, 118, 142, 166, 189, 213)]
# 250 frames at 25 fps, MP4: L = 53.33, clip k from the first frame at or after 19.67 k.
REFERENCE_MP4_25FPS_250 = [
    [0, 7, 14, 22, 29, 37, 44, 52], [20, 27, 34, 42, 49, 57, 64, 72],
    [40, 47, 54, 62, 69, 77, 84, 92], [59, 66, 73, 81, 88, 96, 103, 111],
    [79, 86, 93, 101, 108, 116, 123, 131], [99, 106, 113, 121, 128, 136, 143, 151],
    [118, 125, 132, 140, 147, 155, 162, 170], [138, 145, 152, 160, 167, 175, 182, 190],
    [158, 165, 172, 180, 187, 195, 202, 210], [177, 184, 191, 199, 206, 214, 221, 229]]
# A UCF101-like AVI, 175 frames at 25 fps (time base 1/25): floor(12.167 k) + floor(7.476 j).
REFERENCE_AVI_25FPS_175 = [
    [0, 7, 14, 22, 29, 37, 44, 52], [12, 19, 26, 34, 41, 49, 56, 64],
    [24, 31, 38, 46, 53, 61, 68, 76], [36, 43, 50, 58, 65, 73, 80, 88],
    [48, 55, 62, 70, 77, 85, 92, 100], [60, 67, 74, 82, 89, 97, 104, 112],
    [73, 80, 87, 95, 102, 110, 117, 125], [85, 92, 99, 107, 114, 122, 129, 137],
    [97, 104, 111, 119, 126, 134, 141, 149], [109, 116, 123, 131, 138, 146, 153, 161]]


def _test_clips_through_records(path, data):
  """The frame numbers of the test clips of `path` converted as data.convert stores it (its
  stream clock included) and read back through records.parse_video."""
  video = video_io.decode_video(str(path), short_side=0)
  number = {jpeg: i for i, jpeg in enumerate(video.jpegs)}
  assert len(number) == len(video.jpegs)  # every frame tells itself apart
  serialized = records.serialize_video(video.jpegs, 0, '', path.name, video.fps, video.timing,
                                       video.stream_clock)
  features = records.parse_video(tf.constant(serialized))
  sampled = sampling.sample(features, data, train=False)['frames_jpeg'].numpy()
  return video, [[number[jpeg] for jpeg in clip] for clip in sampled]


@pytest.mark.parametrize('name,count,fps,expected', [
    ('clip.mp4', 300, 30, REFERENCE_MP4_30FPS_300), ('clip.mp4', 250, 25, REFERENCE_MP4_25FPS_250),
    ('v_Test_g01_c01.avi', 175, 25, REFERENCE_AVI_25FPS_175),
    ('clip.mkv', 300, 30, [pyslowfast_reference(300, 30.0, k, 10) for k in range(10)])],
                         ids=['mp4_30fps', 'mp4_25fps', 'avi_25fps', 'mkv_decode_all'])
def test_pyslowfast_test_clips_are_the_reference_decoder_s_in_each_container(tmp_path, name,
                                                                           count, fps, expected):
  """PySlowFast decodes an MP4 or AVI selectively from a timestamp (clip 1 of the 30 fps MP4:
  24, 33, ...), an MKV, which declares no duration, whole (23, 32, ...). The sampler took the
  decode-all path's frames for every container (a views audit: 8 of 10 clips one frame off for
  the 30 fps MP4, 8 of 10 for the AVI, in 23 of the 23 fight_surv MP4s longer than a clip)."""
  import av  # pylint: disable=g-import-not-at-top
  data = _data(temporal_sampling='pyslowfast', num_frames=8, frame_stride=8, target_fps=30.0,
               eval_num_clips=10)
  _numbered_video(tmp_path / name, count, fps)
  video, clips = _test_clips_through_records(tmp_path / name, data)
  with av.open(str(tmp_path / name)) as container:
    declares = container.streams.video[0].duration is not None
  assert (video.stream_clock is not None) == declares == (not name.endswith('.mkv'))
  for k, (got, want) in enumerate(zip(clips, expected)):
    assert got == want, f'test clip {k}: {got} (PySlowFast on this {name}: {want})'
  # Predict decodes a file as the records were and takes the same frames.
  views = pipeline.video_eval_batches(data, video.jpegs, name, video.fps, 1, video.stream_clock)
  served = next(iter(views))['video'].numpy()[0]
  serialized = records.serialize_video(video.jpegs, 0, '', name, video.fps, video.timing,
                                       video.stream_clock)
  stored = tf.data.Dataset.from_tensors(serialized).map(records.parse_video).map(
      pipeline.eval_views_fn(data))
  np.testing.assert_array_equal(served, next(iter(stored))['video'].numpy())


def test_pyslowfast_clips_of_a_video_cut_by_max_frames_take_frames_it_stored(tmp_path):
  """A 300-frame MP4 converted with --max_frames=100 kept its stream clock, which declares 300
  frames: test clips 5-9 started past the 100 frames stored and were the last one 8 times over,
  training clips too (review). A cut video stores no clock: the decode-all path over its 100
  frames gives every clip 8 different frames."""
  data = _data(temporal_sampling='pyslowfast', num_frames=8, frame_stride=8, target_fps=30.0,
               eval_num_clips=10)
  path = tmp_path / 'clip.mp4'
  _numbered_video(path, 300, 30)
  video = video_io.decode_video(str(path), short_side=0, max_frames=100)
  assert len(video.jpegs) == 100 and video.stream_clock is None
  assert video_io.decode_video(str(path), short_side=0, max_frames=300).stream_clock is not None
  number = {jpeg: i for i, jpeg in enumerate(video.jpegs)}
  serialized = tf.constant(records.serialize_video(video.jpegs, 0, '', path.name, video.fps,
                                                   video.timing, video.stream_clock))
  sampled = sampling.sample(records.parse_video(serialized), data, train=False)['frames_jpeg']
  for k, clip in enumerate(sampled.numpy()):
    frames = [number[jpeg] for jpeg in clip]
    assert len(set(frames)) == 8, f'test clip {k}: {frames} of the 100 frames stored'
  for seed in range(8):
    clip = sampling.sample(records.parse_video(serialized), data, train=True,
                           seed=_seed(seed))['frames_jpeg'].numpy().reshape(-1)
    frames = [number[jpeg] for jpeg in clip]
    assert len(set(frames)) == 8, f'training clip (seed {seed}): {frames}'


def test_a_file_given_to_a_model_takes_a_stream_clock_only_where_its_records_kept_them(tmp_path):
  """Predict, features and export decode a file as the model's eval records were; its clock
  too made a checkpoint trained on records from before stream clocks take other frames from the
  file than its evaluation took from the same video's record (review: 8 of 10 views)."""
  path = tmp_path / 'clip.mp4'
  _numbered_video(path, 300, 30)
  data = _data(temporal_sampling='pyslowfast', eval_short_side=48, eval_crop_size=48)
  decoding = {'fps': 0.0, 'max_frames': 0, 'short_side': 0}
  assert pipeline.decode_like_records(str(path), data, decoding).stream_clock is None
  assert pipeline.decode_like_records(str(path), data, {}).stream_clock is None
  clock = pipeline.decode_like_records(str(path), data, dict(decoding, stream_clock=True))
  assert clock.stream_clock is not None and len(clock.stream_clock.pts) == 300


def test_a_record_without_a_stream_clock_takes_the_decode_all_path():
  """Records converted before the stream clock was stored (and frames of a source that has
  none) read as before: empty pts, and the decode-all path's frames."""
  jpegs = [str(i).encode() for i in range(300)]
  features = records.parse_video(tf.constant(records.serialize_video(jpegs, 0, '', 'a.mp4',
                                                                     30.0)))
  assert features['pts'].numpy().tolist() == [] and int(features['stream_frames']) == 0
  data = _data(temporal_sampling='pyslowfast', num_frames=8, frame_stride=8, target_fps=30.0,
               eval_num_clips=10)
  clips = _ints(sampling.sample(features, data, train=False)['frames_jpeg'])
  assert clips.tolist() == [pyslowfast_reference(300, 30.0, k, 10) for k in range(10)]
  with pytest.raises(ValueError, match='^2 timestamps for 300 frames$'):
    records.serialize_video(jpegs, 0, '', 'a.mp4', 30.0,
                            stream_clock=video_io.StreamClock((0, 1), 300, 300))


def test_pyslowfast_train_clip_starts_anywhere_in_the_slack():
  data = _data(temporal_sampling='pyslowfast', num_frames=8, frame_stride=8, target_fps=30.0)
  starts = set()
  for i in range(60):
    features = dict(_frames(200), fps=tf.constant(30.0))
    clip = _ints(sampling.sample(features, data, train=True, seed=_seed(i))['frames_jpeg'])[0]
    assert 0 <= clip[0] <= 200 - 64 and np.all(np.diff(clip) >= 8) and clip[-1] <= 199
    # L = 64 frames at 30 fps: the step is 63 / 7 = 9 and floor(start + 9 j) = floor(start) + 9 j.
    np.testing.assert_array_equal(clip, clip[0] + 9 * np.arange(8))
    starts.add(clip[0])
  assert len(starts) > 30
  # The slack is delta = 200 - 64 = 136 frames, all of it drawn from (mutation audit: starts
  # in [0, delta / 2] passed every test).
  assert min(starts) < 0.2 * 136 and max(starts) > 0.8 * 136, sorted(starts)


@pytest.mark.parametrize('sampling_name, fps', [
    ('dense', 25.0), ('pyslowfast', 30.0), ('pyslowfast', 17.0), ('pyslowfast', 0.0),
    ('tsn', 25.0), ('all_frames', 25.0)])
def test_clip_span_is_the_fewest_frames_a_whole_clip_needs(sampling_name, fps):
  """Windowed predict warns of windows shorter than `clip_span`: with that many frames a test
  clip takes what it takes from a long video (TSN: distinct frames), with one fewer it does not."""
  data = _data(temporal_sampling=sampling_name, num_frames=4, frame_stride=3, target_fps=30.0,
               eval_num_clips=2)
  span = sampling.clip_span(data, fps)
  if sampling_name == 'all_frames':  # takes the frames there are: no span to fall short of
    assert span is None
    return

  def first_clip(n):
    features = dict(_frames(n), fps=tf.constant(fps, tf.float32))
    return list(_ints(tf.strings.to_number(
        sampling.sample(features, data, train=False)['frames_jpeg']))[0])

  def whole(n):
    clip = first_clip(n)
    return len(set(clip)) == len(clip) if sampling_name == 'tsn' else clip == first_clip(1000)

  assert whole(span) and not whole(span - 1), span
