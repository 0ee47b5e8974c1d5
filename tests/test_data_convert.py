"""The converter on real videos: fight_surv clips, codec edge cases, bad input, resuming, TFDS."""

import argparse
import contextlib
import csv
import errno
import fractions
import glob
import io
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

import data
from data import convert
from data import datasets
from data import pipeline
from data import records
from data import video_io
from tests.conftest import REPO_ROOT
from tests.conftest import subprocess_env

TESTDATA = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'testdata'
FIGHT = TESTDATA / 'real_clips' / 'fight_surv'
CODEC = TESTDATA / 'real_clips' / 'codec_fixtures'

if not TESTDATA.is_dir():
  pytest.skip(f'Real test data not found at {TESTDATA} (the shared testdata folder next to the '
              'repository); these tests convert real videos.', allow_module_level=True)

SHORT_SIDE = 96


def _run(*args):
  """Runs the converter CLI in-process; returns its exit status."""
  return convert.main([str(a) for a in args] + ['--quiet'])


def _jpeg(data):
  return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'), dtype=np.float32)


def _videos(directory, split):
  """{filename: (label, label_text, fps, [frames as float arrays])} read from the shards."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  metadata = records.read_metadata(str(directory))
  out = {}
  for path in records.shard_files(str(directory), metadata.name, split):
    for serialized in tf.data.TFRecordDataset(path):
      f = records.parse_video_with_context(serialized)
      frames = [_jpeg(b) for b in f['frames_jpeg'].numpy()]
      assert int(f['num_frames']) == len(frames)
      out[f['filename'].numpy().decode()] = (int(f['label']), f['label_text'].numpy().decode(),
                                             float(f['fps']), frames)
  return out


def _direct_decode(path, short_side=SHORT_SIDE, rotate=True):
  """Every frame straight from PyAV, resized the converter's way (optionally left unrotated)."""
  import av  # pylint: disable=g-import-not-at-top
  frames = []
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    for frame in container.decode(stream):
      width, height = video_io.output_size(frame.width, frame.height, short_side)
      rgb = frame.to_ndarray(format='rgb24', width=width, height=height,
                             interpolation=video_io.DEFAULT_INTERPOLATION)
      if rotate:
        rgb = video_io.upright(rgb, -int(frame.rotation or 0) % 360)
      frames.append(rgb.astype(np.float32))
  return frames


# Every codec fixture that decodes, with the clockwise turn that makes it upright.
GOOD_FIXTURES = {'video_0.mov': 0, 'video_90.mov': 90, 'video_180.mov': 180, 'video_270.mov': 270,
                 'unordered.mov': 0, 'flipping_a_pancake.mkv': 0, 'bframes_h264.avi': 0}


def _independent_decode(path):
  """Every frame as the decoder emits it, what `ffmpeg -vsync passthrough` writes: the file's
  packets in file order through a fresh decoder, output order kept, no timestamp consulted,
  full size, unrotated. Uses PyAV's codec layer only, none of data/video_io.py."""
  import av  # pylint: disable=g-import-not-at-top
  frames = []
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    codec = av.CodecContext.create(stream.codec_context.name, 'r')
    codec.extradata = stream.codec_context.extradata
    for packet in container.demux(stream):  # the last, empty packet flushes the decoder
      frames += [f.to_ndarray(format='rgb24') for f in codec.decode(packet)]
  return frames


def _thumbnail(frame, size):
  """A (small) float copy for comparing frames that were resized by different code."""
  image = Image.fromarray(np.asarray(frame, np.uint8))
  return np.asarray(image.resize(size, Image.BOX), np.float32)


def _psnr(a, b):
  return 10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-9))


# ----------------------------------------------------------------------------- codec fixtures
@pytest.fixture(scope='module')
def codec_records(tmp_path_factory):
  """The codec fixtures plus a missing file, a 0-byte file and a zero-frame AVI, as one list."""
  import av  # pylint: disable=g-import-not-at-top
  work = tmp_path_factory.mktemp('codec')
  zero = work / 'zero_frames.avi'
  container = av.open(str(zero), mode='w', format='avi')
  stream = container.add_stream('mpeg4', rate=25)
  stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
  container.start_encoding()
  container.close()
  (work / 'empty.mp4').write_bytes(b'')
  # Still images given a video's name: FFmpeg opens them as one-frame videos.
  Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(work / 'photo.mp4', format='JPEG')
  Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(work / 'drawing.avi', format='PNG')
  lines = [f'{CODEC / name} {label}' for name, label in [
      ('video_0.mov', 'keyboard'), ('video_90.mov', 'keyboard'), ('video_180.mov', 'keyboard'),
      ('video_270.mov', 'keyboard'), ('unordered.mov', 'white'), ('corrupted.mp4', 'other'),
      ('flipping_a_pancake.mkv', 'pancake')]]
  lines += [f'{work / name} other' for name in ('not_there.mp4', 'zero_frames.avi', 'empty.mp4',
                                                'photo.mp4', 'drawing.avi')]
  listing = work / 'videos.txt'
  listing.write_text('\n'.join(lines) + '\n')
  out = work / 'records'
  status = _run('--dataset=list', f'--input={CODEC}', f'--annotations={listing}',
                '--name=codec', '--split=test', f'--output={out}', f'--short_side={SHORT_SIDE}',
                '--workers=1', '--videos_per_shard=4')
  return out, status


def test_codec_fixtures_convert_every_good_clip_and_report_the_rest(codec_records):
  out, status = codec_records
  assert status == 0
  metadata = records.read_metadata(str(out))
  assert metadata.classes == ['keyboard', 'other', 'pancake', 'white']  # sorted names
  videos = _videos(out, 'test')
  assert sorted(os.path.basename(name) for name in videos) == sorted(
      set(GOOD_FIXTURES) - {'bframes_h264.avi'})
  assert metadata.split_sizes == {'test': 6}
  reasons = {os.path.basename(f['file']): f['reason'] for f in metadata.failures}
  assert set(reasons) == {'corrupted.mp4', 'not_there.mp4', 'zero_frames.avi', 'empty.mp4',
                          'photo.mp4', 'drawing.avi'}
  assert 'decoding failed after 28 frames' in reasons['corrupted.mp4']
  assert 'InvalidDataError' in reasons['corrupted.mp4']
  assert reasons['not_there.mp4'].startswith('missing video file')
  assert 'no video frames decoded' in reasons['zero_frames.avi']
  assert 'empty file' in reasons['empty.mp4']
  assert reasons['photo.mp4'] == 'a single frame (a still image in format jpeg_pipe), not a video'
  assert reasons['drawing.avi'] == 'a single frame (a still image in format png_pipe), not a video'
  with open(out / 'failures.csv') as f:
    rows = list(csv.DictReader(f))
  assert {os.path.basename(r['file']) for r in rows} == set(reasons)
  assert all(r['split'] == 'test' and r['reason'] for r in rows)
  # data.report counts them by kind; a still image's was cut short ('... not a vi').
  from data import report  # pylint: disable=g-import-not-at-top
  card = report.build(str(out))['splits']['test']
  kinds = card['failure_reasons']
  assert kinds == {'decoding failed': 1, 'missing video file': 1, 'no video frames': 1,
                   'empty file': 1, 'a single frame (a still image), not a video': 2}, kinds
  # The sources' frame rates come from the converter's bookkeeping (OUT/.convert/), which the
  # records alone lack.
  assert card['fps_of'] == 'source', card


def test_each_stored_video_carries_the_stream_clock_its_container_declares(codec_records):
  """PySlowFast picks an MP4's, MOV's or AVI's clip frames by timestamp (data/sampling.py): the
  records keep each frame's and the declared duration and frame count where the source declares
  them (not Matroska), and metadata.json counts them per split."""
  import av  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out, _ = codec_records
  metadata = records.read_metadata(str(out))
  clocks = 0
  for path in records.shard_files(str(out), metadata.name, 'test'):
    for serialized in tf.data.TFRecordDataset(path):
      features = records.parse_video_with_context(serialized)
      name = features['filename'].numpy().decode()
      with av.open(str(CODEC / os.path.basename(name))) as container:
        stream = container.streams.video[0]
        stamps = [frame.pts for frame in container.decode(stream)]
        declared = (stream.duration, stream.frames)
      pts = features['pts'].numpy().tolist()
      if features['timing'].numpy().decode() == 'container' and declared[0]:
        assert pts == stamps[:len(pts)] and len(pts) == int(features['num_frames']), name
        assert (int(features['stream_duration']), int(features['stream_frames'])) == declared
        clocks += 1
      else:
        assert pts == [] and int(features['stream_duration']) == 0, name
  assert clocks == 5 and records.stream_clocks(metadata, 'test') == clocks


def test_the_long_side_is_scaled_to_the_nearest_pixel():
  """Mutation audit: a long side truncated (a 1 px narrower frame in every video) passed every
  test."""
  assert video_io.output_size(641, 480, 256) == (342, 256)  # 341.87
  assert video_io.output_size(480, 641, 256) == (256, 342)
  assert video_io.output_size(639, 480, 256) == (341, 256)  # 340.8
  assert video_io.output_size(641, 480, 0) == (641, 480)


def test_rotated_videos_are_stored_upright(codec_records):
  out, _ = codec_records
  videos = {os.path.basename(k): v for k, v in _videos(out, 'test').items()}
  # The four files are different shots of a keyboard filmed with the phone turned 0/90/180/270
  # degrees (checked by eye: key legends read upright after conversion), so they are compared
  # with their own raw decode: turning the stored frames back by the tagged angle must give the
  # decoder's unrotated frames, and 90/270 must come out portrait.
  for angle in (0, 90, 180, 270):
    stored = videos[f'video_{angle}.mov'][3]
    raw = _direct_decode(CODEC / f'video_{angle}.mov', rotate=False)
    assert len(stored) == len(raw) == 3
    height, width = stored[0].shape[:2]
    assert (height > width) == (angle in (90, 270)), (angle, stored[0].shape)
    for frame, raw_frame in zip(stored, raw):
      back = np.rot90(frame, k=angle // 90)  # counter-clockwise undoes the clockwise fix
      assert back.shape == raw_frame.shape
      assert _psnr(back, raw_frame) > 30, angle
      if angle in (90, 180, 270):  # and the fix really changed the pixels
        assert not np.array_equal(frame.shape, raw_frame.shape) or _psnr(frame, raw_frame) < 20
  np.testing.assert_array_equal(
      [video_io.clockwise_rotation(_first_frame(CODEC / f'video_{a}.mov'), _stream_of(a))
       for a in (0, 90, 180, 270)], [0, 90, 180, 270])


def test_a_legacy_rotate_tag_turns_frames_clockwise():
  """The fixtures carry a display matrix, so the clockwise `rotate` tag of older files went
  untested (mutation audit: the tag read counter-clockwise passed the rotation tests)."""
  unrotated = types.SimpleNamespace(rotation=0)
  turns = [video_io.clockwise_rotation(unrotated, types.SimpleNamespace(metadata={'rotate': tag}))
           for tag in ('0', '90', '180', '270', '-90')]
  assert turns == [0, 90, 180, 270, 270]
  # A 2x3 frame turned 90 degrees clockwise: its bottom-left pixel goes to the top left.
  frame = np.arange(6).reshape(2, 3, 1)
  np.testing.assert_array_equal(video_io.upright(frame, 90)[..., 0], [[3, 0], [4, 1], [5, 2]])


def _first_frame(path):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path)) as container:
    return next(container.decode(video=0))


def _stream_of(angle):
  import av  # pylint: disable=g-import-not-at-top
  return av.open(str(CODEC / f'video_{angle}.mov')).streams.video[0]


def test_unordered_packets_give_frames_in_presentation_order(codec_records):
  out, _ = codec_records
  videos = {os.path.basename(k): v for k, v in _videos(out, 'test').items()}
  _, _, fps, frames = videos['unordered.mov']
  assert len(frames) == 4 and fps == pytest.approx(32.0)
  # The packets are stored out of presentation order (pts 0, 1536, 512, 1024); the frames come
  # out with increasing timestamps.
  times = [t for t, _, _ in video_io.iter_frames(str(CODEC / 'unordered.mov'))]
  assert times == sorted(times) and len(set(times)) == 4


def test_b_frame_packets_of_distinct_frames_are_stored_in_presentation_order(tmp_path):
  """unordered.mov's four frames are all white, so its test sees timestamps, not frames: here
  each frame's colour gives its index (the channels differ, so a channel swap shows too)."""
  import av  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'b_frames.mp4'
  colours = [(20 * i + 10, 230 - 20 * i, 90) for i in range(12)]
  with av.open(str(path), mode='w') as container:
    stream = container.add_stream('mpeg4', rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    stream.codec_context.max_b_frames, stream.codec_context.qscale = 2, 1
    for i, colour in enumerate(colours):
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), colour, np.uint8), format='rgb24')
      frame.pts = i
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  with av.open(str(path)) as container:
    stamps = [p.pts for p in container.demux(video=0) if p.pts is not None]
  assert stamps != sorted(stamps)  # stored out of presentation order
  video = video_io.decode_video(str(path), short_side=0)
  assert video.timing == video_io.TIMING_CONTAINER
  np.testing.assert_allclose([_jpeg(j).mean(axis=(0, 1)) for j in video.jpegs], colours, atol=6)


def test_stored_frames_match_a_direct_pyav_decode(codec_records):
  out, _ = codec_records
  videos = {os.path.basename(k): v for k, v in _videos(out, 'test').items()}
  label, label_text, fps, frames = videos['flipping_a_pancake.mkv']
  assert label_text == 'pancake' and label == 2 and fps == pytest.approx(30.0)
  direct = _direct_decode(CODEC / 'flipping_a_pancake.mkv')
  assert len(frames) == len(direct) == 310
  assert frames[0].shape == direct[0].shape == (96, 170, 3)
  for i in (0, 77, 155, 309):
    assert _psnr(frames[i], direct[i]) > 32, i  # JPEG quality 90
    assert np.abs(frames[i] - direct[i]).mean() < 3.0
  # Neighbouring frames differ more than the JPEG error: the comparison is frame-exact.
  assert _psnr(frames[155], direct[140]) < _psnr(frames[155], direct[155]) - 3


@pytest.fixture(scope='module')
def native_records(tmp_path_factory):
  """Every decodable codec fixture converted at its own size (--short_side=0)."""
  work = tmp_path_factory.mktemp('native')
  listing = work / 'videos.txt'
  listing.write_text(''.join(f'{CODEC / name} clip\n' for name in sorted(GOOD_FIXTURES)))
  out = work / 'records'
  assert _run('--dataset=list', f'--input={CODEC}', f'--annotations={listing}', '--name=native',
              '--split=test', f'--output={out}', '--short_side=0', '--workers=1') == 0
  return out


