"""Annotation parsers on the real annotation files in ../shared/testdata, plus their error paths."""

import json
import re
from pathlib import Path

import pytest

from data import annotations as A
from data import datasets

TESTDATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'testdata'
ANN = TESTDATA / 'annotations'


@pytest.fixture(scope='module')
def ann():
  """The real annotation folder; skips (never passes) the test when it is absent."""
  if not ANN.is_dir():
    pytest.skip(f'real annotation files not found at {ANN} (the shared testdata folder next to the '
                'repository); these tests need them.')
  return ANN


# --- UCF101

def test_ucf101_official_counts_and_order(ann):
  split_dir = ann / 'ucf101_official_splits'
  expected = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}
  for split, (n_train, n_test) in expected.items():
    train, test = A.parse_ucf101_split(split_dir, split)
    assert (len(train.entries), len(test.entries)) == (n_train, n_test)
    assert len({e.path_or_id for e in train.entries + test.entries}) == 13320
    info = datasets.get('ucf101')
    assert info.split_sizes[f'train{split}'] == n_train
    assert info.split_sizes[f'test{split}'] == n_test
  classes = train.classes
  assert len(classes) == 101 == datasets.get('ucf101').num_classes
  assert classes[0] == 'ApplyEyeMakeup' and classes[-1] == 'YoYo'
  assert classes == A.read_class_list(ann / 'label_maps' / 'ucf101_label_map.txt')
  # The case quirk: folder HandStandPushups (path kept as on disk), class HandstandPushups.
  quirk = [e for e in test.entries if e.path_or_id.startswith('HandStandPushups/')]
  assert quirk and all(e.label_text == 'HandstandPushups' and e.label_index == 36 for e in quirk)
  assert all(e.label_text == classes[e.label_index] for e in train.entries + test.entries)


def test_ucf101_label_folder_mismatch_and_bad_label(tmp_path):
  classes = ('ApplyEyeMakeup', 'ApplyLipstick')
  bad = tmp_path / 'trainlist01.txt'
  bad.write_bytes(b'ApplyEyeMakeup/v_a.avi 1\r\nApplyLipstick/v_b.avi 1\r\n')
  with pytest.raises(A.AnnotationError, match=r'trainlist01\.txt:2: .*disagrees'):
    A.parse_ucf101_list(bad, classes)
  bad.write_bytes(b'ApplyEyeMakeup/v_a.avi 1\r\n\r\nApplyLipstick/v_b.avi two\r\n')
  with pytest.raises(A.AnnotationError, match=r'trainlist01\.txt:3: label must be an integer'):
    A.parse_ucf101_list(bad, classes)
  bad.write_text('Archery/v_c.avi\nApplyLipstick/v_b.avi\nArchery/v_d.avi\n')
  with pytest.raises(ValueError, match=r"trainlist01\.txt: 1 label\(s\) not in the 2-class list: "
                                       r"'Archery' \(line 1\)"):
    A.parse_ucf101_list(bad, classes)


# --- Kinetics

def test_kinetics400_val_counts_and_order(ann):
  val = A.parse_kinetics_csv(ann / 'kinetics' / 'kinetics-400_val.csv')
  assert len(val.entries) == 19906 == datasets.get('kinetics400').split_sizes['val']
  assert len(val.classes) == 400 == datasets.get('kinetics400').num_classes
  assert val.classes == A.read_class_list(ann / 'label_maps' / 'kinetics_label_map_k400.txt')
  first = val.entries[0]
  assert (first.path_or_id, first.label_index, first.label_text) == (
      '0wR5jVB-WPk_000417_000427', 0, 'abseiling')
  test = A.parse_kinetics_csv(ann / 'kinetics' / 'kinetics-400_test.csv', classes=val.classes)
  assert len(test.entries) == 38685 and test.classes == val.classes
  assert not any(e.labeled for e in test.entries)


def test_kinetics600_val_counts(ann):
  val = A.parse_kinetics_csv(ann / 'kinetics' / 'kinetics-600_val.csv')
  assert len(val.entries) == 30000 == datasets.get('kinetics600').split_sizes['val']
  assert val.classes == A.read_class_list(ann / 'label_maps' / 'kinetics_label_map_k600.txt')


