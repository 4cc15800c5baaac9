"""Multiple-choice inspection questions (AnomalyR1's task, MMAD's format), as flat JSONL records.

* `records`: `MCQRecord`, the JSONL schema, `write_questions` / `load_questions`, `load_question_file`
  (rlad JSONL or MMAD's `mmad.json`), question type names.
* `mmad`: MMAD's released JSON layout -> records.
* `regions`: the 3 x 3 image regions of localization questions.
* `builder`: questions from MVTec-layout folders, and the split of `test/` they are built from.

Re-exported lazily, as in `rlad.data.pairs`.
"""

from rlad.data import lazy_reexports

_HOMES = {
    "MCQRecord": "records",
    "FIELDS": "records",
    "QUESTION_TYPES": "records",
    "letters_for": "records",
    "write_questions": "records",
    "load_questions": "records",
    "load_question_file": "records",
    "categories_of": "records",
    "select": "records",
    "load_mmad": "mmad",
    "REGION_NAMES": "regions",
    "region_mass": "regions",
    "parse_region": "regions",
    "BUILT_TYPES": "builder",
    "partition": "builder",
    "build_questions": "builder",
    "QuestionBuildSummary": "builder",
}

__getattr__ = lazy_reexports(__name__, _HOMES)
__all__ = sorted(_HOMES)