@pytest.mark.parametrize('name', sorted(GOOD_FIXTURES))
def test_stored_frames_are_the_decoder_output_frame_by_frame(native_records, name):
  stored = {os.path.basename(k): v for k, v in _videos(native_records, 'test').items()}[name][3]
  truth = [np.rot90(f, k=-(GOOD_FIXTURES[name] // 90)).astype(np.float32)
           for f in _independent_decode(CODEC / name)]
  assert len(stored) == len(truth)
  for i, frame in enumerate(stored):
    error = np.abs(frame - truth[i]).mean()
    assert error < 5.0, (name, i, error)  # JPEG quality 90 of the same frame
  # Frame i is much closer to true frame i than to any other distinct frame: order is exact.
  # Compared as 4x box-downsampled copies, all pairs at once (at full size the pairwise loop
  # took minutes on the 310-frame video).
  small = lambda f: f.reshape(f.shape[0] // 4, 4, f.shape[1] // 4, 4, 3).mean(axis=(1, 3))  # noqa: E731
  crop = lambda f: f[:f.shape[0] // 4 * 4, :f.shape[1] // 4 * 4]  # noqa: E731
  stored_small = np.stack([small(crop(f)) for f in stored])
  truth_small = np.stack([small(crop(f)) for f in truth])
  for i in range(len(truth)):
    errors = np.abs(truth_small - stored_small[i]).mean(axis=(1, 2, 3))
    distinct = np.abs(truth_small - truth_small[i]).mean(axis=(1, 2, 3)) > 2.0
    assert np.all(errors[i] < 0.75 * errors[distinct]), (name, i)


def test_avi_b_frames_are_timed_by_decoder_order_and_the_records_say_so(native_records):
  """AVI carries decode-order times for B-frames (PyAV's frame.time goes 0.04, 0.16, 0.12, ...):
  they are not presentation times, so they neither reorder nor time the frames."""
  import av  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = CODEC / 'bframes_h264.avi'
  with av.open(str(path)) as container:
    times = [f.time for f in container.decode(video=0)]
  assert any(b < a for a, b in zip(times, times[1:]))  # the container's times are scrambled
  video = video_io.decode_video(str(path), short_side=0)
  assert video.timing == video_io.TIMING_DECODER_ORDER and video.fps == 25.0
  timings = {}
  metadata = records.read_metadata(str(native_records))
  for shard in records.shard_files(str(native_records), metadata.name, 'test'):
    for serialized in tf.data.TFRecordDataset(shard):
      f = records.parse_video_with_context(serialized)
      timings[os.path.basename(f['filename'].numpy().decode())] = f['timing'].numpy().decode()
  assert timings['bframes_h264.avi'] == 'decoder_order'
  assert timings['flipping_a_pancake.mkv'] == timings['unordered.mov'] == 'container'
  assert metadata.extra['timing']['test'] == {'container': 6, 'decoder_order': 1}
  # Resampled to 10 fps, instant k shows decoder frame floor(2.5 k).
  resampled = video_io.decode_video(str(path), fps=10, short_side=0)
  truth = _independent_decode(path)
  assert len(resampled.jpegs) == 40
  for k in (0, 1, 7, 39):
    frame = _thumbnail(_jpeg(resampled.jpegs[k]), (80, 60))
    errors = [np.abs(frame - _thumbnail(t, (80, 60))).mean() for t in truth]
    assert int(np.argmin(errors)) == int(2.5 * k), k


@pytest.mark.skipif(shutil.which('ffmpeg') is None,
                    reason='ffmpeg is not installed: the cross-check against ffmpeg\'s own decode '
                    'needs it (the project itself never does)')
def test_independent_decode_equals_ffmpeg_passthrough():
  """The test's reference decode is what ffmpeg writes with -vsync passthrough, bit for bit."""
  for name in sorted(GOOD_FIXTURES):
    truth = np.stack(_independent_decode(CODEC / name))
    raw = subprocess.run(['ffmpeg', '-v', 'error', '-noautorotate', '-i', str(CODEC / name),
                          '-vsync', 'passthrough', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'],
                         capture_output=True, check=True).stdout
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(truth.shape), truth,
                                  err_msg=name)


def _write_vfr_video(path, times_ms, levels):
  """An MKV whose frames are flat grey `levels` shown at irregular `times_ms`."""
  import av  # pylint: disable=g-import-not-at-top
  import fractions  # pylint: disable=g-import-not-at-top
  with av.open(str(path), mode='w') as container:
    stream = container.add_stream('mpeg4', rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    stream.codec_context.time_base = fractions.Fraction(1, 1000)
    stream.codec_context.qscale = 1
    for t, level in zip(times_ms, levels):
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), level, np.uint8), format='rgb24')
      frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.mark.parametrize('path', [CODEC / 'bframes_h264.avi', CODEC / 'flipping_a_pancake.mkv',
                                  CODEC / 'unordered.mov', FIGHT / 'fight' / 'fi001.mp4'],
                         ids=lambda p: p.name)
def test_streamed_resampling_picks_the_frames_of_a_whole_decode(path):
  """Windowed predict resamples a stream it never holds whole: it kept a tick past the end of
  most videos and timed B-frame AVIs and millisecond Matroska stamps otherwise than the
  converter."""
  stamps = [t for t, _, _ in video_io.iter_frames(str(path), short_side=16)]
  rate, tolerance = video_io.stream_timing(str(path))
  times, timing = video_io.frame_times(stamps, rate)
  whole = tolerance if timing == video_io.TIMING_CONTAINER else 1e-6  # as decode_video
  duration = video_io.frame_duration(times, rate, whole)
  for fps in (8, 12.5, 15, 30, 60):
    streamed = list(video_io.resample_stream(((t, i) for i, t in enumerate(stamps)), rate, fps,
                                             tolerance))
    assert streamed == video_io.resample_times(times, fps, duration, whole), fps


def test_millisecond_timestamps_resample_evenly():
  """Matroska rounds timestamps to 1 ms: with a 1 us tolerance, 15 fps of a 30 fps clip took
  frames 0, 1, 4, 6, 7, 10, ... (every second one is right)."""
  path = str(CODEC / 'flipping_a_pancake.mkv')
  stamps = [t for t, _, _ in video_io.iter_frames(path, short_side=16)]
  rate, tolerance = video_io.stream_timing(path)
  assert rate == pytest.approx(30, abs=0.1) and tolerance == 0.0005
  times, _ = video_io.frame_times(stamps, rate)
  chosen = video_io.resample_times(times, 15, 1 / rate, tolerance)
  assert chosen == list(range(0, 2 * len(chosen), 2))
  # Its 310 frames last 10.33 s: 155 at 15 fps and 248 at 24 (the 33 ms median gap of the
  # rounded stamps ended it 0.3 ms early, and the last tick was lost: 154 and 247).
  for fps, count in ((15, 155), (24, 248), (10, 103)):
    assert len(video_io.decode_video(path, fps=fps, short_side=16).jpegs) == count, fps


def test_variable_frame_rate_keeps_order_and_resamples_by_timestamp(tmp_path):
  path = tmp_path / 'vfr.mkv'
  levels = [20, 60, 100, 140, 180, 220]
  _write_vfr_video(path, [0, 40, 120, 160, 300, 340], levels)
  native = video_io.decode_video(str(path), short_side=0)
  assert native.timing == video_io.TIMING_CONTAINER
  assert [round(_jpeg(j).mean()) for j in native.jpegs] == pytest.approx(levels, abs=3)
  # At 25 fps the instants 0, 40, ..., 320 ms (the last frame lasts one median gap, to 380 ms)
  # show the frame on screen at that instant.
  resampled = video_io.decode_video(str(path), fps=25, short_side=0)
  shown = [int(np.argmin([abs(_jpeg(j).mean() - v) for v in levels])) for j in resampled.jpegs]
  assert shown == [0, 1, 1, 2, 3, 3, 3, 3, 4]
  # Kept at its native rate, its clips (a count of frames) span different lengths of it: said
  # (the audit found it said nowhere); resampled, its frames are evenly timed.
  assert native.warnings == [
      'its frame rate varies (its frames are 40 to 116 ms apart): kept at its native rate, '
      'clips, which count frames, span different lengths of it; a fixed rate (data.convert '
      '--fps) evens them']
  assert resampled.warnings == []


def test_resampling_to_a_lower_frame_rate():
  video = video_io.decode_video(str(CODEC / 'flipping_a_pancake.mkv'), fps=10, short_side=48)
  assert video.fps == 10.0 and len(video.jpegs) == 103  # 310 frames / 30 fps * 10 fps
  assert video.source_fps == pytest.approx(30.0)
  # Capped by --max_frames, a resampled video keeps its first frames (mutation audit: the last
  # ones passed the resampling and max_frames tests).
  capped = video_io.decode_video(str(CODEC / 'flipping_a_pancake.mkv'), fps=10, short_side=48,
                                 max_frames=5)
  assert capped.jpegs == video.jpegs[:5] and capped.fps == 10.0


# ----------------------------------------------------------------------------- fight_surv
@pytest.fixture(scope='module')
def fight_subset(tmp_path_factory):
  """13 fight_surv clips from three source groups (both classes), converted with 1 worker."""
  with open(FIGHT / 'clips.csv') as f:
    rows = list(csv.DictReader(f))
  groups = ['https://www.youtube.com/watch?v=7q6KJoSgxmY',
            'https://www.youtube.com/watch?v=8-cqrFXPEtY',
            'https://www.youtube.com/watch?v=dVi_8-NHquo']
  chosen = [r for r in rows if r['source_group'] in groups]
  assert len(chosen) == 13
  work = tmp_path_factory.mktemp('fight')
  listing = work / 'clips.csv'
  with open(listing, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['path', 'label', 'source_group'])
    writer.writeheader()
    writer.writerows(chosen)
  out = work / 'records'
  args = ['--dataset=list', '--name=fight_surv', f'--input={FIGHT}',
          f'--annotations={listing}', '--split_by_group=source_group', '--val_fraction=0.3',
          f'--output={out}', '--short_side=64', '--workers=1', '--videos_per_shard=3']
  assert _run(*args) == 0
  return out, args, chosen


def test_fight_subset_records_labels_and_group_split(fight_subset):
  out, _, chosen = fight_subset
  metadata = records.read_metadata(str(out))
  assert metadata.name == 'fight_surv' and metadata.classes == ['fight', 'noFight']
  assert metadata.failures == []
  by_path = {r['path']: r for r in chosen}
  seen = {}
  for split in ('train', 'val'):
    videos = _videos(out, split)
    assert len(videos) == metadata.split_sizes[split] > 0
    for name, (label, text, fps, frames) in videos.items():
      assert text == by_path[name]['label'] and label == metadata.classes.index(text)
      assert 10 <= fps <= 30 and 20 <= len(frames) <= 142
      assert min(frames[0].shape[:2]) == 64
      seen[name] = split
  assert sorted(seen) == sorted(by_path)
  groups = {split: {by_path[n]['source_group'] for n, s in seen.items() if s == split}
            for split in ('train', 'val')}
  assert not groups['train'] & groups['val']
  assert metadata.extra['groups'] == {s: sorted(g) for s, g in groups.items()}


def test_second_run_skips_finished_shards_and_rewrites_a_lost_one(fight_subset, capsys):
  out, args, _ = fight_subset
  shards = sorted(glob.glob(str(out / 'fight_surv-*.tfrecord-*')))
  assert len(shards) >= 3
  before = {p: os.stat(p).st_mtime_ns for p in shards}
  capsys.readouterr()
  assert _run(*args) == 0
  assert f'Resuming: {len(shards)} of {len(shards)} shards already written' in \
      capsys.readouterr().err
  assert {p: os.stat(p).st_mtime_ns for p in shards} == before
  os.remove(shards[0])
  assert _run(*args) == 0
  after = {p: os.stat(p).st_mtime_ns for p in shards}
  assert os.path.exists(shards[0])
  assert [p for p in shards if after[p] != before.get(p)] == [shards[0]]


def test_a_rerun_rewrites_the_shard_of_a_video_whose_file_changed(tmp_path, capsys):
  """A video replaced by another file under its name (re-encoded, re-downloaded), or a broken
  one fixed, kept its old shard on a re-run ('Resuming: 1 of 1 shards already written'): the
  old frames, and the old failure (user audit). A source's size and modification time are part
  of its shard's fingerprint."""
  tree = tmp_path / 'videos'
  (tree / 'a').mkdir(parents=True)
  (tree / 'b').mkdir()
  shutil.copy(FIGHT / 'fight' / 'fi087.mp4', tree / 'a' / '1.mp4')
  shutil.copy(FIGHT / 'noFight' / 'nofi005.mp4', tree / 'b' / '3.mp4')
  (tree / 'b' / '5.mp4').write_bytes(b'garbage\n')
  out = tmp_path / 'out'
  args = ['--dataset=folder', f'--input={tree}', f'--output={out}', '--short_side=32',
          '--num_shards=1', '--workers=1']
  assert _run(*args) == 0
  assert len(_videos(out, 'train')['a/1.mp4'][3]) == 23
  assert [os.path.basename(f['file']) for f in records.read_metadata(str(out)).failures] == [
      '5.mp4']
  later = os.stat(tree / 'a' / '1.mp4').st_mtime_ns + 10**9
  for source, target in (('fight/fi063.mp4', 'a/1.mp4'), ('noFight/nofi007.mp4', 'b/5.mp4')):
    shutil.copy(FIGHT / source, tree / target)
    os.utime(tree / target, ns=(later, later))
  capsys.readouterr()
  assert _run(*args) == 0
  assert 'Resuming' not in capsys.readouterr().err
  videos = _videos(out, 'train')
  assert sorted(videos) == ['a/1.mp4', 'b/3.mp4', 'b/5.mp4']
  assert len(videos['a/1.mp4'][3]) == 142
  assert records.read_metadata(str(out)).failures == []
  # Bookkeeping from before sources were kept resumes as it is (review: an upgrade rewrote all).
  for state in (out / '.convert').glob('*.json'):
    kept = json.loads(state.read_text())
    del kept['sources']
    state.write_text(json.dumps(kept))
  assert _run(*args) == 0
  assert 'Resuming: 1 of 1 shards already written' in capsys.readouterr().err


def _fight_clips(videos: pathlib.Path, per_class: int) -> pathlib.Path:
  """A class folder tree of the first `per_class` fight and noFight clips (links to the shared
  test data)."""
  for label in ('fight', 'noFight'):
    (videos / label).mkdir(parents=True)
    for clip in sorted((FIGHT / label).glob('*.mp4'))[:per_class]:
      (videos / label / clip.name).symlink_to(clip)
  return videos


def _sixteen_fight_clips(videos: pathlib.Path) -> pathlib.Path:
  return _fight_clips(videos, 8)


@pytest.mark.parametrize('how', ['ctrl_c', 'sigterm_to_group', 'sigterm_to_converter'])
def test_a_ctrl_c_or_sigterm_keeps_finished_shards_in_one_line_and_the_same_command_resumes(
    tmp_path, how):
  """A Ctrl-C (to the whole process group, as a terminal sends it) printed a KeyboardInterrupt
  traceback; the console also began with TensorFlow's start-up notices (the converter's command
  did not quiet TensorFlow as the others do). A scheduler's time limit (SLURM signals every
  process of the job) or a `kill` ended the conversion at once with no word of what stays, and
  with multiprocessing's 'leaked semaphore objects' warning."""
  videos = _sixteen_fight_clips(tmp_path / 'videos')
  out = tmp_path / 'records'
  command = [sys.executable, '-m', 'data.convert', '--dataset=folder', f'--input={videos}',
             f'--output={out}', '--short_side=32', '--videos_per_shard=1',
             f"--workers={1 if how == 'ctrl_c' else 2}"]
  env = {k: v for k, v in subprocess_env().items() if k not in data.TENSORFLOW_ENV}
  proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while len(glob.glob(str(out / '*.tfrecord-*'))) < 2 and time.monotonic() < deadline:
    time.sleep(0.02)
  send = os.kill if how == 'sigterm_to_converter' else os.killpg
  send(proc.pid, signal.SIGINT if how == 'ctrl_c' else signal.SIGTERM)
  _, console = proc.communicate(timeout=120)
  status, said = (130, 'Interrupted by Ctrl-C') if how == 'ctrl_c' else (143, 'Stopped by SIGTERM')
  assert proc.returncode == status, console[-3000:]
  assert not any(word in console for word in ('Traceback', 'oneDNN', 'leaked')), console[-3000:]
  assert console.strip().splitlines()[-1] == (
      f'{said}: the shards completed so far stay in {out}, and the same command resumes from '
      f'them. Exit status {status}.')
  done = len(glob.glob(str(out / '*.tfrecord-*')))
  assert 2 <= done < 16
  resumed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resuming: {done} of 16 shards already written' in resumed.stderr
  metadata = records.read_metadata(str(out))
  assert metadata.split_sizes == {'train': 16} and not metadata.failures


def test_an_output_whose_filesystem_takes_no_locks_is_converted_with_a_warning(tmp_path,
                                                                              monkeypatch, capsys):
  """Lustre without its flock option, some FUSE mounts: flock fails, so the one-writer guard is
  off there; the conversion goes on and says so rather than guarding nothing in silence."""
  import fcntl  # pylint: disable=g-import-not-at-top
  videos = _fight_clips(tmp_path / 'videos', 2)
  out = tmp_path / 'records'

  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(fcntl, 'flock', no_locks)
  assert _run('--dataset=folder', f'--input={videos}', f'--output={out}', '--short_side=32',
              '--workers=1') == 0
  err = capsys.readouterr().err
  assert (f'warning: {out} takes no file locks (its filesystem has none, or they are off): a '
          'second conversion into it would not be refused') in err
  assert records.read_metadata(str(out)).split_sizes == {'train': 4}
  assert len(records.shard_files(str(out), 'folder', 'train')) == 1


@pytest.mark.parametrize('given', ['missing', 'a file'])
def test_an_input_that_is_no_folder_is_refused_in_one_line(given, tmp_path, capsys):
  """A mistyped --input (README review: UCF-10 for UCF-101) made every listed video a failure
  line, then ended in 'no video of split(s) ... could be converted', leaving an output folder of
  empty shards and a metadata.json."""
  videos = tmp_path / 'UCF-10'
  if given == 'a file':
    videos.write_text('not the videos')
  out = tmp_path / 'out'
  assert _run('--dataset=ucf101', f'--input={videos}', f'--output={out}', '--workers=1',
              f'--annotations={ANNOTATIONS / "ucf101_official_splits"}') == 2
  reason = 'does not exist' if given == 'missing' else 'is a file, not the folder the videos are in'
  assert capsys.readouterr().err == f'error: --input {videos} {reason}.\n'
  assert not out.exists()


@pytest.mark.parametrize('where', ['a_file', 'under_a_file'])
def test_an_output_that_cannot_be_written_is_refused_in_one_line(where, fight_subset, tmp_path,
                                                                  capsys):
  """An --output naming a file, or a folder under one, ended the conversion in an OSError
  traceback from os.makedirs (and a folder it may not write, in TensorFlow's
  PermissionDeniedError from the first shard); data.report's --output did the same."""
  from data import report  # pylint: disable=g-import-not-at-top
  (tmp_path / 'file').write_text('kept')
  output = tmp_path / 'file' if where == 'a_file' else tmp_path / 'file' / 'records'
  reason = 'it is a file, not a directory' if where == 'a_file' else 'Not a directory'
  assert _run('--dataset=folder', f'--input={FIGHT}', f'--output={output}', '--workers=1') == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f'error: Cannot write the records to {output}: {reason}.')
  records_dir = fight_subset[0]
  assert report.main([f'--records={records_dir}', f'--output={output}']) == 1
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f'error: Cannot write the data card to {output}: {reason}. Pass another --output.')
  assert (tmp_path / 'file').read_text() == 'kept'


def _children(pid):
  """The pids of the processes whose parent is `pid` (from /proc)."""
  children = []
  for stat in glob.glob('/proc/[0-9]*/stat'):
    try:
      with open(stat) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:  # ended meanwhile
      continue
    if int(fields[1]) == pid:
      children.append(int(stat.split('/')[2]))
  return children


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def test_the_decoder_processes_of_a_killed_conversion_end_with_it(tmp_path):
  """A conversion killed with SIGKILL (the OOM killer, `kill -9`) left its decoder processes
  waiting for work that never came, for good: each holding its memory, and the console's pipe
  open (a `| tee` never ended)."""
  videos = _sixteen_fight_clips(tmp_path / 'videos')
  out = tmp_path / 'records'
  command = [sys.executable, '-m', 'data.convert', '--dataset=folder', f'--input={videos}',
             f'--output={out}', '--short_side=32', '--workers=2', '--videos_per_shard=1']
  env = {k: v for k, v in subprocess_env().items() if k not in data.TENSORFLOW_ENV}
  proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 120
    while len(glob.glob(str(out / '*.tfrecord-*'))) < 2 and time.monotonic() < deadline:
      time.sleep(0.02)
    workers = [pid for pid in _children(proc.pid)
               if 'spawn_main' in pathlib.Path(f'/proc/{pid}/cmdline').read_text()]
    assert len(workers) == 2, workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)  # every holder of the pipes has ended
    deadline = time.monotonic() + 30
    while any(map(_alive, workers)) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not any(map(_alive, workers)), workers
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(proc.pid, signal.SIGKILL)


def test_a_full_disk_keeps_finished_shards_in_one_line_and_the_same_command_resumes(
    small_disk, tmp_path, capsys):
  """Records larger than the disk (1 MiB) ended in TensorFlow's ResourceExhaustedError
  traceback, and the half-written shard stayed, holding the space a re-run needs."""
  videos = _sixteen_fight_clips(tmp_path / 'videos')
  out = small_disk / 'records'
  command = ['--dataset=folder', f'--input={videos}', f'--output={out}', '--short_side=64',
             '--workers=1', '--videos_per_shard=1']
  assert _run(*command) == 1
  finished = sorted(glob.glob(str(out / '*.tfrecord-*')))
  assert 1 <= len(finished) < 16
  said = capsys.readouterr().err.strip().splitlines()[-1]
  assert re.fullmatch(rf'error: Cannot write {out}/folder-train\.tfrecord-\d+-of-00016: No '
                      r'space left on device; the command stopped there\. The shards finished so '
                      rf'far stay in {out}; free some space and the same command resumes from '
                      r'them\.', said), said
  assert not glob.glob(str(out / '.*.incomplete'))
  subprocess.run(['mount', '-o', 'remount,size=20m', str(small_disk)], check=True)
  assert _run(*command) == 0
  assert f'Resuming: {len(finished)} of 16 shards already written' in capsys.readouterr().err
  assert records.read_metadata(str(out)).split_sizes == {'train': 16}


def test_tfds_builder_from_directory_reads_the_output(fight_subset):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  out, _, _ = fight_subset
  metadata = records.read_metadata(str(out))
  builder = tfds.builder_from_directory(str(out))
  assert builder.info.name == 'fight_surv'
  assert {s: builder.info.splits[s].num_examples for s in ('train', 'val')} == \
      metadata.split_sizes
  label = builder.info.features['clip']['label']['index']
  assert label.names == ['fight', 'noFight']
  examples = list(tfds.as_numpy(builder.as_dataset('val')))
  assert len(examples) == metadata.split_sizes['val']
  for example in examples:
    assert label.names[example['clip']['label']['index']] == \
        example['clip']['label']['text'].decode()
    assert example['video']['num_frames'] > 0
  # The frames (a SequenceExample feature list TFDS cannot express) through the same file list.
  full = list(records.tfds_video_dataset(str(out), 'val').as_numpy_iterator())
  assert [e['filename'] for e in full] == [e['video']['filename'] for e in examples]
  assert all(e['video'].shape[0] == e['num_frames'] and e['video'].shape[3] == 3 for e in full)