def test_kinetics_clip_name_round_trip():
  for youtube_id, start, end in [('0wR5jVB-WPk', 417, 427), ('_B6iLl_m6k-', 0, 10),
                                 ('--6bJUbfpnQ', 17, 27)]:
    name = A.kinetics_clip_name(youtube_id, start, end)
    assert A.parse_kinetics_clip_name(name) == (youtube_id, start, end)
    assert A.parse_kinetics_clip_name(f'/videos/abseiling/{name}.mp4') == (youtube_id, start, end)
  assert A.kinetics_clip_name('0wR5jVB-WPk', 417, 427) == '0wR5jVB-WPk_000417_000427'
  for bad in ['0wR5jVB-WPk', '0wR5jVB-WPk_417_427', '_000417_000427']:
    with pytest.raises(ValueError, match='not a Kinetics clip name'):
      A.parse_kinetics_clip_name(bad)


def test_kinetics_csv_errors(tmp_path):
  csv_path = tmp_path / 'k.csv'
  csv_path.write_bytes(b'label,youtube_id,time_start,time_end,split\r\n'
                       b'abseiling,aaaaaaaaaaa,1,11,val\r\n'
                       b'"zumba, fast",bbbbbbbbbbb,2,12,val\r\n'
                       b'tango,ccccccccccc,3,13,val\r\n')
  with pytest.raises(ValueError, match=r"k\.csv: 2 label\(s\) not in the 1-class list: "
                                       r"'zumba, fast' \(line 3\), 'tango' \(line 4\)"):
    A.parse_kinetics_csv(csv_path, classes=['abseiling'])
  parsed = A.parse_kinetics_csv(csv_path)  # Sorted names, never file or set order.
  assert parsed.classes == ('abseiling', 'tango', 'zumba, fast')
  assert [e.label_index for e in parsed.entries] == [0, 2, 1]
  csv_path.write_text('label,youtube_id,time_start,time_end,split\n'
                      'abseiling,aaaaaaaaaaa,1,11,val\n'
                      'abseiling,bbbbbbbbbbb,1.5,11,val\n')
  with pytest.raises(A.AnnotationError, match=r'k\.csv:3: time_start must be a whole number'):
    A.parse_kinetics_csv(csv_path)
  csv_path.write_text('label,youtube_id,time_start,time_end,split\nabseiling,aaaaaaaaaaa,1,11\n')
  with pytest.raises(A.AnnotationError, match=r'k\.csv:2: 4 fields'):
    A.parse_kinetics_csv(csv_path)


def test_mini_kinetics_val(ann):
  mini = ann / 'mini-kinetics-200'
  k400_val = ann / 'kinetics' / 'kinetics-400_val.csv'
  val = A.parse_mini_kinetics(mini / 'val_ytid_list.txt', [k400_val])
  assert len(val.entries) == 5000 == datasets.get('mini_kinetics').split_sizes['val']
  assert len(val.classes) == 200 == datasets.get('mini_kinetics').num_classes
  k400 = A.read_class_list(ann / 'label_maps' / 'kinetics_label_map_k400.txt')
  assert set(val.classes) <= set(k400) and list(val.classes) == sorted(val.classes)
  assert sorted(e.label_index for e in val.entries) == sorted(list(range(200)) * 25)
  joined = A.parse_mini_kinetics(mini / 'val_ytid_list.txt', mini / 'val_labeled_from_k400_val.csv')
  assert joined == val
  # The train ids are K400 train videos: joining them with the val CSV must fail loudly.
  with pytest.raises(ValueError, match=r"train_ytid_list\.txt: 80000 of 80000 ids not found .*"
                                       r"'kIRmvrmc2nM' \(line 1\)"):
    A.parse_mini_kinetics(mini / 'train_ytid_list.txt', [k400_val])


# --- HMDB51

