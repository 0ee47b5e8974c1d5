"""Predict mode through an export (`--config.predict.exported=OUT/FORMAT`).

`ExportedPredictor` stands in for `predict.Predictor`: the same `decode`, `batches`,
`probabilities` and `top`, with the views, view reduction and class names of the exported run
(export.json), so predictions.csv and the printed top-5 have the same form. The checkpoint and
the training records are not needed.
"""

import os
from typing import Any, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from data import pipeline
from data import video_io
from salinet_jax import checkpoints
from salinet_jax import errors
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import inputs
from salinet_jax import predict as predict_lib
from salinet_jax import visualize
from salinet_jax.export import formats
from salinet_jax.export import serving
from salinet_jax.export import source

TOP_K = 5


class ExportedPredictor:
  """Scores videos held in memory through an exported model (any of the three formats)."""

  def __init__(self, config):
    if config.predict.window_seconds > 0:
      raise errors.ConfigError(
          'config.predict.window_seconds needs the checkpoint: windowed predict does not run '
          'through an export; unset config.predict.exported or config.predict.window_seconds.')
    self.model = formats.load_exported(config.predict.exported)
    metadata = self.model.metadata
    self.classes = tuple(metadata['classes'])
    self.source = (f'{self.model.format} export {self.model.directory} of '
                   f'{metadata["source"]["checkpoint"]}')
    self.config = checkpoints.with_later_settings(  # the exported run's views
        source.config_from_json(metadata['config']),
        f'The {self.model.format} export {self.model.directory}')
    self.decoding = predict_lib.say_decoding(metadata.get('decoding') or {},
                                             f'The {self.source}')
    self.num_views = self.config.data.eval_num_clips * self.config.data.eval_num_crops
    differences = checkpoints.config_differences(self.config.to_json(), config,
                                                 relevant=_shapes_predictions)
    if differences:
      logging.warning('Predicting through the %s with the model, clips and views it was '
                      'exported with; the given config differs there and is not used: %s.',
                      self.source, '; '.join(differences))

  def decode(self, path: str) -> video_io.DecodedVideo:
    """The video as the exported run's eval records hold videos (raises video_io.VideoError)."""
    return predict_lib.decode_like_records(path, self.config.data, self.decoding)

  def batches(self, jpegs: Sequence[bytes], fps: float, name: str, stream_clock: Any = None):
    """The eval batch (numpy) of one video: its views."""
    return pipeline.as_numpy(pipeline.video_eval_batches(self.config.data, jpegs, name, fps, 1,
                                                         stream_clock))

  def probabilities(self, jpegs: Sequence[bytes], fps: float, name: str,
                    pictures_dir: Optional[str] = None, stream_clock: Any = None) -> np.ndarray:
    """Class probabilities of one video (its views reduced as the evaluation does).

    With `pictures_dir`, its picture is drawn there as the checkpoint Predictor draws it, from
    the export's own outputs (an export has no variables to run the Flax model with).
    """
    batch = next(self.batches(jpegs, fps, name, stream_clock))
    views = batch['video'][0]
    num_valid = None
    if 'frame_mask' in batch:
      num_valid = np.full((len(views),), batch['frame_mask'][0].sum(), np.int32)
    outputs = self.model(views, num_valid)
    eval_config = self.config.eval
    scores = np.asarray(evaluate_lib.reduce_views(
        outputs['logits'][None], eval_config.view_reduction, eval_config.view_scores))[0]
    if not np.all(np.isfinite(scores)):
      raise evaluate_lib.NonFiniteScoresError(
          f'The {self.source} gives NaN or Inf scores for {name}: it is not usable.')
    if pictures_dir is not None:
      self._draw(batch, outputs, pictures_dir)
    return evaluate_lib.view_probabilities(scores, eval_config, self.num_views)

  def top(self, probs: np.ndarray) -> List[Tuple[str, float]]:
    order = np.argsort(-probs, kind='stable')[:TOP_K]
    return [(self.classes[k], float(probs[k])) for k in order]

  def _draw(self, batch, outputs, directory: str) -> None:
    """visualize.write_visualizations' picture of the first view, from the exported outputs."""
    if 'detail_frames' not in outputs and 'saliency_final' not in outputs:
      visualize.say_nothing_to_draw(self.config.model.name)
      return
    data = self.config.data
    mean, std = inputs.normalization(data)
    first = {key: batch[key][:1] for key in ('video', 'frame_mask') if key in batch}
    first['video'] = first['video'][:, 0]
    video = np.asarray(inputs.model_inputs(first, data)[0])[0]
    name = os.path.basename(batch['filename'][0].decode('utf-8', 'replace')) or 'video0'
    probabilities = outputs['probabilities'][0]
    predicted = int(np.argmax(probabilities))
    label = int(batch['label'][0])
    title = (f'{name}: predicted {self.classes[predicted]} ({probabilities[predicted]:.2f}, '
             'first view)' + (f', label {self.classes[label]}' if label >= 0 else ''))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f'000_{name}.png')
    if 'detail_frames' in outputs:
      aux = {k: outputs[k][0] for k in serving.S2DNET_OUTPUTS if k in outputs}
      visualize.s2dnet_figure(video, aux, path, mean=mean, std=std, title=title)
    elif 'saliency_final' in outputs:
      visualize.saliency_figure(video, outputs['saliency_final'][0], path, mean=mean, std=std,
                                title=title)


def _shapes_predictions(line: str) -> bool:
  """Config fields an export fixes: the model and its clips, the views and their reduction."""
  return checkpoints.changes_a_view(line) or line.startswith(('data.eval_num_', 'eval.view_'))