def test_truncated_shard_is_a_clear_error_naming_the_file(fight_subset, tmp_path, config):
  from data import pipeline  # pylint: disable=g-import-not-at-top
  out, _, _ = fight_subset
  copy = tmp_path / 'records'
  shutil.copytree(out, copy)
  shard = sorted(glob.glob(str(copy / 'fight_surv-train.tfrecord-*')))[0]
  with open(shard, 'r+b') as f:
    f.truncate(os.path.getsize(shard) // 2)
  config.dataset.data_dir = str(copy)
  config.dataset.name = 'fight_surv'
  with pytest.raises(records.CorruptShardError, match=f'{shard}.*truncated'):
    pipeline.train_dataset(config, seed=0)
  with pytest.raises(records.CorruptShardError, match=shard):
    records.verify_records(shard)


@pytest.mark.parametrize('damage', ['frame', 'label'])
def test_an_undecodable_frame_or_a_label_beyond_the_classes_is_one_line(fight_subset, tmp_path,
                                                                       config, damage):
  """Records written by other code or a faulty writer (their checksums hold): a frame that is no
  image ended an evaluation in a 41-line TensorFlow traceback naming neither the split nor the
  records; a label beyond the classes was trained on as no class at all, and evaluated as a
  class of its own until the predictions file failed with an IndexError."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out, _, _ = fight_subset
  copy = tmp_path / 'records'
  shutil.copytree(out, copy)
  shard = sorted(glob.glob(str(copy / 'fight_surv-val.tfrecord-*')))[0]
  examples = [tf.train.SequenceExample.FromString(r.numpy())
              for r in tf.data.TFRecordDataset(shard)]
  if damage == 'frame':
    frame = examples[0].feature_lists.feature_list[records.IMAGE_KEY].feature[0].bytes_list
    frame.value[0] = b'X' * len(frame.value[0])  # the same size: the shard's recorded size holds
    said = (f"A frame in the records of split 'val' of 'fight_surv' in {copy} cannot be decoded "
            'as an image (Unknown image file format.')
  else:
    examples[0].context.feature[records.LABEL_INDEX_KEY].int64_list.value[0] = 7
    said = (f"The records of split 'val' of 'fight_surv' in {copy} hold label 7, beyond their 2 "
            'classes (metadata.json): records written by other code? Convert the split again.')
  with tf.io.TFRecordWriter(shard) as writer:
    for example in examples:
      writer.write(example.SerializeToString())
  config.dataset.data_dir = str(copy)
  config.dataset.name = 'fight_surv'
  ds, _, info = pipeline.eval_dataset(config, 'val')
  with pytest.raises(records.CorruptShardError, match=re.escape(said)):
    for _ in pipeline.as_numpy(ds, info):
      pass


# ----------------------------------------------------------------------------- bad input
def test_unknown_labels_fail_before_decoding_listing_every_offender(tmp_path, capsys):
  classes = tmp_path / 'classes.txt'
  classes.write_text('fight\nnoFight\n')
  listing = tmp_path / 'list.txt'
  listing.write_text('fight/fi001.mp4 fight\nfight/fi002.mp4 punching\n'
                     'noFight/nofi001.mp4 walking\nnoFight/nofi002.mp4 punching\n')
  out = tmp_path / 'out'
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={listing}',
              f'--class_list={classes}', f'--output={out}') == 2
  err = capsys.readouterr().err
  assert "2 label(s) not in the 2-class list" in err
  assert "'punching' (line 2)" in err and "'walking' (line 3)" in err
  assert not glob.glob(str(out / '*.tfrecord-*'))
  # The same for a CSV list.
  table = tmp_path / 'list.csv'
  table.write_text('path,label\nfight/fi001.mp4,fight\nfight/fi002.mp4,kicking\n')
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={table}',
              f'--class_list={classes}', f'--output={out}') == 2
  assert "'kicking' (line 3)" in capsys.readouterr().err


def test_integer_labels_of_classes_named_by_integers_are_read_as_the_user_says(tmp_path, capsys):
  """Classes named '0', '1', '10', '2' (folders named by number sort as text) and a list labelling
  a video '2': the label was read as index 2, class '10', without a word (user audit). Where
  both readings fit every label and disagree the converter refuses, and --integer_labels picks
  one."""
  classes = tmp_path / 'classes.txt'
  classes.write_text('0\n1\n10\n2\n')
  table = tmp_path / 'list.csv'
  table.write_text('path,label\nfight/fi001.mp4,2\nnoFight/nofi001.mp4,0\n')
  common = ['--dataset=list', f'--input={FIGHT}', f'--annotations={table}',
            f'--class_list={classes}', '--short_side=32', '--max_frames=4', '--workers=1']
  out = tmp_path / 'out'
  assert _run(*common, f'--output={out}') == 2
  assert (f"{table}:2: label '2' is the class named '2' and also index 2 of the class list, "
          "class '10': say which it is with --integer_labels=name or --integer_labels=index."
          ) in capsys.readouterr().err
  assert not out.exists() or not glob.glob(str(out / '*.tfrecord-*'))
  for how, expected in (('name', {'fight/fi001.mp4': 3, 'noFight/nofi001.mp4': 0}),
                        ('index', {'fight/fi001.mp4': 2, 'noFight/nofi001.mp4': 0})):
    assert _run(*common, f'--output={tmp_path / how}', f'--integer_labels={how}') == 0
    assert {name: video[0] for name, video in _videos(tmp_path / how, 'train').items()} == (
        expected), how
  # Where one reading alone fits every label it is taken (review): '10' is no index of 4
  # classes, so these are names; no class is named '0' or '1' of 01, 02, so those are indices.
  table.write_text('path,label\nfight/fi001.mp4,10\nnoFight/nofi001.mp4,2\n')
  assert _run(*common, f'--output={tmp_path / "names"}') == 0
  assert {name: video[0] for name, video in _videos(tmp_path / 'names', 'train').items()} == {
      'fight/fi001.mp4': 2, 'noFight/nofi001.mp4': 3}
  padded = tmp_path / 'padded.txt'
  padded.write_text('01\n02\n')
  table.write_text('path,label\nfight/fi001.mp4,1\nnoFight/nofi001.mp4,0\n')
  assert _run(*common, f'--class_list={padded}', f'--output={tmp_path / "padded"}') == 0
  assert {name: video[0] for name, video in _videos(tmp_path / 'padded', 'train').items()} == {
      'fight/fi001.mp4': 1, 'noFight/nofi001.mp4': 0}
  # The flag beside labels that are all names would be ignored.
  table.write_text('path,label\nfight/fi001.mp4,10\nnoFight/nofi001.mp4,x\n')
  capsys.readouterr()
  assert _run(*common, f'--output={out}', '--integer_labels=index') == 2
  assert 'labels mix integers' in capsys.readouterr().err
  named = tmp_path / 'named.txt'
  named.write_text('fight/fi001.mp4 fight\n')
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={named}',
              f'--output={out}', '--integer_labels=name', '--dry_run') == 2
  assert (f'{named}: --integer_labels=name reads integer labels, and this file has none: it '
          'would be ignored.') in capsys.readouterr().err
  # Readings that agree need no flag; the flag is for integer labels only.
  table.write_text('path,label\nfight/fi001.mp4,1\nnoFight/nofi001.mp4,0\n')
  assert _run(*common, f'--output={tmp_path / "agree"}') == 0
  assert _run('--dataset=folder', f'--input={FIGHT}', f'--output={tmp_path / "folder"}',
              '--integer_labels=name') == 2
  assert ('--integer_labels only applies to --dataset=list|frames: with --dataset=folder it '
          'would be ignored.') in capsys.readouterr().err


@pytest.mark.parametrize('rows, said', [
    ('path,label\nfight/fi001.mp4,fight\nfight/fi002.mp4,fight\nfight/fi001.mp4,fight\n',
     "fight/fi001.mp4 (train as 'fight', train as 'fight')"),
    ('path,label\nfight/fi001.mp4,fight\nfight/fi001.mp4,noFight\n',
     "fight/fi001.mp4 (train as 'fight', train as 'noFight')"),
    ('path,label,g\nfight/fi001.mp4,fight,g1\nnoFight/nofi004.mp4,noFight,g2\n'
     'fight/fi001.mp4,fight,g2\n', "fight/fi001.mp4 ("),
    ('path,label,g\nfight/fi001.mp4,fight,g1\nnoFight/nofi004.mp4,noFight,g2\n'
     './fight//fi001.mp4,fight,g2\n',
     "(train as 'fight' (fight/fi001.mp4), val as 'fight' (./fight//fi001.mp4))"),
], ids=['twice', 'two_labels', 'two_groups', 'two_spellings'])
def test_a_video_listed_twice_is_refused_before_decoding(tmp_path, capsys, rows, said):
  """Every row was written: a video twice in a split, with two labels, or in train and val at
  once (a video of two groups defeated the group split, a val video was trained on); spelt
  'fight/fi001.mp4' and './fight//fi001.mp4' it went to train and val without a word."""
  table = tmp_path / 'list.csv'
  table.write_text(rows)
  out = tmp_path / 'out'
  extra = ['--split_by_group=g', '--val_groups=g2'] if ',g\n' in rows else []
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={table}', f'--output={out}',
              *extra) == 2
  err = capsys.readouterr().err
  assert 'error: 1 video(s) are listed more than once: ' in err and said in err, err
  assert not out.exists()


def test_a_split_given_twice_for_frame_lists_is_refused(tmp_path, capsys):
  """The second TSN list of a split replaced the first without a word (4 rows, 2 written)."""
  for name, rows in (('part1.txt', 'fA 40 a\nfB 40 b\n'), ('part2.txt', 'fC 40 b\n')):
    (tmp_path / name).write_text(rows)
  assert _run('--dataset=frames', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
              f'--annotations={tmp_path / "part1.txt"},{tmp_path / "part2.txt"}') == 2
  assert ("error: Split 'train' is given twice in --annotations "
          f"({tmp_path / 'part2.txt'} is the second)") in capsys.readouterr().err


@pytest.mark.parametrize('kind, flag', [('frames', '--fps=10'), ('frames', '--interpolation=AREA'),
                                        ('folder', '--frames_fps=10'),
                                        ('folder', '--frame_start=0'),
                                        ('ucf101', '--class_list=classes.txt'),
                                        ('ssv2', '--class_list=classes.txt'),
                                        ('kinetics400', '--fold=2'),
                                        ('kinetics400', '--fold=1'),  # the default's value
                                        ('folder', '--kinetics_csv=k400.csv'),
                                        ('kinetics400', '--label_index_base=1'),
                                        ('folder', '--label_column=class'),
                                        ('list', '--path_column=file')])
def test_flags_of_the_other_source_kind_are_refused(tmp_path, capsys, kind, flag):
  """`--dataset=frames --fps=10` stored every frame at their own rate while metadata.json said
  fps 10; the frame flags were ignored for videos likewise, and so were --class_list for ucf101,
  hmdb51 and ssv2 (their official order was kept, not the one asked for), --fold outside
  ucf101/hmdb51 and the list-only flags elsewhere."""
  (tmp_path / 'list.txt').write_text('fA 40 a\n')
  assert _run(f'--dataset={kind}', f'--input={FIGHT}', f'--output={tmp_path / "out"}',
              f'--annotations={tmp_path / "list.txt"}', flag) == 2
  err = capsys.readouterr().err
  assert f'error: --{flag[2:].split("=")[0]} only applies to ' in err and 'ignored' in err, err


def test_left_out_files_and_classes_differing_in_case_are_warned_about(tmp_path, capsys):
  """A folder tree's .ts/.mts videos were left out without a word; a label typo ('Fight')
  became a class of its own, said only by the class count."""
  tree = tmp_path / 'tree'
  for label, source in (('fight', 'fight/fi001.mp4'), ('Fight', 'fight/fi002.mp4'),
                        ('noFight', 'noFight/nofi001.mp4')):
    (tree / label).mkdir(parents=True)
    (tree / label / os.path.basename(source)).symlink_to(FIGHT / source)
  (tree / 'fight' / 'x2.ts').write_bytes(b'')
  (tree / 'noFight' / 'notes.txt').write_text('')
  (tree / 'stray.mp4').symlink_to(FIGHT / 'fight/fi003.mp4')  # in no class folder (data audit)
  (tree / 'README.txt').write_text('')
  # A link to nowhere there, a video the user thinks is there: said (README review).
  (tree / 'lost.mp4').symlink_to(tmp_path / 'nowhere' / 'lost.mp4')
  assert _run('--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}',
              '--dry_run') == 0
  err = capsys.readouterr().err
  assert ('warning: 2 file(s) in the class folders are left out, their extensions not being '
          'among --extensions (fight/x2.ts, noFight/notes.txt)') in err, err
  assert (f'warning: 1 video(s) directly in {tree} are in no class folder and left out '
          '(stray.mp4): move each into the folder of its class.') in err, err
  assert (f'warning: 1 link(s) under {tree} lead nowhere and are left out (lost.mp4): what '
          'they stood for (a folder or video on a disk not mounted?) is not in the records.'
          ) in err, err
  assert "warning: classes 'Fight', 'fight' differ in case only" in err, err


def test_converting_a_split_again_with_other_settings_is_warned_about(tmp_path, capsys):
  """Records re-converted in place with another --fps replaced those a model was trained on
  without a word."""
  listing = tmp_path / 'list.txt'
  listing.write_text('fight/fi001.mp4 fight\nnoFight/nofi001.mp4 noFight\n')
  out = tmp_path / 'out'
  common = ['--dataset=list', f'--input={FIGHT}', f'--annotations={listing}', f'--output={out}',
            '--short_side=24', '--workers=1']
  assert _run(*common, '--fps=2') == 0
  assert 'converted again' not in capsys.readouterr().err
  assert _run(*common, '--fps=3') == 0
  assert ("warning: split 'train' is converted again with other settings (fps 2.0 -> 3.0): "
          'a model trained on the old records sees other frames') in capsys.readouterr().err


def test_a_label_one_typo_from_a_larger_class_is_warned_about(tmp_path, capsys):
  """Without --class_list, a CSV label 'figth' became a third class, said only by a warning
  that val had no video of it."""
  table = tmp_path / 'list.csv'
  rows = [f'fight/fi00{i}.mp4,fight' for i in range(1, 5)] + ['fight/fi005.mp4,figth']
  rows += [f'noFight/nofi00{i}.mp4,noFight' for i in range(1, 3)]
  table.write_text('path,label\n' + '\n'.join(rows) + '\n')
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={table}',
              f'--output={tmp_path / "out"}', '--dry_run') == 0
  err = capsys.readouterr().err
  assert ("warning: classes 'fight' (4 videos) and 'figth' (1) are one typo apart: if the "
          'smaller is a misspelt label, correct it') in err, err
  assert err.count('one typo apart') == 1  # 'fight' and 'noFight' are not


def test_classes_left_without_videos_by_failures_are_warned_about(tmp_path, capsys):
  """A list's header line ('path label') became class 'label' with a missing video: the
  converter named the missing file only, not that a class of the model has no video."""
  listing = tmp_path / 'list.txt'
  listing.write_text('path label\nfight/fi001.mp4 fight\nnoFight/nofi001.mp4 noFight\n')
  out = tmp_path / 'out'
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={listing}',
              f'--output={out}', '--short_side=32', '--workers=1', '--fps=2') == 0
  assert ("warning: split 'train': no video of class(es) ['label'] could be converted (see the "
          'failures above)') in capsys.readouterr().err
  assert records.read_metadata(str(out)).classes == ['fight', 'label', 'noFight']


def test_missing_and_corrupt_videos_never_lose_the_others(tmp_path):
  listing = tmp_path / 'list.txt'
  listing.write_text(f'fight/fi001.mp4 fight\nfight/missing.mp4 fight\n'
                     f'{CODEC / "corrupted.mp4"} noFight\nnoFight/nofi001.mp4 noFight\n')
  out = tmp_path / 'out'
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={listing}',
              f'--output={out}', '--short_side=32', '--workers=1', '--num_shards=1') == 0
  metadata = records.read_metadata(str(out))
  assert metadata.split_sizes == {'train': 2}
  assert sorted(os.path.basename(f['file']) for f in metadata.failures) == \
      ['corrupted.mp4', 'missing.mp4']
  assert sorted(_videos(out, 'train')) == ['fight/fi001.mp4', 'noFight/nofi001.mp4']
  # Training and evaluation say the split lacks them: they counted 2 videos without a word.
  assert ("Split 'train' of 'list' lacks 2 of its listed videos, which the converter left out "
          "(not found, listed twice or unreadable; the records' failures.csv names them): "
          'training and evaluation see its other 2.') in datasets.check_records(metadata, 'train')


def test_shards_are_counted_by_the_videos_found_not_the_listed_ones(tmp_path, capsys):
  """A partial copy of UCF101 converted with --fold=all wrote 1,252 shard files for its 9 videos
  (README audit): the shard count came from the listed videos, found or not. It comes from the
  found ones; each missing video is still a failure, in the bookkeeping of some shard. A missing
  video found later rewrites its own shard alone (review: cutting the found videos apart from
  the missing ones moved every shard's boundary)."""
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(f'fight/gone{i}.mp4 fight\n' for i in range(5)) +
                     'fight/fi001.mp4 fight\nnoFight/nofi001.mp4 noFight\n')
  out = tmp_path / 'out'
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={listing}',
              f'--output={out}', '--short_side=32', '--max_frames=4', '--workers=1',
              '--videos_per_shard=1') == 0
  metadata = records.read_metadata(str(out))
  assert metadata.num_shards == {'train': 2}, metadata.num_shards
  assert len(records.shard_files(str(out), 'list', 'train')) == 2
  assert sorted(_videos(out, 'train')) == ['fight/fi001.mp4', 'noFight/nofi001.mp4']
  assert sorted(os.path.basename(f['file']) for f in metadata.failures) == [
      f'gone{i}.mp4' for i in range(5)]
  # An explicit --num_shards is capped by the videos found, as it was by the listed ones.
  capped = tmp_path / 'capped'
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={listing}',
              f'--output={capped}', '--short_side=32', '--max_frames=4', '--workers=1',
              '--num_shards=6') == 0
  assert records.read_metadata(str(capped)).num_shards == {'train': 2}
  tree = tmp_path / 'partial'
  for clip in ('fi001', 'fi002', 'fi003', 'fi004'):
    (tree / 'fight').mkdir(parents=True, exist_ok=True)
    (tree / 'fight' / f'{clip}.mp4').symlink_to(FIGHT / 'fight' / f'{clip}.mp4')
  listing.write_text(''.join(f'fight/fi00{i}.mp4 fight\n' for i in range(1, 6)) +
                     ''.join(f'fight/gone{i}.mp4 noFight\n' for i in range(3)))
  common = ['--dataset=list', f'--input={tree}', f'--annotations={listing}',
            f'--output={tmp_path / "filled"}', '--short_side=32', '--max_frames=4',
            '--workers=1', '--num_shards=4']
  assert _run(*common) == 0
  (tree / 'fight' / 'fi005.mp4').symlink_to(FIGHT / 'fight' / 'fi026.mp4')
  capsys.readouterr()
  assert _run(*common) == 0
  assert 'Resuming: 3 of 4 shards already written' in capsys.readouterr().err