def test_hmdb51_tsn_lists_counts_and_official_order(ann):
  assert A.HMDB51_CLASSES == A.read_class_list(ann / 'label_maps' / 'hmdb51_label_map.txt')
  folder = ann / 'hmdb51_splits_derived'
  for fold in (1, 2, 3):
    train = A.parse_hmdb51_tsn_list(folder / f'hmdb51_flow_train_split_{fold}.txt')
    test = A.parse_hmdb51_tsn_list(folder / f'hmdb51_flow_val_split_{fold}.txt')
    assert (len(train.entries), len(test.entries)) == (3570, 1530)
    assert train.classes == A.HMDB51_CLASSES and len(train.classes) == 51
    assert not {e.path_or_id for e in train.entries} & {e.path_or_id for e in test.entries}
    assert sorted(e.label_index for e in train.entries) == sorted(list(range(51)) * 70)
  info = datasets.get('hmdb51')
  assert (info.num_classes, info.split_sizes['train1'], info.split_sizes['test1']) == (
      51, 3570, 1530)
  # The list's raw index 20 means kick_ball (official 21), 45 means sword (official 44).
  raw = {line.split()[0]: int(line.split()[2])
         for line in (folder / 'hmdb51_flow_train_split_1.txt').read_text().splitlines()}
  train1 = A.parse_hmdb51_tsn_list(folder / 'hmdb51_flow_train_split_1.txt')
  by_path = {e.path_or_id: e for e in train1.entries}
  kick_ball = [p for p in raw if A.hmdb51_class_from_clip_name(p) == 'kick_ball']
  sword = [p for p in raw if A.hmdb51_class_from_clip_name(p) == 'sword']
  assert kick_ball and {raw[p] for p in kick_ball} == {20}
  assert {by_path[p].label_index for p in kick_ball} == {21}
  assert sword and {raw[p] for p in sword} == {45}
  assert {by_path[p].label_index for p in sword} == {44}


def test_hmdb51_tsn_list_with_other_order_fails(tmp_path):
  path = tmp_path / 'list.txt'
  # mmaction2 order (kick=20): the clip-name check catches the index mismatch.
  path.write_text('x/Foo_kick_ball_f_cm_np1_fr_med_0 0 0\nx/Bar_kick_ball_f_cm_np1_ba_goo_1 0 21\n')
  with pytest.raises(A.AnnotationError, match=r"list\.txt:1: .*'brush_hair'.*'kick_ball'"):
    A.parse_hmdb51_tsn_list(path)


def test_hmdb51_official_split_files(ann, tmp_path):
  """Writes fold 1 in the official `<class>_test_split1.txt` form from the TSN lists, reads it."""
  folder = ann / 'hmdb51_splits_derived'
  train = A.parse_hmdb51_tsn_list(folder / 'hmdb51_flow_train_split_1.txt')
  test = A.parse_hmdb51_tsn_list(folder / 'hmdb51_flow_val_split_1.txt')
  lines = {c: [] for c in A.HMDB51_CLASSES}
  for tag, parsed in (('1', train), ('2', test)):
    for e in parsed.entries:
      lines[e.label_text].append(f'{e.path_or_id.rsplit("/", 1)[1]}.avi {tag} ')
  for cls, rows in lines.items():
    rows.append(f'unused_{cls}_f_cm_np1_fr_med_0.avi 0 ')
    (tmp_path / f'{cls}_test_split1.txt').write_text('\n'.join(rows) + '\n')
  off_train, off_test = A.parse_hmdb51_split_dir(tmp_path, 1)
  assert (len(off_train.entries), len(off_test.entries)) == (3570, 1530)
  assert off_train.classes == A.HMDB51_CLASSES
  expected = sorted((e.path_or_id.rsplit('/', 1)[1], e.label_index) for e in train.entries)
  got = sorted((e.path_or_id.split('/')[1][:-4], e.label_index) for e in off_train.entries)
  assert got == expected
  assert all(e.path_or_id.startswith(e.label_text + '/') for e in off_test.entries)

  (tmp_path / 'wave_test_split1.txt').write_text('a_wave_f_cm_np1_fr_med_0.avi 3\n')
  with pytest.raises(A.AnnotationError, match=r'wave_test_split1\.txt:1: expected'):
    A.parse_hmdb51_split_dir(tmp_path, 1)
  (tmp_path / 'wave_test_split1.txt').unlink()
  with pytest.raises(ValueError, match=r"no \*_test_split1\.txt file for class\(es\) \['wave'\]"):
    A.parse_hmdb51_split_dir(tmp_path, 1)
  (tmp_path / 'wave_test_split1.txt').write_text('a_wave_f_cm_np1_fr_med_0.avi 1\n')
  (tmp_path / 'waving_test_split1.txt').write_text('a_wave_f_cm_np1_fr_med_1.avi 1\n')
  with pytest.raises(ValueError, match=r"not in the 51-class list: 'waving'"):
    A.parse_hmdb51_split_dir(tmp_path, 1)


