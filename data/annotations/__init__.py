"""Parsers for official video-dataset annotation files.

Each parser turns annotation files into an `Annotations(entries, classes)` pair: a tuple of
`VideoEntry` and the class list in the dataset's official order, so that class indices never
depend on dict/set iteration order or on which videos happened to download.

Formats, one module per source: Kinetics-400/600 crawler CSVs and Mini-Kinetics-200 id lists
(kinetics.py), UCF101 classInd + train/test lists and HMDB51 official `<class>_test_split<k>.txt`
folds and their TSN list form (ucf_hmdb.py), Something-Something v2 json (ssv2.py), and generic
ones (lists.py: class-per-folder trees, `path label` lists, TSN `frame_dir num_frames label` lists,
CSV lists with a header and their split by group). What they share is in common.py. Every error
names the file and, where there is one, the line. Files may have CRLF line ends.
"""

from data.annotations.common import (UNLABELED, AnnotationError, Annotations, PathLike,
                                     VideoEntry, read_class_list)
from data.annotations.kinetics import (kinetics_clip_name, parse_kinetics_clip_name,
                                       parse_kinetics_csv, parse_mini_kinetics, read_id_list)
from data.annotations.lists import (parse_class_folders, parse_csv_list, parse_list_file,
                                    parse_tsn_list, split_by_group)
from data.annotations.ssv2 import parse_ssv2_labels, parse_ssv2_list, ssv2_template_class
from data.annotations.ucf_hmdb import (HMDB51_CLASSES, HMDB51_TSN_LIST_ORDER,
                                       class_in_clip_name, hmdb51_class_from_clip_name,
                                       parse_hmdb51_split_dir,
                                       parse_hmdb51_tsn_list, parse_ucf101_classes,
                                       parse_ucf101_list, parse_ucf101_split)

__all__ = [
    'UNLABELED', 'AnnotationError', 'Annotations', 'PathLike', 'VideoEntry', 'read_class_list',
    'kinetics_clip_name', 'parse_kinetics_clip_name', 'parse_kinetics_csv', 'parse_mini_kinetics',
    'read_id_list', 'parse_class_folders', 'parse_csv_list', 'parse_list_file', 'parse_tsn_list',
    'split_by_group', 'parse_ssv2_labels', 'parse_ssv2_list', 'ssv2_template_class',
    'HMDB51_CLASSES', 'HMDB51_TSN_LIST_ORDER', 'class_in_clip_name', 'hmdb51_class_from_clip_name',
    'parse_hmdb51_split_dir', 'parse_hmdb51_tsn_list', 'parse_ucf101_classes', 'parse_ucf101_list',
    'parse_ucf101_split',
]