def test_split_folders_given_as_the_class_folder_tree_are_refused_with_the_commands(tmp_path,
                                                                                    capsys):
  """ROOT/train/<class>/... and ROOT/val/<class>/..., the commonest layout, converted into a
  'train vs val' classifier, its real classes made groups, without a word (user audit)."""
  tree = tmp_path / 'videos'
  for split, label, clip in (('train', 'fight', 'fi001'), ('train', 'noFight', 'nofi001'),
                             ('Val', 'fight', 'fi002'), ('Val', 'noFight', 'nofi002')):
    (tree / split / label).mkdir(parents=True, exist_ok=True)
    (tree / split / label / f'{clip}.mp4').symlink_to(FIGHT / label / f'{clip}.mp4')
  out = tmp_path / 'out'
  assert _run('--dataset=folder', f'--input={tree}', f'--output={out}', '--dry_run') == 2
  assert (f"error: {tree}: its folders (Val, train) are named like splits, not classes: convert "
          f"each with its split into one output, e.g. --input={tree / 'train'} --split=train, "
          f"then --input={tree / 'Val'} --split=val (or pass --class_list if they are the "
          "classes).") in capsys.readouterr().err
  for folder, split in (('train', 'train'), ('Val', 'val')):
    assert _run('--dataset=folder', f'--input={tree / folder}', f'--split={split}',
                f'--output={out}', '--short_side=32', '--max_frames=4', '--workers=1') == 0
  metadata = records.read_metadata(str(out))
  assert (metadata.classes, metadata.split_sizes) == (['fight', 'noFight'], {'train': 2, 'val': 2})


def test_a_class_folder_link_to_nowhere_is_refused_not_left_out(tmp_path, capsys):
  """A class folder linked from another disk that is not mounted (`c -> /mnt/other/c`) was left
  out without a word: the model got 2 classes instead of 3 (user audit)."""
  tree = _sixteen_fight_clips(tmp_path / 'videos')
  (tree / 'walking').symlink_to(tmp_path / 'unmounted' / 'walking')
  out = tmp_path / 'out'
  assert _run('--dataset=folder', f'--input={tree}', f'--output={out}', '--dry_run') == 2
  assert (f"error: {tree / 'walking'}: a link to {tmp_path / 'unmounted' / 'walking'}, which is "
          'not there: its class would be left out of the model. Make it reachable (mount it) '
          'or remove the link.') in capsys.readouterr().err
  (tree / 'walking').unlink()
  # A link to nowhere named like a file is a file's, not a class folder's (review).
  (tree / 'notes.txt').symlink_to(tmp_path / 'unmounted' / 'notes.txt')
  # One inside a class folder (a group folder elsewhere) was named as a file of another
  # extension (user audit); it is said to lead nowhere.
  (tree / 'fight' / 'g9').symlink_to(tmp_path / 'unmounted' / 'g9')
  capsys.readouterr()
  assert _run('--dataset=folder', f'--input={tree}', f'--output={out}', '--dry_run') == 0
  err = capsys.readouterr().err
  assert (f'warning: 1 link(s) under {tree} lead nowhere and are left out (fight/g9): '
          'what they stood for (a folder or video on a disk not mounted?) is not in the records.'
          ) in err
  assert 'their extensions not being among --extensions' not in err


def test_class_folder_tree_problems_are_named_before_decoding(tmp_path, capsys):
  """Folders without videos would become classes nobody trains; a class on one side of a group
  split is warned about; a re-conversion that moves groups between train and val is refused
  (a trained model would be scored on its own training videos)."""
  tree, out = tmp_path / 'videos', tmp_path / 'out'
  for target, source in [('a/g1/fi001.mp4', 'fight/fi001.mp4'),
                         ('b/g3/nofi001.mp4', 'noFight/nofi001.mp4'),
                         ('b/g4/nofi002.mp4', 'noFight/nofi002.mp4')]:
    (tree / target).parent.mkdir(parents=True, exist_ok=True)
    (tree / target).symlink_to(FIGHT / source)
  (tree / 'c').mkdir()
  (tree / 'd').mkdir()
  (tree / 'd' / 'notes.txt').write_text('not a video')
  args = ['--dataset=folder', f'--input={tree}', '--split_by_group=subfolder',
          '--val_fraction=0.5', f'--output={out}', '--short_side=32', '--workers=1']
  assert _run(*args) == 2
  assert "2 class folder(s) hold no video with extensions" in capsys.readouterr().err
  assert not out.exists() or not glob.glob(str(out / '*.tfrecord-*'))
  shutil.rmtree(tree / 'c')
  shutil.rmtree(tree / 'd')
  assert _run(*args) == 0
  err = capsys.readouterr().err
  assert re.search(r"warning: split '(train|val)' has no video of 1 of the 2 classes: "
                   r"\['[ab]'\]", err), err
  # The records keep the count per class of what was written, so training and evaluation on
  # the split say so too (data.pipeline.split_info logs these warnings).
  metadata = records.read_metadata(str(out))
  lacking = next(s for s, counts in metadata.extra['videos_per_class'].items() if 0 in counts)
  assert sum(metadata.extra['videos_per_class'][lacking]) == metadata.split_sizes[lacking]
  warning, = datasets.check_records(metadata, lacking)
  assert re.match(rf"Split '{lacking}' of 'folder' holds no video of 1 of its 2 classes: "
                  r"\['[ab]'\]; trained on, the model never sees them", warning)
  groups = metadata.extra['groups']
  moved = next(g for g in groups['train'])
  by_name = [a for a in args if not a.startswith('--val_fraction')]
  assert _run(*by_name, f'--val_groups={moved}') == 2
  err = capsys.readouterr().err
  assert 'would move, e.g. ' in err and f'{moved} (train -> val)' in err
  assert f"--val_groups={','.join(groups['val'])} (in place of --val_fraction" in err
  assert _run(*args) == 0  # the same split again: nothing moves
  assert _run(*by_name, f"--val_groups={','.join(groups['val'])}") == 0  # as the error says


@pytest.mark.parametrize('flag', ['--val_fraction=0.3', '--val_groups=g1', '--group_seed=3'])
def test_group_split_flags_without_a_group_split_are_refused(flag, tmp_path, capsys):
  """Without --split_by_group a val share or val groups asked for would be ignored (a folder
  tree would go to train alone, and training find no val split after its first steps); a group
  split asked of a dataset with splits of its own likewise."""
  tree = tmp_path / 'videos'
  (tree / 'a').mkdir(parents=True)
  (tree / 'a' / 'fi001.mp4').symlink_to(FIGHT / 'fight' / 'fi001.mp4')
  assert _run('--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}', flag,
              '--dry_run') == 2
  err = capsys.readouterr().err
  assert f"error: {flag.split('=')[0]} applies only with --split_by_group" in err
  assert 'alone it would be ignored' in err
  assert _run('--dataset=frames', f'--input={tree}', f'--output={tmp_path / "out"}',
              f'--annotations={tree}', '--split_by_group=subfolder', '--dry_run') == 2
  assert ('--split_by_group splits --dataset=folder or list; --dataset=frames has splits of '
          'its own') in capsys.readouterr().err


def _group_tree(tmp_path):
  """A class-per-folder tree of real clips, two subfolders (groups) per class."""
  tree = tmp_path / 'videos'
  for target, source in [('a/g1/fi001.mp4', 'fight/fi001.mp4'),
                         ('a/g2/fi002.mp4', 'fight/fi002.mp4'),
                         ('b/g3/nofi001.mp4', 'noFight/nofi001.mp4'),
                         ('b/g4/nofi002.mp4', 'noFight/nofi002.mp4')]:
    (tree / target).parent.mkdir(parents=True, exist_ok=True)
    (tree / target).symlink_to(FIGHT / source)
  return tree


@pytest.mark.parametrize('flag', ['--val_fraction=0.3', '--group_seed=3'])
def test_a_val_share_or_seed_beside_val_groups_is_refused(flag, tmp_path, capsys):
  """--val_groups names the val side itself: a val share or a seed given beside it would be
  ignored without a word (the split would not be the one asked for)."""
  tree = _group_tree(tmp_path)
  assert _run('--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}',
              '--split_by_group=subfolder', '--val_groups=g1,g3', flag, '--dry_run') == 2
  err = capsys.readouterr().err
  assert f"error: {flag.split('=')[0]} would be ignored beside --val_groups" in err, err


def test_a_group_split_converts_only_the_split_asked_for(tmp_path, capsys):
  """--split=NAME converts one split; with a group split it is one side of that split (it was
  ignored, and both sides written), and a name that is neither side is refused."""
  tree, out = _group_tree(tmp_path), tmp_path / 'out'
  args = ['--dataset=folder', f'--input={tree}', f'--output={out}', '--split_by_group=subfolder',
          '--val_groups=g2,g4', '--short_side=32', '--workers=1']
  assert _run(*args, '--split=val') == 0
  metadata = records.read_metadata(str(out))
  assert metadata.split_sizes == {'val': 2}
  assert sorted(_videos(out, 'val')) == ['a/g2/fi002.mp4', 'b/g4/nofi002.mp4']
  assert metadata.extra['groups'] == {'train': ['g1', 'g3'], 'val': ['g2', 'g4']}
  capsys.readouterr()
  assert _run(*args, '--split=test') == 2
  assert ('Nothing to convert: --split=test is none of the splits the annotations give '
          '(train, val)') in capsys.readouterr().err
  listing = tmp_path / 'list.csv'
  listing.write_text('path,label,group\na/g1/fi001.mp4,a,g1\na/g2/fi002.mp4,a,g2\n'
                     'b/g3/nofi001.mp4,b,g3\nb/g4/nofi002.mp4,b,g4\n')
  assert _run('--dataset=list', f'--input={tree}', f'--annotations={listing}',
              f'--output={tmp_path / "list_out"}', '--split_by_group=group', '--val_groups=g2,g4',
              '--split=train', '--dry_run') == 0
  assert "videos per split {'train': 2}" in capsys.readouterr().err


def test_split_picks_one_of_the_splits_several_annotation_files_give(tmp_path, capsys):
  """--split=NAME with --annotations naming several splits converted all of them (and replaced
  the others' records) without a word, although it is the one split to convert; a name the
  annotations do not give converted theirs."""
  train, val = tmp_path / 'train.csv', tmp_path / 'val.csv'
  train.write_text('path,label\nfight/fi001.mp4,fight\nnoFight/nofi001.mp4,noFight\n')
  val.write_text('path,label\nfight/fi002.mp4,fight\nnoFight/nofi002.mp4,noFight\n')
  common = ['--dataset=list', f'--input={FIGHT}', f'--output={tmp_path / "out"}', '--dry_run']
  assert _run(*common, f'--annotations=train={train},val={val}', '--split=val') == 0
  assert "videos per split {'val': 2}" in capsys.readouterr().err
  assert _run(*common, f'--annotations=train={train}', '--split=val') == 2
  assert ('Nothing to convert: --split=val is none of the splits the annotations give (train)'
          ) in capsys.readouterr().err
  assert _run(*common, f'--annotations={train}', '--split=val') == 0  # names an unnamed list
  assert "videos per split {'val': 2}" in capsys.readouterr().err
  # A video listed in both splits is refused whichever one is converted (review).
  val.write_text('path,label\nfight/fi001.mp4,fight\nnoFight/nofi002.mp4,noFight\n')
  assert _run(*common, f'--annotations=train={train},val={val}', '--split=val') == 2
  assert "error: 1 video(s) are listed more than once: " in capsys.readouterr().err


def test_converting_a_group_split_again_without_it_is_refused(tmp_path, capsys):
  """Converting train again without --split_by_group puts every video in it, while the val split
  of the group split stays beside it: a model would be scored on videos it trained on."""
  tree, out = _group_tree(tmp_path), tmp_path / 'out'
  common = ['--dataset=folder', f'--input={tree}', f'--output={out}', '--short_side=32',
            '--workers=1']
  assert _run(*common, '--split_by_group=subfolder', '--val_groups=g2,g4') == 0
  capsys.readouterr()
  assert _run(*common) == 2
  err = capsys.readouterr().err
  assert (f'error: {out} holds a split by group (train, val) and this run converts train '
          'without --split_by_group') in err, err
  assert records.read_metadata(str(out)).split_sizes == {'train': 2, 'val': 2}
  assert _run(*common, '--split=test') == 0  # a split the group split does not hold


def test_a_tree_of_one_class_is_refused_and_hidden_videos_are_named(tmp_path, capsys):
  """A tree of one class folder converted without a word into records that training refuses
  (one class) and evaluation cannot use; hidden files with a video's extension (a renamed
  video, macOS's ._ files), and videos in hidden folders or directly hidden in the input
  folder, were left out without being named."""
  tree = tmp_path / 'videos'
  (tree / 'fight').mkdir(parents=True)
  (tree / 'fight' / 'fi001.mp4').symlink_to(FIGHT / 'fight' / 'fi001.mp4')
  (tree / 'fight' / '.fi002.mp4').symlink_to(FIGHT / 'fight' / 'fi002.mp4')
  (tree / 'fight' / '._fi001.mp4').write_bytes(b'\x00\x05\x16\x07')
  args = ['--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}', '--dry_run']
  assert _run(*args) == 2
  assert (f'error: {tree} holds one class folder (fight): a model needs two or more classes '
          '(training refuses records of one). Add the folders of the other classes, or pass '
          '--class_list with the classes of the model these videos are for.'
          ) in capsys.readouterr().err
  classes = tmp_path / 'classes.txt'
  classes.write_text('fight\nnoFight\n')
  assert _run(*args, f'--class_list={classes}') == 0
  (tree / 'noFight' / '.thumbs').mkdir(parents=True)
  (tree / 'noFight' / 'nofi001.mp4').symlink_to(FIGHT / 'noFight' / 'nofi001.mp4')
  (tree / 'noFight' / '.thumbs' / 'nofi002.mp4').symlink_to(FIGHT / 'noFight' / 'nofi002.mp4')
  (tree / '.fight_old').mkdir()
  (tree / '.fight_old' / 'fi003.mp4').symlink_to(FIGHT / 'fight' / 'fi003.mp4')
  (tree / '.fi004.mp4').symlink_to(FIGHT / 'fight' / 'fi004.mp4')
  (tree / '.git').mkdir()
  (tree / '.git' / 'HEAD').write_text('ref: refs/heads/main\n')
  # Hidden links back into the tree hold no hidden videos (review: theirs were named); one to
  # a folder elsewhere does, and was left out without a word (user audit).
  (tree / '.current').symlink_to('.', target_is_directory=True)
  (tree / 'fight' / '.up').symlink_to('..', target_is_directory=True)
  (tmp_path / 'elsewhere').mkdir()
  (tmp_path / 'elsewhere' / 'fi005.mp4').symlink_to(FIGHT / 'fight' / 'fi026.mp4')
  (tree / 'fight' / '.more').symlink_to(tmp_path / 'elsewhere', target_is_directory=True)
  capsys.readouterr()
  assert _run(*args) == 0
  assert ('warning: 6 hidden file(s) under ' f'{tree}' ' are left out although their extensions '
          'are among --extensions (.fi004.mp4, .fight_old/fi003.mp4, fight/._fi001.mp4, '
          'fight/.fi002.mp4, fight/.more/fi005.mp4, ... (6 in all)): rename any that is a '
          'video, or the hidden folder holding it, so that no part of its path starts with a dot.'
          ) in capsys.readouterr().err


def test_a_val_share_well_above_the_fraction_is_said():
  from data.convert import cli  # pylint: disable=g-import-not-at-top
  plan = convert.Plan('mine', ('a', 'b'), {'train': [None] * 6, 'val': [None] * 4})
  args = argparse.Namespace(split_by_group='subfolder', val_groups='', val_fraction=0.2, split='')
  assert cli.share_warnings(plan, args) == [
      'val holds 4 of 10 videos (40%) for --val_fraction=0.2: groups go whole, and classes '
      'without a val group get one where the bounds allow.']
  args.val_fraction = 0.4
  assert cli.share_warnings(plan, args) == []


def test_a_split_where_every_video_fails_exits_non_zero(tmp_path):
  listing = tmp_path / 'list.txt'
  listing.write_text('fight/nope1.mp4 fight\nnoFight/nope2.mp4 noFight\n')
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations={listing}',
              f'--output={tmp_path / "out"}', '--workers=1') == 1


def test_all_115_fight_clips_with_two_workers(tmp_path):
  out = tmp_path / 'records'
  assert _run('--dataset=list', '--name=fight_surv', f'--input={FIGHT}',
              f'--annotations={FIGHT / "clips.csv"}', '--split_by_group=source_group',
              f'--output={out}', '--short_side=32', '--workers=2') == 0
  metadata = records.read_metadata(str(out))
  assert metadata.split_sizes == {'train': 87, 'val': 28}  # the registry's sizes
  assert metadata.failures == []
  groups = metadata.extra['groups']
  assert not set(groups['train']) & set(groups['val']) and len(groups['val']) == 5


# ----------------------------------------------------------------------------- planning
ANNOTATIONS = TESTDATA / 'annotations'


def _plan(*args):
  return convert.make_plan(convert.build_parser().parse_args([str(a) for a in args]))


def _touch(root, *relative):
  for rel in relative:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')