def test_hmdb51_class_from_clip_name():
  assert A.hmdb51_class_from_clip_name('Movie_draw_sword_f_cm_np1_fr_med_3.avi') == 'draw_sword'
  assert A.hmdb51_class_from_clip_name('x/Fencing_sword_u_cm_np2_le_goo_0') == 'sword'
  assert A.hmdb51_class_from_clip_name('not_an_hmdb_name') is None
  assert A.hmdb51_class_from_clip_name('Mr._Bean_kick_ball_f_cm_np1_ri_med_2.avi') == 'kick_ball'


def test_the_class_a_clip_name_carries_is_looked_up_in_the_class_list():
  """UCF101 names match case-insensitively (HandStandPushups files of class HandstandPushups);
  a class outside the list, or a name following neither scheme, carries none."""
  ucf = ('ApplyEyeMakeup', 'HandstandPushups')
  assert A.class_in_clip_name('HandStandPushups/v_HandStandPushups_g01_c01.avi', ucf) == (
      'HandstandPushups')
  assert A.class_in_clip_name('frames/v_ApplyEyeMakeup_g08_c01/', ucf) == 'ApplyEyeMakeup'
  assert A.class_in_clip_name('v_Archery_g01_c01.avi', ucf) is None
  assert A.class_in_clip_name('fight/fi001.mp4', ucf) is None
  assert A.class_in_clip_name('data/HMDB51_flow/THE_PROTECTOR_kick_f_cm_np2_ri_med_81',
                              A.HMDB51_CLASSES) == 'kick'
  assert A.class_in_clip_name('THE_PROTECTOR_kick_f_cm_np2_ri_med_81', ('kick_ball',)) is None


# --- SSv2

def test_ssv2_labels_and_lists(ann, tmp_path):
  classes = A.parse_ssv2_labels(ann / 'sthv2' / 'something-something-v2-labels.json')
  assert len(classes) == 174 == datasets.get('ssv2').num_classes
  assert classes[0] == 'Approaching something with your camera'
  assert classes == A.read_class_list(ann / 'label_maps' / 'sthv2_label_map.txt')
  items = [{'id': '78687', 'label': 'holding potato next to vicks vaporub bottle',
            'template': 'Holding [something] next to [something]',
            'placeholders': ['potato', 'vicks vaporub bottle']},
           {'id': '42326', 'label': 'approaching a box with your camera',
            'template': 'Approaching [something] with your camera', 'placeholders': ['a box']}]
  train = tmp_path / 'something-something-v2-train.json'
  train.write_text(json.dumps(items, indent=1))
  parsed = A.parse_ssv2_list(train, classes)
  assert [e.path_or_id for e in parsed.entries] == ['78687', '42326']
  assert parsed.entries[0].label_text == 'Holding something next to something'
  assert parsed.entries[0].label_index == classes.index('Holding something next to something')
  assert parsed.entries[1].label_index == 0
  assert parsed.entries[0].placeholders == ('potato', 'vicks vaporub bottle')
  test = tmp_path / 'something-something-v2-test.json'
  test.write_text('[{"id": "1420"}, {"id": "3"}]')
  assert [e.labeled for e in A.parse_ssv2_list(test, classes).entries] == [False, False]
  items.append({'id': '5', 'template': 'Juggling [something]', 'placeholders': ['balls']})
  text = json.dumps(items, indent=1)
  train.write_text(text)
  item_line = next(i for i, t in enumerate(text.splitlines(), 1) if '"5"' in t) - 1  # its '{'
  with pytest.raises(ValueError, match=r"train\.json: 1 label\(s\) not in the 174-class list: "
                                       rf"'Juggling something' \(line {item_line}\)"):
    A.parse_ssv2_list(train, classes)
  train.write_text('[\n{"id": "1", "template": "Approaching [something] with your camera"},\n'
                   '{"id": "2" "template": "x"}\n]')
  with pytest.raises(A.AnnotationError, match=r'train\.json:3: invalid json'):
    A.parse_ssv2_list(train, classes)
  labels = tmp_path / 'labels.json'
  labels.write_text('{\n "a": "0",\n "b": "2"\n}')
  with pytest.raises(A.AnnotationError, match=r'labels\.json: indices must be 0\.\.1'):
    A.parse_ssv2_labels(labels)


