"""Something-Something v2: the labels json and the train/validation/test video lists."""

import json
import os
import re
from typing import Dict, Iterator, Sequence, Tuple

from data.annotations.common import (AnnotationError, Annotations, PathLike, UnknownLabels,
                                     VideoEntry, check_classes, index_of, text_file)


def _line_at(text: str, pos: int) -> int:
  return text.count('\n', 0, pos) + 1


def _read_json_text(path: PathLike) -> str:
  with text_file(path) as f:
    return f.read()


class _Pairs(list):
  """The (key, value) pairs of one json object, in file order."""


def parse_ssv2_labels(labels_json: PathLike) -> Tuple[str, ...]:
  """Reads something-something-v2-labels.json (`{"<template>": "<index>"}`) into index order."""
  text = _read_json_text(labels_json)

  def pairs_hook(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
      dup = next(k for k in keys if keys.count(k) > 1)
      raise AnnotationError(labels_json, _line_at(text, text.find(json.dumps(dup))),
                            f'template {dup!r} appears twice.')
    return _Pairs(pairs)

  try:
    pairs = json.loads(text, object_pairs_hook=pairs_hook)
  except json.JSONDecodeError as e:
    raise AnnotationError(labels_json, e.lineno, f'invalid json: {e.msg}.') from None
  if not isinstance(pairs, _Pairs) or any(isinstance(v, _Pairs) for _, v in pairs):
    raise AnnotationError(labels_json, 1, 'expected a flat json object {"template": "index"}.')
  by_index: Dict[int, str] = {}
  for name, value in pairs:
    line = _line_at(text, max(text.find(json.dumps(name)), 0))
    if re.fullmatch(r'-\d+', str(value)):
      raise AnnotationError(labels_json, line,
                            f'index of {name!r} must be 0 or more, got {value!r}.')
    if not re.fullmatch(r'\d+', str(value)):
      raise AnnotationError(labels_json, line,
                            f'index of {name!r} must be an integer, got {value!r}.')
    if int(value) in by_index:
      raise AnnotationError(labels_json, line, f'index {value} of {name!r} is already used by '
                            f'{by_index[int(value)]!r}.')
    by_index[int(value)] = name
  count = len(by_index)
  if sorted(by_index) != list(range(count)):
    listed = lambda ids: ', '.join(map(str, ids[:10])) + ', ...' * (len(ids) > 10)  # noqa: E731
    missing = [i for i in range(count) if i not in by_index]
    beyond = sorted(i for i in by_index if i >= count)
    raise AnnotationError(labels_json, None,
                          f'indices must be 0..{count - 1} ({count:,} templates) without gaps: '
                          f'{listed(missing)} missing, {listed(beyond)} beyond.')
  return check_classes([by_index[i] for i in range(len(by_index))], os.fspath(labels_json))


def _iter_json_array(path: PathLike) -> Iterator[Tuple[int, object]]:
  """Yields (line number, item) of a top-level json array, so item errors can name their line."""
  text = _read_json_text(path)
  decoder = json.JSONDecoder()
  ws = re.compile(r'\s*')
  pos = ws.match(text, 0).end()
  if text[pos:pos + 1] != '[':
    raise AnnotationError(path, _line_at(text, pos), 'expected a json array of videos.')
  pos = ws.match(text, pos + 1).end()
  if text[pos:pos + 1] == ']':
    return
  while True:
    try:
      item, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise AnnotationError(path, e.lineno, f'invalid json: {e.msg}.') from None
    yield _line_at(text, pos), item
    pos = ws.match(text, end).end()
    sep = text[pos:pos + 1]
    if sep == ']':
      if text[ws.match(text, pos + 1).end():]:
        raise AnnotationError(path, _line_at(text, pos), 'text after the closing ].')
      return
    if sep != ',':
      raise AnnotationError(path, _line_at(text, pos), f'expected , or ] but got {sep!r}.')
    pos = ws.match(text, pos + 1).end()


def ssv2_template_class(template: str) -> str:
  """'Putting [something] on [something]' -> 'Putting something on something' (the class name)."""
  return template.replace('[', '').replace(']', '')


def parse_ssv2_list(list_json: PathLike, classes: Sequence[str]) -> Annotations:
  """Parses something-something-v2-{train,validation,test}.json.

  Items are `{"id", "label", "template", "placeholders"}`; the class is the template with its
  brackets removed, which must be a name of `classes` (from `parse_ssv2_labels`). Test items carry
  only an id and give unlabeled entries. `path_or_id` is the id (videos are `<id>.webm`).
  """
  classes = check_classes(classes, os.fspath(list_json))
  index = index_of(classes)
  unknown = UnknownLabels(list_json, classes)
  entries, seen = [], {}
  for line, item in _iter_json_array(list_json):
    if not isinstance(item, dict) or 'id' not in item:
      raise AnnotationError(list_json, line,
                            f'expected an object with an "id", got {str(item)[:80]}.')
    video_id = str(item['id']).strip()
    if not video_id:
      raise AnnotationError(list_json, line, 'empty id.')
    if video_id in seen:
      raise AnnotationError(list_json, line, f'id {video_id} repeats line {seen[video_id]}.')
    seen[video_id] = line
    placeholders = item.get('placeholders') or ()
    if not isinstance(placeholders, list) and placeholders != ():
      raise AnnotationError(list_json, line,
                            f'"placeholders" must be a list, got {placeholders!r}.')
    caption = item.get('label')
    if 'template' not in item:
      entries.append(VideoEntry(path_or_id=video_id, caption=caption,
                                placeholders=tuple(map(str, placeholders))))
      continue
    if not isinstance(item['template'], str):
      raise AnnotationError(list_json, line,
                            f'"template" must be a string, got {item["template"]!r}.')
    name = ssv2_template_class(item['template'])
    if name not in index:
      unknown.add(name, line)
      continue
    entries.append(VideoEntry(path_or_id=video_id, label_index=index[name], label_text=name,
                              caption=caption, placeholders=tuple(map(str, placeholders))))
  unknown.check()
  return Annotations(tuple(entries), classes)