def test_plans_from_official_annotation_files(tmp_path):
  """Each KIND's annotations give the official counts and classes; videos are found by name."""
  videos = tmp_path / 'videos'
  _touch(videos, 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
         'HandstandPushups/v_HandStandPushups_g01_c01.avi',  # the folder/list case quirk
         'abseiling/--07WQ2iBlw_000001_000011.mp4', 'other/zkyy5cC7SL4.mkv')
  out = tmp_path / 'out'
  ucf = _plan('--dataset=ucf101', f'--input={videos}', f'--output={out}',
              f'--annotations={ANNOTATIONS / "ucf101_official_splits"}')
  assert len(ucf.classes) == 101 and ucf.classes[0] == 'ApplyEyeMakeup'
  assert {s: len(v) for s, v in ucf.splits.items()} == {'train1': 9537, 'test1': 3783}
  found = sorted(i.filename for items in ucf.splits.values() for i in items if i.source)
  assert found == ['ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
                   'HandStandPushups/v_HandStandPushups_g01_c01.avi']
  assert all(i.missing.startswith('missing video file') for i in ucf.splits['test1']
             if not i.source)
  with pytest.raises(convert.ConversionError, match=r"^--fold must be 1, 2, 3 or all, got ''"):
    _plan('--dataset=ucf101', f'--input={videos}', f'--output={out}', '--fold=',
          f'--annotations={ANNOTATIONS / "ucf101_official_splits"}')  # not fold 1 (review)
  # Every fold's splits hold every video once: --fold=all is no repeat (it was refused).
  folds = _plan('--dataset=ucf101', f'--input={videos}', f'--output={out}', '--fold=all',
                f'--annotations={ANNOTATIONS / "ucf101_official_splits"}')
  assert sorted(folds.splits) == ['test1', 'test2', 'test3', 'train1', 'train2', 'train3']
  assert not folds.warnings and sum(i.source != '' for i in folds.splits['train2']) + sum(
      i.source != '' for i in folds.splits['test2']) == 2

  k400 = _plan('--dataset=kinetics400', f'--input={videos}', f'--output={out}',
               f'--annotations={ANNOTATIONS / "kinetics" / "kinetics-400_val.csv"}')
  assert len(k400.classes) == 400 and list(k400.classes) == sorted(k400.classes)
  assert list(k400.splits) == ['val'] and len(k400.splits['val']) == 19_906
  assert not k400.warnings
  # Rows converted as another split than their own column names are said.
  as_train = _plan('--dataset=kinetics400', f'--input={videos}', f'--output={out}',
                   f'--annotations=train={ANNOTATIONS / "kinetics" / "kinetics-400_val.csv"}')
  assert as_train.warnings == [
      f"19,906 row(s) of {ANNOTATIONS / 'kinetics' / 'kinetics-400_val.csv'} name split 'val' in "
      "their split column, but are converted as split 'train': check the split=path given."]
  # ... but not those of a split that --split leaves out.
  both = (f'--annotations=train={ANNOTATIONS / "kinetics" / "kinetics-400_test.csv"},'
          f'val={ANNOTATIONS / "kinetics" / "kinetics-400_val.csv"}')
  assert len(_plan('--dataset=kinetics400', f'--input={videos}', f'--output={out}',
                   both).warnings) == 1
  only_val = _plan('--dataset=kinetics400', f'--input={videos}', f'--output={out}', both,
                   '--split=val')
  assert list(only_val.splits) == ['val'] and not only_val.warnings
  found = {(i.filename, i.label_text) for i in k400.splits['val'] if i.source}
  # By clip name, and by YouTube id alone for downloads named `<youtube_id>.<ext>`.
  assert found == {('--07WQ2iBlw_000001_000011', 'javelin throw'),
                   ('zkyy5cC7SL4_000000_000010', 'belly dancing')}

  hmdb = _plan('--dataset=hmdb51', f'--input={videos}', f'--output={out}', '--annotations='
               f'train1={ANNOTATIONS / "hmdb51_splits_derived" / "hmdb51_flow_train_split_1.txt"},'
               f'test1={ANNOTATIONS / "hmdb51_splits_derived" / "hmdb51_flow_val_split_1.txt"}')
  assert len(hmdb.classes) == 51
  assert {s: len(v) for s, v in hmdb.splits.items()} == {'train1': 3570, 'test1': 1530}
  assert hmdb.splits['train1'][0].filename == \
      'cartwheel/How_to_do_a_Cartwheel_cartwheel_f_nm_np1_le_med_2.avi'

  mini = _plan('--dataset=mini_kinetics', f'--input={videos}', f'--output={out}',
               f'--annotations={ANNOTATIONS / "mini-kinetics-200"}', '--split=val',
               f'--kinetics_csv={ANNOTATIONS / "mini-kinetics-200" / "val_labeled_from_k400_val.csv"}')
  assert len(mini.classes) == 200 and len(mini.splits['val']) == 5000
  assert [i.label_text for i in mini.splits['val'] if i.source] == ['belly dancing']
  # The registry knows each official class list, in order, as the converter writes it.
  for plan in (ucf, k400, hmdb, mini):
    assert datasets.official_classes(datasets.get(plan.name), plan.classes), plan.name


def test_official_annotations_matching_one_file_twice_report_both_and_go_on(tmp_path):
  """Two Kinetics clips of one YouTube id both matched a download named `<id>.mp4` (which holds
  one of them at most): the file was stored twice, under both labels."""
  videos = tmp_path / 'videos'
  _touch(videos, 'abc.mp4', 'xyz_000000_000010.mp4')
  listing = tmp_path / 'kinetics_val.csv'
  listing.write_text('label,youtube_id,time_start,time_end,split\n'
                     'fight,abc,0,10,val\nnoFight,abc,20,30,val\nnoFight,xyz,0,10,val\n')
  plan = _plan('--dataset=kinetics400', f'--input={videos}', f'--output={tmp_path / "out"}',
               f'--annotations={listing}')
  by_name = {item.filename: item for item in plan.splits['val']}
  assert by_name['xyz_000000_000010'].source.endswith('xyz_000000_000010.mp4')
  for name in ('abc_000000_000010', 'abc_000020_000030'):
    assert not by_name[name].source
    assert by_name[name].missing.startswith(
        f"{videos / 'abc.mp4'} is listed 2 times (val as 'fight' (abc_000000_000010), val as "
        "'noFight' (abc_000020_000030)): which listing it holds cannot be told (name each file "
        'after its listing')
  assert plan.warnings == [
      '1 video file(s) are listed more than once and are left out, each listing reported as a '
      f"failure: {videos / 'abc.mp4'} (val as 'fight' (abc_000000_000010), val as 'noFight' "
      '(abc_000020_000030)).']


def test_a_kinetics_file_named_by_its_youtube_id_and_longer_than_its_clip_is_a_failure(
    tmp_path, capsys):
  """A download named `<youtube_id>.mkv` (10.3 s) for the 2 s clip 2-4 s of the CSV was stored
  whole under the clip's name without a word: an untrimmed video passed as the clip. A file of
  about the clip's length (a trimmed clip named by its id) still converts."""
  videos = tmp_path / 'videos'
  videos.mkdir()
  (videos / 'abcdefghijk.mkv').symlink_to(CODEC / 'flipping_a_pancake.mkv')
  shutil.copy(CODEC / 'flipping_a_pancake.mkv', videos / 'bbbbbbbbbbb.mkv')  # another file
  listing = tmp_path / 'kinetics_val.csv'
  listing.write_text('label,youtube_id,time_start,time_end,split\n'
                     'flipping pancake,abcdefghijk,2,4,val\n'
                     'flipping pancake,bbbbbbbbbbb,0,10,val\n')
  out = tmp_path / 'out'
  assert _run('--dataset=kinetics400', f'--input={videos}', f'--output={out}', '--short_side=32',
              f'--annotations={listing}', '--max_frames=8', '--workers=1') == 0
  metadata = records.read_metadata(str(out))
  assert metadata.split_sizes == {'val': 1}
  assert sorted(_videos(out, 'val')) == ['bbbbbbbbbbb_000000_000010']
  assert [(f['file'], f['reason']) for f in metadata.failures] == [(
      'abcdefghijk_000002_000004',
      'the file is 10.3 s long and the clip it should hold 2 s: an untrimmed video? Store the '
      "clip's own segment (trim the file to it)")]


def test_a_video_that_declares_no_length_is_held_to_its_clip_by_the_length_decoded(monkeypatch):
  """A file declaring no length (several streams, none with its duration) passed the untrimmed
  check (review): the length decoded is compared instead."""
  monkeypatch.setattr(video_io, '_declared_seconds', lambda container, stream: 0.0)
  with pytest.raises(video_io.VideoError, match=r'^the file is 10\.3 s long and the clip it '
                     r'should hold 2 s: an untrimmed video\?'):
    video_io.decode_video(str(CODEC / 'flipping_a_pancake.mkv'), short_side=32, clip_seconds=2)
  assert len(video_io.decode_video(str(CODEC / 'flipping_a_pancake.mkv'), short_side=32,
                                   clip_seconds=10).jpegs) == 310


def test_official_annotations_finding_two_files_of_one_name_report_it_and_go_on(tmp_path):
  """Two copies of a video (e.g. of 23 and 50 frames) under the input root: the first in sorted
  order was stored without a word."""
  videos = tmp_path / 'videos'
  _touch(videos, 'copyA/abc_000000_000010.mp4', 'copyB/abc_000000_000010.mp4',
         'xyz_000000_000010.mp4')
  listing = tmp_path / 'kinetics_val.csv'
  listing.write_text('label,youtube_id,time_start,time_end,split\n'
                     'fight,abc,0,10,val\nnoFight,xyz,0,10,val\n')
  plan = _plan('--dataset=kinetics400', f'--input={videos}', f'--output={tmp_path / "out"}',
               f'--annotations={listing}')
  twice, found = plan.splits['val']
  assert found.source == str(videos / 'xyz_000000_000010.mp4')
  assert not twice.source and twice.missing == (
      f'2 files named abc_000000_000010 under {videos} (copyA/abc_000000_000010.mp4, '
      'copyB/abc_000000_000010.mp4): which one is the listed video cannot be told; keep one')
  # A link to a video is that video, not a second copy (a flat view of a class tree).
  (videos / 'copyB' / 'abc_000000_000010.mp4').unlink()
  (videos / 'flat').mkdir()
  (videos / 'flat' / 'abc_000000_000010.mp4').symlink_to(videos / 'copyA' / 'abc_000000_000010.mp4')
  plan = _plan('--dataset=kinetics400', f'--input={videos}', f'--output={tmp_path / "out"}',
               f'--annotations={listing}')
  assert plan.splits['val'][0].source == str(videos / 'copyA' / 'abc_000000_000010.mp4')


def test_classes_written_in_two_unicode_forms_are_refused_and_names_are_printed(tmp_path,
                                                                                capsys):
  """Folders 'crêpe' (composed) and 'crêpe' (e + combining accent) became two classes that
  print alike, and no summary line named the classes."""
  tree = tmp_path / 'tree'
  for label, source in (('cr\u00eape', 'fight/fi001.mp4'), ('cre\u0302pe', 'fight/fi002.mp4'),
                        ('noFight', 'noFight/nofi001.mp4')):
    (tree / label).mkdir(parents=True)
    (tree / label / os.path.basename(source)).symlink_to(FIGHT / source)
  assert _run('--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}',
              '--dry_run') == 2
  err = capsys.readouterr().err
  assert "error: classes 'cre\u0302pe' (decomposed), 'cr\u00eape' (composed) are one name " in err
  # Asked for a group split, whose error about classes of a single group came first: the
  # clash is the cause (README audit).
  assert _run('--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}',
              '--split_by_group=file', '--dry_run') == 2
  err = capsys.readouterr().err
  assert "error: classes 'cre\u0302pe' (decomposed), 'cr\u00eape' (composed) are one name " in err
  (tree / 'cre\u0302pe').rename(tree / 'pancake')
  assert _run('--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}',
              '--dry_run') == 0
  assert ': 3 classes (cr\u00eape, noFight, pancake), videos per split ' in capsys.readouterr().err


@pytest.mark.parametrize('names, said', [
    (('Foo Bar', 'Foo Bar '), "error: classes 'Foo Bar', 'Foo Bar ' print alike (they differ "
     'in spaces, invisible characters or compatibility characters such as a no-break space or '
     'a full-width letter):'),
    (('Foo Bar', 'Foo\u00a0Bar'), "error: classes 'Foo Bar', 'Foo\\xa0Bar' print alike"),
    (('b\nc', 'noFight'), "error: class 'b\\nc' holds a control character (a line break, tab or "
     'the like): the labels files, one class per line, would split or garble it.'),
    (('a\u2028b', 'noFight'), "error: class 'a\\u2028b' holds a control character"),
    (('FooBar', 'Foo\u200bBar'), "error: classes 'FooBar', 'Foo\\u200bBar' print alike"),
    (('abseiling', '\ufeffabseiling'), "error: classes 'abseiling', '\\ufeffabseiling' print "
     'alike'),
])
def test_class_names_that_print_alike_or_hold_a_line_break_are_refused(tmp_path, capsys, names,
                                                                       said):
  """Folders 'Foo Bar', 'Foo Bar ' (a trailing space) and 'Foo<no-break space>Bar' became
  three classes printed alike; a folder 'b<line break>c' made the labels file (one class per
  line) a line longer, shifting every later index for a reader of it (user audit)."""
  tree = tmp_path / 'tree'
  for name, source in zip(names, ('fight/fi001.mp4', 'noFight/nofi001.mp4')):
    (tree / name).mkdir(parents=True)
    (tree / name / os.path.basename(source)).symlink_to(FIGHT / source)
  assert _run('--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}',
              '--dry_run') == 2
  assert said in capsys.readouterr().err


def test_class_names_differing_in_case_and_spacing_together_are_warned_about(tmp_path, capsys):
  """'Foo Bar' and 'foo<no-break space>bar' differ in case and spacing at once: neither refused
  nor warned about (review)."""
  tree = tmp_path / 'tree'
  for name, source in (('Foo Bar', 'fight/fi001.mp4'), ('foo\u00a0bar', 'noFight/nofi001.mp4')):
    (tree / name).mkdir(parents=True)
    (tree / name / os.path.basename(source)).symlink_to(FIGHT / source)
  assert _run('--dataset=folder', f'--input={tree}', f'--output={tmp_path / "out"}',
              '--dry_run') == 0
  assert "warning: classes 'Foo Bar', 'foo\\xa0bar' differ in case only" in (
      capsys.readouterr().err)


def test_a_gap_in_a_frame_folder_of_unknown_length_is_a_failure(tmp_path):
  """A TSN row with frame count 0 is read until the first missing frame: a folder with a gap
  at frame 10 of 40 stored 9 frames without a word."""
  folder = tmp_path / 'clip'
  folder.mkdir()
  for i in [i for i in range(1, 41) if i != 10]:
    Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(folder / f'{i:06d}.jpg')
  with pytest.raises(video_io.VideoError, match=r'^missing frame 000010.jpg with 30 frame\(s\) '
                     'after it: the folder has a gap$'):
    video_io.read_frame_folder(str(folder), short_side=0)
  assert len(video_io.read_frame_folder(str(folder), short_side=0, max_frames=9).jpegs) == 9


def test_a_frame_folder_numbered_below_the_start_index_is_a_failure(tmp_path):
  """A folder numbering its frames from 0, read from the default start index 1, lost its first
  frame without a word (TSN rows of frame count 0, as HMDB51's lists give)."""
  folder = tmp_path / 'clip'
  folder.mkdir()
  for i in range(10):
    Image.fromarray(np.full((16, 16, 3), i * 20, np.uint8)).save(folder / f'{i:06d}.jpg')
  for num_frames in (0, 9):
    with pytest.raises(video_io.VideoError, match=re.escape(
        'frame 000000.jpg comes before 000001.jpg, the first one read (start index 1): it '
        'would be left out; the folder numbers its frames from 0, so give that start '
        '(--frame_start=0)')):
      video_io.read_frame_folder(str(folder), short_side=0, num_frames=num_frames)
  assert len(video_io.read_frame_folder(str(folder), short_side=0, start_index=0).jpegs) == 10


def test_a_video_in_train_and_test_of_every_fold_is_left_out_of_every_fold():
  """Repeats were collected by file alone, so each fold's listing overwrote the one before:
  only the last fold's were reported, the others stored the video in train and test."""
  from data.convert import plans  # pylint: disable=g-import-not-at-top
  item = lambda: plans.Item('a.avi', 0, 'run', source='/v/a.avi')  # noqa: E731
  plan = plans.Plan('hmdb51', ('run',), {f'{part}{k}': [item()] for k in (1, 2, 3)
                                          for part in ('train', 'test')})
  plans._handle_videos_listed_twice(plan, 'hmdb51')  # pylint: disable=protected-access
  for split, items in plan.splits.items():
    assert not items[0].source and f'(train{split[-1]} as ' in items[0].missing, split
  assert plan.warnings[0].startswith('3 video file(s) are listed more than once')


def test_two_spellings_of_a_missing_video_in_a_list_are_one_video():
  """'./a/x.mp4' and 'a/x.mp4' name one file even where it is not found (mutation audit:
  comparing the spellings as given passed every test)."""
  from data.convert import plans  # pylint: disable=g-import-not-at-top
  plan = plans.Plan('l', ('c',), {'train': [plans.Item('./a/x.mp4', 0, 'c')],
                                  'val': [plans.Item('a//x.mp4', 0, 'c')]})
  with pytest.raises(plans.ConversionError,
                     match=re.escape("1 video(s) are listed more than once: ./a/x.mp4 (train as "
                                     "'c' (./a/x.mp4), val as 'c' (a//x.mp4))")):
    plans._handle_videos_listed_twice(plan, 'list')  # pylint: disable=protected-access


def _folder_frame_colour(index):
  """Frame `index` of a test frame folder: a flat colour whose channels differ and change with
  the index, so channel order and frame order both show."""
  return (40 * index + 30, 200 - 40 * index, 110)


def test_frame_folders_are_stored_as_given(tmp_path):
  frames = tmp_path / 'frames'
  for name, count, size in (('clip_a', 5, (80, 60)), ('clip_b', 3, (40, 30))):
    (frames / name).mkdir(parents=True)
    for i in range(count):
      Image.fromarray(np.full((size[1], size[0], 3), _folder_frame_colour(i), np.uint8)).save(
          frames / name / f'img_{i + 1:05d}.jpg', quality=92)
  listing = tmp_path / 'train.txt'
  listing.write_text('clip_a 5 1\nclip_b 0 0\n')  # 0 frames: read until the first gap
  classes = tmp_path / 'classes.txt'
  classes.write_text('zero\none\n')
  out = tmp_path / 'out'
  assert _run('--dataset=frames', f'--input={frames}', f'--annotations={listing}',
              f'--class_list={classes}', '--frame_template=img_{:05d}.jpg', '--short_side=60',
              '--frames_fps=25', f'--output={out}', '--workers=1') == 0
  videos = _videos(out, 'train')
  label, text, fps, stored = videos['clip_a']
  assert (label, text, fps, len(stored)) == (1, 'one', 25.0, 5)
  # clip_a is already at short side 60: its JPEGs are stored byte for byte.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  metadata = records.read_metadata(str(out))
  jpegs = {}
  for serialized in tf.data.TFRecordDataset(records.shard_files(str(out), metadata.name,
                                                                'train')):
    features = records.parse_video(serialized)
    jpegs[features['filename'].numpy().decode()] = list(features['frames_jpeg'].numpy())
  assert jpegs['clip_a'][1] == (frames / 'clip_a' / 'img_00002.jpg').read_bytes()
  assert videos['clip_b'][0] == 0 and len(videos['clip_b'][3]) == 3
  assert videos['clip_b'][3][0].shape == (60, 80, 3)  # 40x30 scaled to short side 60
  # Mutation audit: grey frames hid re-encoded frames stored in reverse or as BGR.
  for name in ('clip_a', 'clip_b'):
    np.testing.assert_allclose([frame.mean(axis=(0, 1)) for frame in videos[name][3]],
                               [_folder_frame_colour(i) for i in range(len(videos[name][3]))],
                               atol=4, err_msg=name)
  assert jpegs['clip_a'] == [(frames / 'clip_a' / f'img_{i:05d}.jpg').read_bytes()
                             for i in range(1, 6)]
  # Videos given to a model trained on them are decoded at the folders' rate and stored size.
  records_config = ml_collections.ConfigDict({'name': '', 'data_dir': str(out)})
  assert pipeline.split_decoding(records_config, 'train') == {
      'fps': 25.0, 'max_frames': 0, 'stream_clock': True, 'short_side': 60,
      'jpeg_quality': video_io.DEFAULT_JPEG_QUALITY, 'interpolation': 'BILINEAR'}


def test_frame_folders_are_resized_with_a_filter_that_averages(tmp_path):
  """Frames of another size are resized bilinearly, as the video decoder's swscale does: columns
  alternating black and white, halved, become grey. A nearest-neighbour resize kept one column of
  two, all black or all white, and passed the folder tests, whose frames are flat colours."""
  stripes = np.zeros((60, 80, 3), np.uint8)
  stripes[:, 1::2] = 255
  folder = tmp_path / 'clip'
  folder.mkdir()
  for i in range(2):
    Image.fromarray(stripes).save(folder / f'{i + 1:06d}.png')
  video = video_io.read_frame_folder(str(folder), template='{:06d}.png', short_side=30)
  assert (video.height, video.width, len(video.jpegs)) == (30, 40, 2)
  for jpeg in video.jpegs:
    frame = np.asarray(Image.open(io.BytesIO(jpeg)), np.float32)
    assert np.abs(frame[:, 2:-2] - 127.5).max() < 12, frame[0, :8, 0]