# --- generic

def test_generic_list_file(tmp_path):
  path = tmp_path / 'list.txt'
  path.write_bytes(b'videos/a b.mp4 dog\r\nvideos/c.mp4 cat\r\n')
  parsed = A.parse_list_file(path)
  assert parsed.classes == ('cat', 'dog')
  assert [(e.path_or_id, e.label_index) for e in parsed.entries] == [('videos/a b.mp4', 1),
                                                                      ('videos/c.mp4', 0)]
  path.write_text('a.mp4 2\nb.mp4 1\n')
  one_based = A.parse_list_file(path, ['x', 'y'], index_base=1)
  assert [e.label_text for e in one_based.entries] == ['y', 'x']
  assert [e.label_index for e in A.parse_list_file(path).entries] == [2, 1]
  with pytest.raises(ValueError,
                     match=r"list\.txt: 1 label\(s\) not in the 2-class list: '2' \(line 1\)"):
    A.parse_list_file(path, ['x', 'y'])
  path.write_text('a.mp4 dog\nb.mp4 horse\nc.mp4 cow\nd.mp4 horse\n')
  with pytest.raises(ValueError, match=r"list\.txt: 2 label\(s\) not in the 2-class list: "
                                       r"'horse' \(line 2\), 'cow' \(line 3\)"):
    A.parse_list_file(path, ['cat', 'dog'])
  path.write_text('a.mp4 dog\nb.mp4\n')
  with pytest.raises(A.AnnotationError, match=r'list\.txt:2: expected "<path> <label>"'):
    A.parse_list_file(path)


def test_csv_classes_are_sorted_names_unless_given(tmp_path):
  """Mutation audit: classes in the order the rows name them first (so the same videos listed in
  another order gave other class indices) passed every test."""
  path = tmp_path / 'list.csv'
  path.write_text('path,label\nb/1.mp4,walk\na/2.mp4,run\nc/3.mp4,jump\nd/4.mp4,run\n')
  annotations = A.parse_csv_list(path, None, 'path', 'label')
  assert list(annotations.classes) == ['jump', 'run', 'walk']
  assert [e.label_index for e in annotations.entries] == [2, 1, 0, 1]
  given = A.parse_csv_list(path, ['walk', 'run', 'jump'], 'path', 'label')
  assert [e.label_index for e in given.entries] == [0, 1, 2, 1]


@pytest.mark.parametrize('row, said', [
    ('fight/fi066.mp4,fight,s4,extra', '4 fields, the header (path,label,source_group) has 3.'),
    ('fight/fi066.mp4,fight', '2 fields, the header (path,label,source_group) has 3.'),
    ('fight/fi066.mp4,fight,', 'empty source_group: cannot split by group.'),
], ids=['a_field_too_many', 'a_field_too_few', 'empty_group'])
def test_a_csv_row_with_other_fields_than_its_header_is_refused_at_its_line(tmp_path, row, said):
  """A fourth field was dropped without a word (a comma in a path shifts the columns); a row
  without its group failed with no file or line."""
  path = tmp_path / 'list.csv'
  path.write_text(f'path,label,source_group\nfight/fi001.mp4,fight,s1\n\n{row}\n')
  with pytest.raises(A.AnnotationError, match=f'^{path}:4: ' + re.escape(said)):
    A.parse_csv_list(path, None, 'path', 'label', 'source_group')
  path.write_text('path,label,source_group\nfight/fi001.mp4,fight,s1\n,,\n')
  assert len(A.parse_csv_list(path, None, 'path', 'label', 'source_group').entries) == 1