def _write_vfr_video_with_a_repeated_timestamp(path):
  """10 frames 100 ms apart, then 10 frames 33 ms apart whose last repeats its predecessor's
  timestamp (what some muxers write at the end of a variable-rate stream)."""
  import av  # pylint: disable=g-import-not-at-top
  import fractions  # pylint: disable=g-import-not-at-top
  times = [i * 100 for i in range(10)] + [1000 + i * 33 for i in range(10)]
  with av.open(str(path), mode='w') as container:
    stream = container.add_stream('mpeg4', rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    stream.codec_context.time_base = fractions.Fraction(1, 1000)
    packets = []
    for t in times:
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), t % 250, np.uint8), format='rgb24')
      frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
      packets += list(stream.encode(frame))
    packets += list(stream.encode())
    for packet in packets:  # the encoder refuses a repeated timestamp: the muxer takes it
      if packet.pts == times[-1]:
        packet.pts = packet.dts = times[-2]
      container.mux(packet)


def _write_video_with_a_longer_audio_track(path, video_seconds=1, audio_seconds=3):
  """A complete video whose (silent) audio track outlasts it: the container's length is the
  audio's."""
  import av  # pylint: disable=g-import-not-at-top
  import fractions  # pylint: disable=g-import-not-at-top
  with av.open(str(path), mode='w') as container:
    video = container.add_stream('mpeg4', rate=25)
    video.width, video.height, video.pix_fmt = 64, 48, 'yuv420p'
    audio = container.add_stream('pcm_s16le', rate=8000)
    for i in range(video_seconds * 25):
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 9 * i, np.uint8), format='rgb24')
      frame.pts, frame.time_base = i, fractions.Fraction(1, 25)
      for packet in video.encode(frame):
        container.mux(packet)
    for packet in video.encode():
      container.mux(packet)
    for start in range(0, audio_seconds * 8000, 800):
      samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format='s16',
                                           layout='mono')
      samples.sample_rate, samples.pts = 8000, start
      samples.time_base = fractions.Fraction(1, 8000)
      for packet in audio.encode(samples):
        container.mux(packet)
    for packet in audio.encode():
      container.mux(packet)


@pytest.mark.parametrize('max_frames', [8, 16])
def test_b_frames_cut_by_max_frames_are_not_called_a_variable_frame_rate(max_frames):
  """The first frames of a B-frame AVI carry decode-order times with gaps where later frames'
  times go: cut with --max_frames, the constant 25 fps file was warned about as a variable
  frame rate. A variable-rate file cut alike still is (tested below)."""
  video = video_io.decode_video(str(CODEC / 'bframes_h264.avi'), short_side=32,
                                max_frames=max_frames)
  assert video.timing == video_io.TIMING_DECODER_ORDER and len(video.jpegs) == max_frames
  assert video.warnings == []


def test_a_variable_frame_rate_cut_by_max_frames_is_still_said(tmp_path):
  path = tmp_path / 'vfr.mkv'
  _write_vfr_video_with_a_repeated_timestamp(path)
  for max_frames in (0, 20):  # its 20th frame repeats a time: timed by count
    warnings = video_io.decode_video(str(path), short_side=32, max_frames=max_frames).warnings
    assert any('unevenly spaced (a variable frame rate?)' in w for w in warnings), warnings


def test_videos_kept_short_of_their_length_or_timed_by_count_are_warned_about(tmp_path, capsys):
  """A Matroska file cut to half its bytes was stored as 150 of its 310 frames, and a
  variable-rate video with one repeated timestamp was timed by its frame count (0.8 s of its
  1.3 s at --fps=10), each without a word."""
  videos = tmp_path / 'videos'
  videos.mkdir()
  whole = (CODEC / 'flipping_a_pancake.mkv').read_bytes()
  (videos / 'cut.mkv').write_bytes(whole[:len(whole) // 2])
  (videos / 'whole.mkv').write_bytes(whole)
  _write_vfr_video_with_a_repeated_timestamp(videos / 'vfr.mkv')
  shutil.copy(CODEC / 'bframes_h264.avi', videos / 'bframes.avi')  # timed by count, rightly
  # Complete, with audio outlasting the video: Matroska declares the container's length only
  # (the audio's) and the video track's in a tag; MP4 declares each stream's.
  _write_video_with_a_longer_audio_track(videos / 'audio.mkv')
  _write_video_with_a_longer_audio_track(videos / 'audio.mp4')
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(f'{name} a\n' for name in ('cut.mkv', 'whole.mkv', 'vfr.mkv',
                                                        'bframes.avi', 'audio.mkv', 'audio.mp4')))
  out = tmp_path / 'out'
  assert _run('--dataset=list', f'--input={videos}', f'--annotations={listing}', '--split=test',
              f'--output={out}', '--short_side=32', '--workers=1', '--fps=10') == 0
  err = capsys.readouterr().err
  assert 'Wrote 6 videos' in err and '0 failed' in err
  assert f'warning: 2 video(s) converted with a warning (all in {out / "warnings.csv"}):' in err
  assert re.search(r'test: cut\.mkv: decoded 5\.\d s of the 10\.3 s its container declares: the '
                   r'file may be truncated', err), err
  assert re.search(r"test: vfr\.mkv: its timestamps stop increasing at frame 20 of 20 and are "
                   r'unevenly spaced \(a variable frame rate\?\): its frames are timed by their '
                   r'count at [\d.]+ fps instead', err), err
  with open(out / 'warnings.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['split'], r['file']) for r in rows] == [('test', 'cut.mkv'), ('test', 'vfr.mkv')]
  kept = records.read_metadata(str(out)).extra['warnings']
  assert [file for file, _ in kept['test']] == ['cut.mkv', 'vfr.mkv']
  from data import report  # pylint: disable=g-import-not-at-top
  assert '0 failed, 2 kept with a warning (warnings.csv)' in '\n'.join(
      [report.summary(report.build(str(out)))])
  # Shards written before warnings were kept are resumed as they are, and that is said.
  for state in (out / '.convert').glob('*.json'):
    written = json.loads(state.read_text())
    for video in written['videos']:
      del video['warnings']
    state.write_text(json.dumps(written))
  assert _run('--dataset=list', f'--input={videos}', f'--annotations={listing}', '--split=test',
              f'--output={out}', '--short_side=32', '--workers=1', '--fps=10') == 0
  assert ('warning: 1 shard(s) were written by a version that kept no video warnings: their '
          'videos were not checked') in capsys.readouterr().err


def test_frame_folders_without_their_rate_are_warned_about(tmp_path, capsys):
  """Without --frames_fps the folders were stored at rate 0 (unknown) without a word: pyslowfast
  sampling then takes them at config.data.target_fps, and only predict said anything."""
  frames = tmp_path / 'frames' / 'clip_a'
  frames.mkdir(parents=True)
  for i in range(3):
    Image.fromarray(np.full((30, 40, 3), 40 * i, np.uint8)).save(frames / f'{i + 1:06d}.jpg')
  listing = tmp_path / 'train.txt'
  listing.write_text('clip_a 3 0\n')
  classes = tmp_path / 'classes.txt'
  classes.write_text('a\n')
  for extra, warned in (([], True), (['--frames_fps=25'], False)):
    assert _run('--dataset=frames', f'--input={tmp_path / "frames"}', f'--annotations={listing}',
                f'--class_list={classes}', f'--output={tmp_path / "out"}', '--dry_run',
                *extra) == 0
    err = capsys.readouterr().err
    assert ('warning: 1 frame folder(s) are converted without --frames_fps: their rate is stored '
            'as unknown (0)' in err) == warned, err


def test_unlabelled_videos_in_a_training_split_are_warned_about_and_refused(tmp_path, capsys):
  """A test-format Kinetics CSV (no label column) given as the train split converted without a
  word, and training read its videos' label -1 as the last class."""
  from data import errors as data_errors  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  videos = tmp_path / 'videos'
  videos.mkdir()
  for name, source in (('aaaaaaaaaaa_000000_000010.mov', 'video_0.mov'),
                       ('bbbbbbbbbbb_000000_000010.mov', 'video_90.mov')):
    (videos / name).symlink_to(CODEC / source)
  (tmp_path / 'train.csv').write_text('youtube_id,time_start,time_end,split\n'
                                      'aaaaaaaaaaa,0,10,train\n')
  (tmp_path / 'val.csv').write_text('label,youtube_id,time_start,time_end,split\n'
                                    'flipping pancake,bbbbbbbbbbb,0,10,val\n')
  out = tmp_path / 'out'
  assert _run('--dataset=kinetics400', f'--input={videos}', f'--output={out}', '--short_side=32',
              f'--annotations=train={tmp_path / "train.csv"},val={tmp_path / "val.csv"}') == 0
  assert ("split 'train' holds 1 unlabelled video(s) of its 1 (annotation rows without a label): "
          'training refuses a split with unlabelled videos; an evaluation scores them without '
          'counting them in its accuracy.') in capsys.readouterr().err
  config = tiny_config(str(out))
  config.dataset.name = 'kinetics400'
  with pytest.raises(data_errors.DataError, match=re.escape(
      f"Split 'train' of 'kinetics400' in {out} holds 1 unlabelled video(s) of its 1: training "
      'needs a label for every video. Convert them into a split of their own (e.g. test), or '
      'set config.dataset.train_split to a labelled split.')):
    pipeline.train_dataset(config, seed=0)


def test_integer_labels_beside_names_or_numbered_from_one_are_caught(tmp_path):
  """A list of integer labels beside one of names read the integers as indices into the other's
  sorted names; UCF101's lists, numbered from 1, without --label_index_base=1 failed on label
  101 with no word of the base, and without their class-101 rows labelled every video with the
  next class (said only as a class without videos)."""
  (tmp_path / 'train.txt').write_text('a/x1.mp4 fight\na/x2.mp4 noFight\n')
  (tmp_path / 'val.txt').write_text('a/y1.mp4 1\na/y2.mp4 0\n')
  with pytest.raises(convert.ConversionError, match=re.escape(
      f'{tmp_path / "val.txt"} gives integer labels and {tmp_path / "train.txt"} class names: '
      'the integers would be read as indices into the sorted names.')):
    _plan('--dataset=list', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
          f'--annotations=train={tmp_path / "train.txt"},val={tmp_path / "val.txt"}')

  ucf = ANNOTATIONS / 'ucf101_official_splits'
  classes = tmp_path / 'classes.txt'
  classes.write_text(''.join(line.split()[1] + '\n'
                             for line in (ucf / 'classInd.txt').read_text().splitlines()))
  with pytest.raises(convert.ConversionError, match=re.escape(
      "Labels reach 101 with 101 classes: if they count from 1 (as UCF101's lists do), give an "
      'index base of 1 (--label_index_base=1).')):
    _plan('--dataset=list', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
          f'--annotations=train={ucf / "trainlist01.txt"}', f'--class_list={classes}')
  rows = [line.split() for line in (ucf / 'trainlist01.txt').read_text().splitlines()
          if line.strip() and not line.rstrip().endswith(' 101')]
  without_101 = tmp_path / 'trainlist01.txt'
  without_101.write_text(''.join(f'{path} {label}\n' for path, label in rows))
  with pytest.raises(convert.ConversionError, match=re.escape(
      f'{without_101}: {len(rows):,} of its {len(rows):,} clips are labelled with another class '
      "than their names carry (e.g. 'ApplyEyeMakeup' labelled 'ApplyLipstick': ")):
    _plan('--dataset=list', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
          f'--annotations=train={without_101}', f'--class_list={classes}')
  # Clip names that carry no class leave the never-used 0 as the only sign.
  without_101.write_text(''.join(f'clip{i}.avi {label}\n' for i, (_, label) in enumerate(rows)))
  plan = _plan('--dataset=list', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
               f'--annotations=train={without_101}', f'--class_list={classes}')
  assert (f'the integer labels of {without_101} never use 0: if they count from 1 (as UCF101\'s '
          "lists do), pass --label_index_base=1, or each video takes the class after its own."
          ) in plan.warnings
  plan = _plan('--dataset=list', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
               f'--annotations=train={without_101}', f'--class_list={classes}',
               '--label_index_base=1')
  assert not any('never use 0' in line for line in plan.warnings)
  assert plan.splits['train'][0].label_text == 'ApplyEyeMakeup'


def test_integer_labels_of_a_csv_list_index_the_class_list_and_mixed_labels_are_refused(
    tmp_path, capsys):
  """A CSV list of integer labels took them as class names sorted as text (0, 1, 10, 11, 2, ...):
  videos labelled 2 were stored as class 4 without a word. A list mixing integers and names (in
  a CSV or a plain list) made classes of both. Integers now index --class_list, as in plain
  lists, and the mix is refused."""
  rows = [('fight/fi001.mp4', 0), ('noFight/nofi001.mp4', 1), ('fight/fi002.mp4', 2),
          ('noFight/nofi002.mp4', 10), ('fight/fi003.mp4', 11)]
  listing = tmp_path / 'int.csv'
  listing.write_text('path,label\n' + ''.join(f'{p},{label}\n' for p, label in rows))
  classes = tmp_path / 'classes.txt'
  classes.write_text(''.join(f'class{i}\n' for i in range(12)))
  common = ['--dataset=list', f'--input={FIGHT}', f'--annotations=train={listing}']
  assert _run(*common, f'--output={tmp_path / "a"}', '--dry_run') == 2
  assert ('error: The list files give integer labels: pass --class_list (one class name per '
          'line, in index order), or --integer_labels=name if the integers are the class names.'
          ) in capsys.readouterr().err
  out = tmp_path / 'out'
  assert _run(*common, f'--output={out}', f'--class_list={classes}', '--short_side=32',
              '--workers=1') == 0
  assert {name: stored[:2] for name, stored in _videos(out, 'train').items()} == {
      p: (label, f'class{label}') for p, label in rows}
  # Counted from 1 (as UCF101's lists are): --label_index_base=1, which the hint names, applies
  # (review: it was refused for CSV lists); beside name labels it would be ignored: refused.
  from_one = tmp_path / 'from_one.csv'
  from_one.write_text('path,label\n' + ''.join(f'{p},{label + 1}\n' for p, label in rows))
  plan = _plan('--dataset=list', f'--input={FIGHT}', f'--annotations=train={from_one}',
               f'--output={tmp_path / "c"}', f'--class_list={classes}', '--label_index_base=1')
  assert {i.filename: i.label_index for i in plan.splits['train']} == dict(rows)
  named = tmp_path / 'named.csv'
  named.write_text('path,label\nfight/fi001.mp4,fight\nnoFight/nofi001.mp4,noFight\n')
  capsys.readouterr()
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations=train={named}',
              f'--output={tmp_path / "d"}', '--label_index_base=1', '--dry_run') == 2
  assert ('error: --label_index_base=1 counts integer labels, and the labels of '
          f'{named} are class names: it would be ignored.') in capsys.readouterr().err

  capsys.readouterr()
  mixed_csv = tmp_path / 'mixed.csv'
  mixed_csv.write_text('path,label\nfight/fi001.mp4,fight\nfight/fi002.mp4,0\n'
                       'noFight/nofi001.mp4,noFight\n')
  mixed_list = tmp_path / 'mixed.txt'
  mixed_list.write_text('fight/fi001.mp4 fight\nfight/fi002.mp4 0\nnoFight/nofi001.mp4 noFight\n')
  for path, line in ((mixed_csv, 3), (mixed_list, 2)):
    assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations=train={path}',
                f'--output={tmp_path / "b"}', '--dry_run') == 2
    assert (f"{path}:{line}: labels mix integers (e.g. '0') and class names (e.g. 'fight'): "
            'give every label as a name, or every one as an index with --class_list (or read '
            'them all as names with --integer_labels=name).'
            ) in capsys.readouterr().err


def test_a_fold_with_hmdb51_tsn_lists_is_refused():
  """TSN lists are a fold each: --fold=2 was ignored."""
  lists = ANNOTATIONS / 'hmdb51_splits_derived'
  with pytest.raises(convert.ConversionError, match=r'^--fold=2 picks a fold of the official '):
    _plan('--dataset=hmdb51', f'--input={lists}', '--output=/tmp/unused', '--fold=2',
          f'--annotations=train2={lists / "hmdb51_flow_train_split_2.txt"}')


def test_a_split_or_classes_that_cannot_be_had_say_why(tmp_path):
  """`--split=val` for UCF101 said 'no split selected' without naming its splits; the Kinetics
  test CSV alone said 'No classes' without a word of its missing labels."""
  ucf = ANNOTATIONS / 'ucf101_official_splits'
  with pytest.raises(convert.ConversionError, match=re.escape(
      'Nothing to convert: --split=val is none of the splits the annotations give (test1, '
      'train1).')):
    _plan('--dataset=ucf101', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
          f'--annotations={ucf}', '--split=val')
  with pytest.raises(convert.ConversionError, match=re.escape(
      'No classes: check --annotations / --class_list (the annotations give 38,685 videos and '
      'no label, as test lists do: add a labelled list, e.g. the val one, or pass --class_list '
      'with the label map).')):
    _plan('--dataset=kinetics400', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
          f'--annotations={ANNOTATIONS / "kinetics" / "kinetics-400_test.csv"}')


def test_hmdb51_tsn_lists_beyond_their_classes_get_no_advice_their_kind_refuses(tmp_path):
  """The index-base hint named --label_index_base for --dataset=hmdb51, which refuses it."""
  listing = tmp_path / 'train.txt'
  listing.write_text('data/HMDB51_flow/brush_hair_clip 30 51\n')
  with pytest.raises(convert.ConversionError, match="label\\(s\\) not in the 51-class list") as e:
    _plan('--dataset=hmdb51', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
          f'--annotations=train1={listing}')
  assert 'label_index_base' not in str(e.value)


def test_lists_whose_labels_contradict_the_clip_names_are_refused(tmp_path):
  """HMDB51's TSN lists number kick_ball 20 and kick 21, mmaction2's label map the other way round
  (and sword/sword_exercise likewise): `--dataset=frames` with that map labelled 280 of the 3,570
  training clips with the other class of their pair, without a word. A UCF101 list numbered
  from 1 read from 0 is caught the same way, by the class its clip names carry."""
  lists = ANNOTATIONS / 'hmdb51_splits_derived'
  train = lists / 'hmdb51_flow_train_split_1.txt'
  with pytest.raises(convert.ConversionError) as e:
    _plan('--dataset=frames', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
          f'--annotations=train={train},val={lists / "hmdb51_flow_val_split_1.txt"}',
          f'--class_list={ANNOTATIONS / "label_maps" / "hmdb51_label_map.txt"}')
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith(f'{train}: 280 of its 3,570 clips are labelled with another class '
                            'than their names carry (e.g. ')
  for pair in ("'kick_ball' labelled 'kick'", "'kick' labelled 'kick_ball'",
               "'sword_exercise' labelled 'sword'", "'sword' labelled 'sword_exercise'"):
    assert pair in message
  assert '--dataset=hmdb51' in message

  in_list_order = tmp_path / 'tsn_order.txt'
  in_list_order.write_text('\n'.join(data.annotations.HMDB51_TSN_LIST_ORDER) + '\n')
  plan = _plan('--dataset=frames', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
               f'--annotations=train={train}', f'--class_list={in_list_order}')
  named = {data.annotations.hmdb51_class_from_clip_name(item.filename): item.label_text
           for item in plan.splits['train']}
  assert named['kick_ball'] == 'kick_ball' and named['sword'] == 'sword'

  ucf = tmp_path / 'ucf_train.txt'
  ucf.write_text('ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n'
                 'HandstandPushups/v_HandStandPushups_g01_c01.avi 37\n'
                 'ApplyLipstick/v_ApplyLipstick_g01_c01.avi 2\n')
  with pytest.raises(convert.ConversionError, match=re.escape(
      f"{ucf}: 3 of its 3 clips are labelled with another class than their names carry (e.g. "
      "'ApplyEyeMakeup' labelled 'ApplyLipstick': ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi; "
      "'HandstandPushups' labelled 'HandstandWalking': ")):
    _plan('--dataset=list', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
          f'--annotations=train={ucf}',
          f'--class_list={ANNOTATIONS / "label_maps" / "ucf101_label_map.txt"}')
  plan = _plan('--dataset=list', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
               f'--annotations=train={ucf}', '--label_index_base=1',
               f'--class_list={ANNOTATIONS / "label_maps" / "ucf101_label_map.txt"}')
  assert [item.label_text for item in plan.splits['train']] == [
      'ApplyEyeMakeup', 'HandstandPushups', 'ApplyLipstick']