def test_generic_tsn_list(tmp_path):
  path = tmp_path / 'tsn.txt'
  path.write_text('frames/v1 120 1\nframes/v2 64 0\n')
  parsed = A.parse_tsn_list(path, classes=['a', 'b'])
  assert [(e.path_or_id, e.num_frames, e.label_text) for e in parsed.entries] == [
      ('frames/v1', 120, 'b'), ('frames/v2', 64, 'a')]
  path.write_text('frames/v1 120 1\nframes/v2 many 0\n')
  with pytest.raises(A.AnnotationError, match=r'tsn\.txt:2: num_frames must be an integer'):
    A.parse_tsn_list(path)


def test_class_folders(tmp_path):
  for rel in ['b_walk/v1.mp4', 'a_run/v2.MP4', 'a_run/notes.txt', 'a_run/.hidden.mp4',
              'c_jump/x.avi']:
    (tmp_path / rel).parent.mkdir(exist_ok=True)
    (tmp_path / rel).write_text('')
  parsed = A.parse_class_folders(tmp_path, extensions=['.mp4', 'avi'])
  assert parsed.classes == ('a_run', 'b_walk', 'c_jump')
  assert [(e.path_or_id, e.label_index) for e in parsed.entries] == [
      ('a_run/v2.MP4', 0), ('b_walk/v1.mp4', 1), ('c_jump/x.avi', 2)]


def test_registry_rejects_entries_whose_splits_are_not_listed():
  with pytest.raises(ValueError, match="train split 'train' is not among its splits"):
    datasets.register(datasets.DatasetInfo('broken_test_entry', 3, {'train1': 10, 'test1': 5}))
  assert 'broken_test_entry' not in datasets.REGISTRY


def _entry(path, label, group):
  return A.VideoEntry(path_or_id=path, label_index=label, label_text=str(label), group=group)


@pytest.mark.parametrize('seed', range(4))
def test_group_split_trains_and_evaluates_every_class_spread_over_groups(seed):
  """Two classes share three source videos (groups); a third has three groups of its own, one
  video each. A split by group size alone put all of the third class in val (never trained on)
  for every seed; now each class is on both sides, and no group on both."""
  entries = [_entry(f'{name}/{group}/{k}', label, group)
             for group in ('y1', 'y2', 'y3') for k in range(2)
             for label, name in enumerate(('fight', 'noFight'))]
  entries += [_entry(f'pancake/{group}/0', 2, group) for group in ('kinetics', 'rot', 'bad')]
  split = A.split_by_group(entries, 0.25, seed)
  for side in ('train', 'val'):
    assert {e.label_index for e in split[side]} == {0, 1, 2}
  assert not {e.group for e in split['train']} & {e.group for e in split['val']}
  assert sorted(split['train'] + split['val'], key=entries.index) == entries


def test_group_split_never_takes_the_only_group_of_a_class():
  entries = [_entry('a/g1/0', 0, 'g1'), _entry('b/g2/0', 1, 'g2'), _entry('b/g3/0', 1, 'g3'),
             _entry('b/g4/0', 1, 'g4')]
  for seed in range(8):
    split = A.split_by_group(entries, 0.5, seed)
    assert [e.group for e in split['train'] if e.label_index == 0] == ['g1']
    assert {e.label_index for e in split['val']} == {1}


def test_a_group_split_where_every_group_holds_a_class_alone_is_refused():
  """Each class in one group: the split put a class's only group in val, so the model never
  trained on it, though the README says such a class stays in train (data audit)."""
  entries = [_entry('fight/g1/0', 0, 'g1'), _entry('fight/g1/1', 0, 'g1'),
             _entry('noFight/g2/0', 1, 'g2'), _entry('noFight/g2/1', 1, 'g2')]
  with pytest.raises(ValueError, match=r'Every group holds the only videos of a class \(2 groups'
                     r', e.g. g1\): any val group would leave its class untrained; pass '
                     r'--val_groups to choose them anyway, or split by finer groups'):
    A.split_by_group(entries, 0.25, 0)
  assert [e.group for e in A.split_by_group(entries, 0.25, 0, ['g2'])['val']] == ['g2', 'g2']