def test_videos_below_linked_folders_are_found_and_link_loops_end(tmp_path):
  """A folder reached through a symbolic link (a class's group, or part of a dataset on another
  disk) was not walked: its videos were left out of the converter's folder kind, its file index
  and predict's video list, without a word. A link back to a folder above it must not loop."""
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  shutil.copy(CODEC / 'video_0.mov', elsewhere / 'linked.mov')
  tree = tmp_path / 'tree'
  (tree / 'run' / 'own_group').mkdir(parents=True)
  shutil.copy(CODEC / 'video_90.mov', tree / 'run' / 'own_group' / 'own.mov')
  (tree / 'run' / 'linked_group').symlink_to(elsewhere, target_is_directory=True)
  (tree / 'run' / 'own_group' / 'loop').symlink_to(tree, target_is_directory=True)

  parsed = data.annotations.parse_class_folders(tree, ['.mov'])
  assert sorted(e.path_or_id for e in parsed.entries) == ['run/linked_group/linked.mov',
                                                         'run/own_group/own.mov']
  assert sorted(video_io.list_videos(str(tree))[0]) == [
      str(tree / 'run' / 'linked_group' / 'linked.mov'),
      str(tree / 'run' / 'own_group' / 'own.mov')]
  index = convert.FileIndex(str(tree), ['.mov'])
  assert index.find(stems=['linked']) == str(tree / 'run' / 'linked_group' / 'linked.mov')


def test_a_video_of_non_square_pixels_is_said_to_be_kept_as_coded(tmp_path):
  """Coded 64x48 with a sample aspect ratio of 2:1 (players show 128x48): its frames are stored
  and predicted as coded, as PySlowFast and TSM read videos, and nothing said so."""
  import av  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'anamorphic.mp4'
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('mpeg4', rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    stream.codec_context.sample_aspect_ratio = fractions.Fraction(2, 1)
    for _ in range(5):
      frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format='rgb24')
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  line = ('its pixels are not square (sample aspect ratio 2:1): its frames are kept as coded, '
          '64x48, where players show 128x48')
  video = video_io.decode_video(str(path), short_side=0)
  assert (video.width, video.height) == (64, 48) and line in video.warnings
  assert line in video_io.stream_warnings(str(path), [i / 25 for i in range(5)])
  assert not any('square' in w for w in video_io.decode_video(str(CODEC / 'video_0.mov')).warnings)


@pytest.mark.parametrize('flag', ['--short_side=-64', '--fps=-5', '--max_frames=-3',
                                  '--jpeg_quality=150', '--videos_per_shard=0', '--num_shards=-2',
                                  '--workers=0', '--interpolation=cubic', '--val_fraction=1.5'])
def test_converter_numbers_out_of_range_are_refused_before_anything_runs(flag, capsys):
  """Each was accepted (config audit): a negative --max_frames kept one frame of every video,
  --short_side=-64 stored native sizes, --jpeg_quality=150 passed, a bad --interpolation failed
  every video one by one."""
  with pytest.raises(SystemExit) as e:
    convert.build_parser().parse_args(['--dataset=folder', '--input=in', '--output=out', flag])
  assert e.value.code == 2
  assert f'argument {flag.split("=")[0]}: ' in capsys.readouterr().err


@pytest.mark.parametrize('flag', ['--output', '--input'])
def test_a_url_for_a_path_is_refused_before_anything_is_written(flag, tmp_path, monkeypatch,
                                                                 capsys):
  """--output=gs://... wrote the records into a folder 'gs:' of the current directory and said
  it had written them, so they never reached the bucket."""
  monkeypatch.chdir(tmp_path)
  paths = {'--input': str(FIGHT), '--output': str(tmp_path / 'records'),
           flag: 'gs://bucket/videos'}
  with pytest.raises(SystemExit) as e:
    _run('--dataset=folder', *(f'{name}={path}' for name, path in paths.items()),
         '--short_side=64', '--workers=1')
  assert e.value.code == 2
  assert (f'argument {flag}: gs://bucket/videos is a URL, and this project opens files by '
          'filesystem path only (it would be a local folder named "gs:")') in (
              capsys.readouterr().err)
  assert not os.listdir(tmp_path)


def test_an_output_path_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path,
                                                                               capsys):
  """The records take paths as UTF-8: a latin-1 named --output ended the conversion in a
  UnicodeEncodeError traceback after making the folder."""
  output = os.fsdecode(os.fsencode(str(tmp_path)) + b'/r\xe9cords')
  with pytest.raises(SystemExit) as e:
    _run('--dataset=folder', f'--input={FIGHT}', f'--output={output}', '--workers=1')
  assert e.value.code == 2
  assert (f'argument --output: {tmp_path}/r\\xe9cords is not UTF-8 text (undecodable bytes '
          'shown escaped)') in capsys.readouterr().err
  assert not os.listdir(tmp_path)


def test_a_leading_tilde_in_a_path_flag_is_the_home_folder(tmp_path, monkeypatch):
  """Shells leave `--output=~/records` as it is: the records went to a folder '~' of the
  current directory."""
  home, cwd = tmp_path / 'home', tmp_path / 'cwd'
  for label in ('fight', 'noFight'):
    (home / 'videos' / label).mkdir(parents=True)
    first = sorted((FIGHT / label).glob('*.mp4'))[0]
    shutil.copy(first, home / 'videos' / label / first.name)
  cwd.mkdir()
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.chdir(cwd)
  assert _run('--dataset=folder', '--input=~/videos', '--output=~/records', '--short_side=64',
              '--workers=1') == 0
  metadata = records.read_metadata(str(home / 'records'))
  assert (metadata.classes, metadata.split_sizes) == (['fight', 'noFight'], {'train': 2})
  assert not os.listdir(cwd)


def test_a_leading_tilde_in_each_annotation_file_of_a_list_is_the_home_folder(tmp_path,
                                                                               monkeypatch):
  """--annotations takes `[split=]path[,[split=]path...]`: `train=~/train.txt` and the second
  file of `~/train.txt,~/val.txt` were refused as missing ('~/val.txt' does not exist)."""
  home, cwd = tmp_path / 'home', tmp_path / 'cwd'
  home.mkdir()
  cwd.mkdir()
  (home / 'train.txt').write_text('fight/fi001.mp4 fight\nnoFight/nofi001.mp4 noFight\n')
  (home / 'val.txt').write_text('fight/fi002.mp4 fight\nnoFight/nofi002.mp4 noFight\n')
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.chdir(cwd)
  assert _run('--dataset=list', f'--input={FIGHT}', '--annotations=train=~/train.txt,val=~/val.txt',
              '--output=~/records', '--short_side=64', '--workers=1') == 0
  assert records.read_metadata(str(home / 'records')).split_sizes == {'train': 2, 'val': 2}
  assert not os.listdir(cwd)


def test_records_in_a_folder_whose_name_holds_brackets_are_found(tmp_path):
  """'[1]' in a folder name is a glob pattern: records converted into `records[1]` had 'No
  TFRecord shards' for training and the data report (which called them damaged), and a rerun
  left another shard count's shards beside them."""
  videos = tmp_path / 'videos'
  for label in ('fight', 'noFight'):
    (videos / label).mkdir(parents=True)
    for source in sorted((FIGHT / label).glob('*.mp4'))[:2]:
      shutil.copy(source, videos / label / source.name)
  output = tmp_path / 'records[1]'
  common = ('--dataset=folder', f'--input={videos}', f'--output={output}', '--short_side=64',
            '--workers=1')
  assert _run(*common, '--num_shards=2') == 0
  assert _run(*common, '--num_shards=1') == 0  # the two shards of the first run go
  metadata = records.read_metadata(str(output))
  assert [os.path.basename(f) for f in records.shard_files(str(output), metadata.name,
                                                            'train')] == [
      'folder-train.tfrecord-00000-of-00001']
  assert sorted(name for name in os.listdir(output) if '.tfrecord-' in name) == [
      'folder-train.tfrecord-00000-of-00001']
  from data import report  # pylint: disable=g-import-not-at-top
  card = report.build(str(output))['splits']['train']
  assert (card['videos'], card['damaged']) == (4, ''), card


def test_an_annotation_file_that_is_not_utf8_is_named(tmp_path, capsys):
  """A list saved as latin-1 ended in Python's "'utf-8' codec can't decode byte 0xe9 in position
  36", which named no file."""
  listing = tmp_path / 'train.txt'
  listing.write_bytes(b'fight/fi001.mp4 fight\nnoFight/nofi001.mp4 no\xe9Fight\n')
  assert _run('--dataset=list', f'--input={FIGHT}', f'--annotations=train={listing}',
              f'--output={tmp_path / "records"}', '--workers=1') == 2
  assert capsys.readouterr().err.strip() == (
      f"error: {listing}: not UTF-8 text (invalid continuation byte at byte b'\\xe9'): save it "
      'as UTF-8 (e.g. iconv -f latin1 -t utf8 FILE > NEW) and pass that.')
  assert not (tmp_path / 'records').exists()


def test_names_that_are_not_utf8_are_refused_before_any_video_is_decoded(tmp_path, capsys):
  """A latin-1 file or class folder name (from an old archive) stopped the whole conversion in
  a UnicodeEncodeError traceback, leaving an unfinished shard."""
  videos = tmp_path / 'videos'
  fights = sorted((FIGHT / 'fight').glob('*.mp4'))[:2]
  for folder, source, name in [('fight', fights[0], 'fi.mp4'),
                               ('fight', fights[1], os.fsdecode(b'caf\xe9.mp4')),
                               (os.fsdecode(b'ca\xefd'), fights[0], 'x.mp4')]:
    (videos / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(source, videos / folder / name)
  assert _run('--dataset=folder', f'--input={videos}', f'--output={tmp_path / "records"}',
              '--short_side=64', '--workers=1') == 2
  err = capsys.readouterr().err.strip()
  assert err == (
      'error: 3 video file or class folder name(s) are not UTF-8 text, which the records store '
      'names as: ca\\xefd/x.mp4, fight/caf\\xe9.mp4, ca\\xefd (undecodable bytes shown escaped). '
      f'Rename them (e.g. convmv -f latin1 -t utf8 -r --notest {videos}) and run the same '
      'command again.'), err
  assert not (tmp_path / 'records').exists()


def test_the_data_report_finds_a_damaged_byte_in_converted_records(tmp_path, capsys):
  """With the converter's bookkeeping present the card compared shard sizes only: a shard with a
  flipped byte (its size unchanged) gave a clean card and exit 0, while evaluation refused it
  as corrupt (README audit). Every record's checksum is now read, as training would."""
  from data import report  # pylint: disable=g-import-not-at-top
  source = tmp_path / 'videos'
  for label, clip in (('fight', 'fight/fi001.mp4'), ('noFight', 'noFight/nofi001.mp4')):
    (source / label).mkdir(parents=True)
    os.symlink(FIGHT / clip, source / label / os.path.basename(clip))
  out = tmp_path / 'records'
  assert _run('--dataset=folder', f'--input={source}', f'--output={out}', '--short_side=32',
              '--max_frames=8', '--name=tiny') == 0
  assert report.main([f'--records={out}', f'--output={tmp_path / "card"}']) == 0
  capsys.readouterr()
  shard = records.shard_files(str(out), 'tiny', 'train')[0]
  with open(shard, 'r+b') as f:
    f.seek(os.path.getsize(shard) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  assert report.main([f'--records={out}', f'--output={tmp_path / "card"}']) == 1
  printed, err = capsys.readouterr()
  damaged = [line for line in printed.splitlines() if line.startswith('    DAMAGED: ')]
  assert len(damaged) == 1 and f'TFRecord shard {shard} is corrupt after record' in damaged[0], (
      printed)
  assert err.startswith("error: the records of split 'train' in "), err


def _ucf101_folder(root):
  """A UCF-101 folder of 12 real clips: 3 classes, each with videos of groups 1, 8 and 15 (one
  in each official test split), HandstandPushups' files spelled as the archive spells them."""
  clips = sorted(glob.glob(str(FIGHT / 'fight' / '*.mp4')))[:12]
  for index, (folder, prefix) in enumerate((('ApplyEyeMakeup', 'ApplyEyeMakeup'),
                                            ('HandstandPushups', 'HandStandPushups'),
                                            ('YoYo', 'YoYo'))):
    (root / folder).mkdir(parents=True)
    for offset, name in enumerate(('g08_c01', 'g08_c02', 'g01_c01', 'g15_c01')):
      os.symlink(clips[4 * index + offset], root / folder / f'v_{prefix}_{name}.avi')
  return root


def test_splits_converted_with_other_clip_settings_are_said_at_conversion_training_and_eval(
    tmp_path, caplog, capsys):
  """Train converted at 10 fps and val at the native rate (or with another frame cap) were
  trained and evaluated together without a word: a clip of 8 frames spans 0.8 s of one and about
  0.3 s of the other. The converter, training and eval now say so; eval compares with the
  conversion the checkpoint trained on."""
  from configs import custom  # pylint: disable=g-import-not-at-top
  from salinet_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from salinet_jax import train  # pylint: disable=g-import-not-at-top
  lists = {'train': 'fight/fi001.mp4,fight\nnoFight/nofi001.mp4,noFight\n',
           'val': 'fight/fi002.mp4,fight\nnoFight/nofi002.mp4,noFight\n'}
  for split, rows in lists.items():
    (tmp_path / f'{split}.csv').write_text('path,label\n' + rows)
  out = tmp_path / 'out'
  common = ['--dataset=list', f'--input={FIGHT}', f'--output={out}', '--short_side=32',
            '--workers=1']
  assert _run(*common, f'--annotations=train={tmp_path / "train.csv"}', '--fps=10') == 0
  capsys.readouterr()
  assert _run(*common, f'--annotations=val={tmp_path / "val.csv"}', '--max_frames=30') == 0
  assert (f"warning: split 'val' is converted with other clip settings than split 'train' kept "
          f"in {out} (val: fps native, max_frames 30; train: fps 10, max_frames none): a model "
          'trained on one and scored on the other sees clips of other lengths in time; convert '
          'them alike.') in capsys.readouterr().err

  config = custom.get_config()
  config.dataset.update(dict(data_dir=str(out), name='list'))
  config.data.update(dict(num_frames=4, crop_size=32, train_min_scale=32, train_max_scale=32,
                          eval_short_side=32, eval_crop_size=32))
  caplog.set_level('WARNING', logger='absl')
  train.training_engine(config)
  unlike = (f"Split 'val' of {out} was converted with other clip settings than the train split "
            "'train' (val: fps native, max_frames 30; train: fps 10, max_frames none): ")
  assert unlike + 'the evaluations during training score clips unlike those the model trains on.' \
      in caplog.text, caplog.text
  # Eval compares with the conversion the checkpoint trained on, kept in its metadata, after
  # train was converted again like val.
  config.checkpoint.async_save = False
  store = checkpoints.CheckpointStore(str(tmp_path / 'run'), config.checkpoint)
  store.save(2, {'params': {'w': np.zeros(3)}}, classes=('fight', 'noFight'),
             records=pipeline.records_identity(config.dataset, ['train', 'val']))
  store.close()
  assert _run(*common, f'--annotations=train={tmp_path / "train.csv"}', '--max_frames=30') == 0
  caplog.clear()
  train.training_engine(config)
  assert 'other clip settings' not in caplog.text
  train.evaluation_engine(config, str(tmp_path / 'run'), 'val')
  # Against the train split as the checkpoint trained on it, said so (audit: 'than the train
  # split' read as the records' own train split, converted like val by then).
  assert (f"Split 'val' of {out} was converted with other clip settings than the train split "
          "'train' had when the checkpoint trained on it (val: fps native, max_frames 30; train "
          "then: fps 10, max_frames none): the checkpoint is scored on clips unlike those it "
          "trained on.") in caplog.text, caplog.text


def test_the_converter_counts_the_videos_official_folds_share_and_runs_warn_of_them(tmp_path,
                                                                                   caplog,
                                                                                   capsys):
  """UCF101's test2 is part of train1: a fold-1 model evaluated on test2 (records of every fold)
  was scored on videos it trained on without a word (README audit; the promise covered groups of
  --split_by_group records only). The converter counts the videos each pair of splits shares,
  also with a split converted by an earlier run (from its shards' bookkeeping), and training
  and eval warn where the evaluated split holds videos of the train split."""
  from configs import custom  # pylint: disable=g-import-not-at-top
  from salinet_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from salinet_jax import train  # pylint: disable=g-import-not-at-top
  videos = _ucf101_folder(tmp_path / 'UCF-101')
  common = [f'--input={videos}', '--dataset=ucf101', '--short_side=32', '--max_frames=4',
            '--num_shards=1', f'--annotations={ANNOTATIONS / "ucf101_official_splits"}']
  everything = tmp_path / 'all'
  assert _run(*common, '--fold=all', f'--output={everything}') == 0
  said = ("warning: splits holding the same videos (a model trained on one and scored on the "
          "other is scored on videos it trained on; training and eval say so): ")
  assert said + ("'test1' and 'train2' share 3, 'test1' and 'train3' share 3, 'test2' and "
                 "'train1' share 6, 'test2' and 'train3' share 6, 'test3' and 'train1' share 3, "
                 "'test3' and 'train2' share 3, 'train1' and 'train2' share 3, 'train1' and "
                 "'train3' share 6, 'train2' and 'train3' share 3.") in capsys.readouterr().err
  two_runs = tmp_path / 'two_runs'
  assert _run(*common, '--fold=1', f'--output={two_runs}') == 0
  assert 'holding the same videos' not in capsys.readouterr().err  # test1 holds none of train1
  assert _run(*common, '--fold=2', f'--output={two_runs}') == 0
  # Said at the conversion that adds a split sharing videos with a kept one (a leftover of the
  # official-folds audit: only training and eval said it).
  assert said + ("'test1' and 'train2' share 3, 'test2' and 'train1' share 6, 'train1' and "
                 "'train2' share 3.") in capsys.readouterr().err
  shared = records.read_metadata(str(everything)).extra['shared_videos']
  assert (shared['train1']['test2'], shared['test2']['train1'], shared['train2']['test1'],
          shared['train1']['test1'], shared['train3']['test3']) == (6, 6, 3, 0, 0), shared
  assert records.read_metadata(str(two_runs)).extra['shared_videos'] == {
      split: {other: shared[split][other] for other in ('train1', 'test1', 'train2', 'test2')
              if other != split} for split in ('train1', 'test1', 'train2', 'test2')}
  # One file under two spellings is one video (review: counted by the listed path, 0), and a
  # split whose bookkeeping is gone cannot be counted, which the converter says.
  lists = {'train1': 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0\n',
           'test2': './applyeyemakeup/v_ApplyEyeMakeup_g08_c01.avi 0\n'}
  for split, line in lists.items():
    (tmp_path / f'{split}.txt').write_text(line)
  (tmp_path / 'classes.txt').write_text('ApplyEyeMakeup\nYoYo\n')
  spelt = tmp_path / 'spelt'
  as_list = ['--dataset=list', f'--input={videos}', f'--output={spelt}', '--short_side=32',
             '--max_frames=4', f'--class_list={tmp_path / "classes.txt"}']
  assert _run(*as_list, f'--annotations=train1={tmp_path / "train1.txt"}') == 0
  shutil.rmtree(spelt / '.convert')
  capsys.readouterr()
  assert _run(*as_list, f'--annotations=test2={tmp_path / "test2.txt"}') == 0
  assert records.read_metadata(str(spelt)).extra['shared_videos'] == {}
  assert ("warning: split 'test2': the videos it shares with split(s) ['train1'] cannot be "
          "counted") in capsys.readouterr().err
  assert _run(*as_list, f'--annotations=train1={tmp_path / "train1.txt"}') == 0
  assert records.read_metadata(str(spelt)).extra['shared_videos'] == {
      'train1': {'test2': 1}, 'test2': {'train1': 1}}
  assert said + "'test2' and 'train1' share 1." in capsys.readouterr().err

  config = custom.get_config()
  config.dataset.update(dict(data_dir=str(everything), train_split='train1', eval_split='test2'))
  config.data.update(dict(num_frames=4, crop_size=32, train_min_scale=32, train_max_scale=32,
                          eval_short_side=32, eval_crop_size=32))
  caplog.set_level('WARNING', logger='absl')
  train.training_engine(config)
  assert (f"Split 'test2' of {everything} holds 6 of the 9 videos of the train split 'train1': "
          'the evaluations during training score videos the model trains on.') in caplog.text
  caplog.clear()
  config.dataset.eval_split = 'test1'
  train.training_engine(config)
  assert 'videos the model trains on' not in caplog.text, caplog.text
  # Eval of a checkpoint of that run on test2 (the weights are not read before the warning).
  config.checkpoint.async_save = False
  store = checkpoints.CheckpointStore(str(tmp_path / 'run'), config.checkpoint)
  store.save(2, {'params': {'w': np.zeros(3)}}, classes=records.read_metadata(
      str(everything)).classes)
  store.close()
  train.evaluation_engine(config, str(tmp_path / 'run'), 'test2')
  assert (f"Split 'test2' of {everything} holds 6 of the 9 videos of the train split 'train1': "
          'evaluating the checkpoint there scores videos it trained on.') in caplog.text
  # The split the checkpoint trained on counts, not the given config's (review): a fold-2 model
  # evaluated with the fold-1 config on test1, all of which is in train2.
  caplog.clear()
  store = checkpoints.CheckpointStore(str(tmp_path / 'fold2'), config.checkpoint)
  trained_on = dict(config.to_dict(), dataset=dict(config.dataset, train_split='train2'))
  store.save(2, {'params': {'w': np.zeros(3)}}, config=ml_collections.ConfigDict(trained_on),
             classes=records.read_metadata(str(everything)).classes)
  store.close()
  train.evaluation_engine(config, str(tmp_path / 'fold2'), 'test1')
  assert (f"Split 'test1' of {everything} holds 3 of the 6 videos of the train split 'train2': "
          'evaluating the checkpoint there scores videos it trained on.') in caplog.text
  # Evaluated on the very split it trained on (--split=train2), which the README says is
  # warned about too: nothing was said.
  caplog.clear()
  train.evaluation_engine(config, str(tmp_path / 'fold2'), 'train2')
  assert (f"Split 'train2' of {everything} is the train split itself (6 videos): evaluating the "
          'checkpoint there scores videos it trained on.') in caplog.text, caplog.text
  # Unless the checkpoint trained on other videos of that name (a held-out set converted as
  # 'train' into another output): the records' changes are said instead.
  caplog.clear()
  store = checkpoints.CheckpointStore(str(tmp_path / 'elsewhere'), config.checkpoint)
  store.save(2, {'params': {'w': np.zeros(3)}}, config=ml_collections.ConfigDict(trained_on),
             classes=records.read_metadata(str(everything)).classes,
             records={'train2': {'split': 'train2', 'videos': 6, 'names_digest': 'other'}})
  store.close()
  train.evaluation_engine(config, str(tmp_path / 'elsewhere'), 'train2')
  assert 'is the train split itself' not in caplog.text, caplog.text


def test_videos_enlarged_to_the_stored_short_side_are_warned_about(tmp_path, capsys):
  """Sources smaller than --short_side were stored enlarged without a word (README audit: 64x48
  frames stored at 341x256), and training's warning about enlarged frames compares with the
  stored size, so it never saw them."""
  source = tmp_path / 'videos'
  for label, clip in (('fight', 'fight/fi150.mp4'), ('noFight', 'noFight/nofi001.mp4')):
    (source / label).mkdir(parents=True)
    os.symlink(FIGHT / clip, source / label / os.path.basename(clip))
  common = ['--dataset=folder', f'--input={source}', '--max_frames=4', '--name=tiny']
  assert _run(*common, f'--output={tmp_path / "small"}', '--short_side=240') == 0
  assert 'stored enlarged' not in capsys.readouterr().err
  assert _run(*common, f'--output={tmp_path / "large"}', '--short_side=300') == 0
  err = capsys.readouterr().err
  assert ("warning: 1 video(s) converted in this run have a short side below --short_side=300 "
          "(the smallest 240 px: train: fight/fi150.mp4) and were stored enlarged to it, with "
          "detail the source never had: convert with a smaller --short_side (0 keeps each "
          "video's size) to store them as they are.") in err, err


def test_another_datasets_class_list_under_a_registered_name_is_warned_about_before_decoding(
    tmp_path, capsys):
  """Kinetics-600's CSVs converted as --dataset=kinetics400 planned 600 classes without a word
  (README audit); training said so only once the records were written."""
  assert _run('--dataset=kinetics400', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
              f'--annotations={ANNOTATIONS / "kinetics" / "kinetics-600_val.csv"}',
              '--dry_run') == 0
  assert ("warning: these annotations give 600 classes; the official 'kinetics400' has 400: "
          "another dataset's annotation files? (--dataset=kinetics600 has 600)"
          in capsys.readouterr().err)
  assert _run('--dataset=kinetics400', f'--input={tmp_path}', f'--output={tmp_path / "out"}',
              f'--annotations={ANNOTATIONS / "kinetics" / "kinetics-400_val.csv"}',
              '--dry_run') == 0
  assert 'official' not in capsys.readouterr().err
  # Another kind under a registered name is told to rename it (review: it was told
  # --dataset=fight_surv, no kind of the converter).
  assert _run('--dataset=folder', f'--input={FIGHT}', f'--output={tmp_path / "out2"}',
              '--name=hmdb51', '--dry_run') == 0
  assert ("warning: these annotations give 2 classes; the official 'hmdb51' has 51: another "
          "dataset's annotation files? (--name=NAME converts them as a dataset of your own)"
          in capsys.readouterr().err)


def test_a_listed_path_is_found_whatever_its_letter_case_as_the_official_kinds_find_it(
    tmp_path):
  """UCF101's own lists given to the `list` kind lost every HandstandPushups video on a
  case-sensitive disk ('missing video file: .../HandStandPushups/...', README audit), while the
  `ucf101` kind found them: a listed path is now found exactly, else in any letter case, as the
  official kinds find theirs; where two files differ only in case it stays missing."""
  videos = _ucf101_folder(tmp_path / 'UCF-101')
  listed = tmp_path / 'train.txt'
  listed.write_text('HandStandPushups/v_HandStandPushups_g08_c01.avi 37\n'
                    'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n'
                    'YoYo/v_YoYo_g99_c01.avi 101\n')
  plan = _plan('--dataset=list', f'--input={videos}', f'--output={tmp_path / "out"}',
               f'--annotations=train={listed}', '--label_index_base=1',
               f'--class_list={ANNOTATIONS / "ucf101_official_splits" / "classInd.txt"}')
  found = {item.filename: item.source for item in plan.splits['train']}
  assert found['HandStandPushups/v_HandStandPushups_g08_c01.avi'] == str(
      videos / 'HandstandPushups' / 'v_HandStandPushups_g08_c01.avi')
  assert found['ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi'] == str(
      videos / 'ApplyEyeMakeup' / 'v_ApplyEyeMakeup_g08_c01.avi')
  assert not found['YoYo/v_YoYo_g99_c01.avi']
  (videos / 'HANDSTANDPUSHUPS').mkdir()  # two spellings: which one is meant cannot be told
  plan = _plan('--dataset=list', f'--input={videos}', f'--output={tmp_path / "out"}',
               f'--annotations=train={listed}', '--label_index_base=1',
               f'--class_list={ANNOTATIONS / "ucf101_official_splits" / "classInd.txt"}')
  assert not {item.filename: item.source for item in plan.splits['train']}[
      'HandStandPushups/v_HandStandPushups_g08_c01.avi']


def test_the_data_card_says_how_many_videos_a_split_holds_beyond_the_official_count(tmp_path):
  """fight_surv's 115 clips converted as one val split (28 official) were carded as '-87
  missing' (audit): a count beyond the official one is said as such, and the json keeps
  `missing_from_official` a count of missing videos."""
  from data import report  # pylint: disable=g-import-not-at-top
  videos = _fight_clips(tmp_path / 'videos', 15)
  out = tmp_path / 'records'
  assert _run('--dataset=folder', f'--input={videos}', f'--output={out}', '--split=val',
              '--short_side=32', '--max_frames=2', '--name=fight_surv') == 0
  card = report.build(str(out))
  assert (card['splits']['val']['official_videos'], card['splits']['val']['missing_from_official'],
          card['splits']['val']['beyond_official']) == (28, 0, 2)
  assert '  val: 30 videos of 28 official (2 more than official), 0 failed' in report.summary(card)


def test_a_second_conversion_into_a_records_folder_being_written_is_refused_in_one_line(
    tmp_path, capsys):
  """Two conversions into one folder (the same command run again in another terminal) removed
  each other's half-written shards: one ended in a traceback, the other said it had written every
  video while a shard on disk held both runs' bytes. A reader of that split met the shards while
  they were being replaced."""
  videos = _sixteen_fight_clips(tmp_path / 'videos')
  out = tmp_path / 'records'
  common = ['--dataset=folder', f'--input={videos}', f'--output={out}', '--short_side=32',
            '--workers=1', '--videos_per_shard=1']
  assert _run(*common, '--split=val') == 0
  command = [sys.executable, '-m', 'data.convert', *common, '--split=train', '--quiet']
  env = {k: v for k, v in subprocess_env().items() if k not in data.TENSORFLOW_ENV}
  first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 120
    while not glob.glob(str(out / '*-train.tfrecord-*')) and time.monotonic() < deadline:
      time.sleep(0.02)
    os.killpg(first.pid, signal.SIGSTOP)  # holds the folder for as long as the test needs
    written = sorted(os.listdir(out))
    capsys.readouterr()
    assert _run(*common, '--split=train') == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f'error: records folder {out} is being written by data.convert '
                                f'(pid {first.pid} on host ')
    assert lines[-1].endswith("writing split(s) ['train']): wait for it to end, or pass "
                              'another --output (one conversion writes a folder at a time; '
                              '--workers spreads it over the cores).')
    assert sorted(os.listdir(out)) == written  # the first one's half-written shard is kept
    assert _run(*common, '--split=train', '--dry_run') == 0
    assert (f'warning: records folder {out} is being written now by data.convert (pid '
            f'{first.pid} on host ') in capsys.readouterr().err
    with pytest.raises(records.RecordsBusyError, match=(
        f"Split 'train' of the records in {out} is being written now by data.convert "
        rf'\(pid {first.pid} on host .*\): wait for it to end, then run this again.')):
      records.shard_files(str(out), 'folder', 'train')
    assert len(records.shard_files(str(out), 'folder', 'val')) == 16  # a split not converted
    from data import report  # pylint: disable=g-import-not-at-top
    capsys.readouterr()
    assert report.main([f'--records={out}']) == 1
    assert capsys.readouterr().err.strip().startswith(
        f'error: Records folder {out} is being written now by data.convert (pid {first.pid} ')
  finally:
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
  # The dead one's description stays in the lock file, but blocks and names no one.
  assert json.loads((out / records.WRITER_LOCK).read_text())['pid'] == first.pid
  assert records.writer_of(str(out)) is None
  records.check_not_being_written(str(out))
  assert len(records.shard_files(str(out), 'folder', 'val')) == 16
  assert _run(*common, '--split=train') == 0  # a conversion that died leaves no lock
  assert 'Resuming: ' in capsys.readouterr().err
  metadata = records.read_metadata(str(out))
  assert metadata.split_sizes == {'train': 16, 'val': 16}
  for split in ('train', 'val'):
    records.check_shards(records.shard_files(str(out), 'folder', split),
                         records.recorded_shard_bytes(metadata, split))


def test_frame_height_stores_every_orientation_that_many_pixels_high(tmp_path):
  """--frame_height=H stores every upright frame H px high, portrait ones included, as TSM's
  frame extraction does (ffmpeg scale=-1:331, which the S2DNet recipes were trained on);
  --short_side made the portrait video (320x568 upright) H px wide instead. Videos a model
  trained on such records predicts on are decoded at the same size, byte for byte."""
  listing = tmp_path / 'videos.txt'
  names = ('video_0.mov', 'video_90.mov', 'video_180.mov', 'video_270.mov')
  listing.write_text(''.join(f'{CODEC / name} keyboard\n' for name in names))
  out = tmp_path / 'records'
  assert _run('--dataset=list', f'--input={CODEC}', f'--annotations={listing}', '--name=codec',
              '--split=test', f'--output={out}', '--frame_height=48', '--workers=1') == 0
  videos = _videos(out, 'test')
  for name in names:
    frames = videos[str(CODEC / name)][3]
    upright = _direct_decode(CODEC / name, short_side=0)
    width = round(upright[0].shape[1] * 48 / upright[0].shape[0])  # 85 wide, or 27 standing
    assert frames[0].shape == (48, width, 3), name
    for frame, full in zip(frames, upright):
      assert _psnr(frame, _thumbnail(full, (width, 48))) > 30, name
  assert {f[0].shape[1] for f in (videos[str(CODEC / n)][3] for n in names)} == {85, 27}
  records_config = ml_collections.ConfigDict({'name': '', 'data_dir': str(out)})
  decoding = pipeline.split_decoding(records_config, 'test')
  assert (decoding['frame_height'], decoding['short_side']) == (48, 0)
  from data import report  # pylint: disable=g-import-not-at-top
  assert report.build(str(out))['splits']['test']['stored_frame_height'] == 48
  views = ml_collections.ConfigDict({'train_crop': 'center', 'crop_size': 16,
                                     'eval_short_side': 64})
  assert pipeline.enlarging_warnings(records_config, views, eval_split='test') == [
      f"split 'test' of {out} stores frames at height 48 px and config.data.eval_short_side=64 "
      'enlarges every one (1.3x): convert with --frame_height=64 or more, or lower '
      'config.data.eval_short_side.']
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  stored = {}
  for serialized in tf.data.TFRecordDataset(records.shard_files(str(out), 'codec', 'test')):
    features = records.parse_video(serialized)
    stored[features['filename'].numpy().decode()] = list(features['frames_jpeg'].numpy())
  data_config = ml_collections.ConfigDict({'eval_short_side': 256})
  video = pipeline.decode_like_records(str(CODEC / 'video_90.mov'), data_config, decoding)
  assert video.jpegs == stored[str(CODEC / 'video_90.mov')]


@pytest.mark.parametrize('short_side', [128, 256, 0])
def test_frame_height_and_short_side_together_are_refused_in_one_line(tmp_path, capsys,
                                                                      short_side):
  """Also --short_side given at its default (256), which went by unread (review)."""
  assert _run('--dataset=list', f'--input={CODEC}', f'--annotations={tmp_path}/none.txt',
              '--split=test', f'--output={tmp_path}/out', f'--short_side={short_side}',
              '--frame_height=331') == 2
  assert capsys.readouterr().err == (f'error: --short_side={short_side} and --frame_height=331 '
                                     'both set the stored size: give one of them.\n')
  assert not (tmp_path / 'out').exists()


def test_frame_height_rounds_the_width_as_ffmpeg_scale_does():
  """ffmpeg's scale=-1:H rounds the other side's halves up (av_rescale); Python's round() took
  them to the even number: 568x320 at height 60 was 106 wide, not 107 (review)."""
  assert video_io.output_size(568, 320, 0, 60) == (107, 60)
  assert video_io.output_size(568, 320, 0, 140) == (249, 140)
  assert video_io.output_size(568, 320, 0, 331) == (588, 331)
  assert video_io.output_size(568, 320, 0, 331, 90) == (331, 186)  # stands 186x331
  assert video_io.output_size(568, 320, 0, 60, 270) == (60, 34)


def test_frame_height_sizes_frame_folders_and_keeps_frames_already_that_high(tmp_path):
  """Frame folders too: a standing 40x60 frame is stored 20x30 at --frame_height=30, and frames
  already that high are kept byte for byte."""
  folder = tmp_path / 'clip'
  folder.mkdir()
  for i in range(2):
    Image.fromarray(np.full((60, 40, 3), 90 + 40 * i, np.uint8)).save(folder / f'{i + 1:06d}.jpg')
  video = video_io.read_frame_folder(str(folder), frame_height=30)
  assert (video.height, video.width, len(video.jpegs)) == (30, 20, 2)
  kept = video_io.read_frame_folder(str(folder), frame_height=60, short_side=128)
  assert kept.jpegs == [(folder / f'{i + 1:06d}.jpg').read_bytes() for i in range(2)]


def test_a_source_lower_than_frame_height_is_said_to_be_enlarged(tmp_path, capsys):
  listing = tmp_path / 'videos.txt'
  listing.write_text(f'{CODEC / "video_90.mov"} keyboard\n{CODEC / "video_0.mov"} keyboard\n')
  assert _run('--dataset=list', f'--input={CODEC}', f'--annotations={listing}', '--split=test',
              f'--output={tmp_path}/out', '--frame_height=400', '--workers=1') == 0
  assert ('warning: 1 video(s) converted in this run have a height below --frame_height=400 '
          f'(the smallest 320 px: test: {CODEC / "video_0.mov"}) and were stored enlarged to it, '
          'with detail the source never had: convert with a smaller --frame_height, or with '
          "--short_side=0 (each video's size) instead, to store them as they are."
          ) in capsys.readouterr().err