def test_val_groups_added_for_classes_stay_within_half_of_the_videos():
  """Class 0 in groups of 4 and 2 videos, class 1 in two of 3, a third for val: where the first
  pass takes the 4-video group, adding a group of class 1 would give val 7 of the 12 videos
  (mutation audit: dropping that bound passed every test)."""
  sizes = {('gA1', 0): 4, ('gA2', 0): 2, ('gB1', 1): 3, ('gB2', 1): 3}
  entries = [_entry(f'c{label}/{group}/{k}', label, group)
             for (group, label), size in sizes.items() for k in range(size)]
  for seed in range(12):
    split = A.split_by_group(entries, 0.34, seed)
    assert len(split['val']) <= len(entries) / 2, (seed, len(split['val']))


def test_group_split_adds_val_groups_for_classes_within_bounds():
  """100 classes of two 10-video groups at 0.1: covering every class would put half the data
  in val; val stays within twice the target, and both sides keep groups whole."""
  entries = [_entry(f'c{c}/g{c}_{g}/{k}', c, f'g{c}_{g}') for c in range(100) for g in range(2)
             for k in range(10)]
  split = A.split_by_group(entries, 0.1, 0)
  assert 200 <= len(split['val']) <= 400
  assert {e.label_index for e in split['train']} == set(range(100))
  assert not {e.group for e in split['train']} & {e.group for e in split['val']}


def test_an_ssv2_label_map_with_missing_or_negative_indices_names_them(tmp_path):
  """A gap said only 'indices must be 0..N without gaps', and "-1" was 'not an integer'."""
  labels = tmp_path / 'labels.json'
  labels.write_text('{\n"Holding something": "0",\n"Moving something up": "2",\n'
                    '"Pushing something": "4"\n}\n')
  with pytest.raises(A.AnnotationError, match=re.escape(
      f'{labels}: indices must be 0..2 (3 templates) without gaps: 1 missing, 4 beyond.')):
    A.parse_ssv2_labels(labels)
  labels.write_text('{\n"Holding something": "0",\n"Moving something up": "-1"\n}\n')
  with pytest.raises(A.AnnotationError, match=re.escape(
      f"{labels}:3: index of 'Moving something up' must be 0 or more, got '-1'.")):
    A.parse_ssv2_labels(labels)


def test_a_class_list_of_numbered_lines_is_read_by_its_numbers(tmp_path):
  """--class_list=classInd.txt (UCF101's `<index> <name>` lines) stored the names as
  '1 ApplyEyeMakeup', '2 ApplyLipstick', ... in the records and their label texts, without a
  word, and so skipped the check of labels against clip names (README audit). Lines numbered in
  order from 0 or 1 are read by their numbers; numbered otherwise, they are names that begin
  with a number (review); every real label map of names is read as before."""
  class_ind = ANN / 'ucf101_official_splits' / 'classInd.txt'
  assert A.read_class_list(class_ind) == A.parse_ucf101_classes(class_ind)
  assert A.read_class_list(class_ind)[:2] == ('ApplyEyeMakeup', 'ApplyLipstick')
  zero_based = tmp_path / 'zero_based.txt'
  zero_based.write_text('0 abseiling\n1 air drumming\n')
  assert A.read_class_list(zero_based) == ('abseiling', 'air drumming')
  for names in (('3 point shot', '2 hand dunk'), ('10 pin bowling', '9 ball pool'),
                ('1 abseiling', '3 air drumming')):
    named = tmp_path / 'named.txt'
    named.write_text('\n'.join(names) + '\n')
    assert A.read_class_list(named) == names
  for label_map in sorted((ANN / 'label_maps').glob('*.txt')):
    with open(label_map, encoding='utf-8-sig') as f:
      assert A.read_class_list(label_map) == tuple(line.strip() for line in f if line.strip())
