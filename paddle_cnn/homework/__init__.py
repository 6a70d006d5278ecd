"""Homework folders: ``homework/<section>/`` written from measured runs, checked, replayed.

One job a file, each importing only those listed before it:

* :mod:`.schema` -- what results.json holds: loading, validation, the shared reading helpers;
* :mod:`.render` -- the README's generated table, the learning curves, the summary over all sections;
* :mod:`.record` -- training a profile (``run``) or taking a trained result (``record``) into a folder;
* :mod:`.check`  -- a folder against itself and against its executed notebook;
* :mod:`.verify` -- re-training the first epochs of each recorded run and comparing;
* :mod:`.student` -- student ids and seeds, the hash of a student's source, the section's network
  built with the student's block (``train_student``);
* :mod:`.programs` -- each recorded run's model as an exported inference program, re-scored from it;
* :mod:`.pack`   -- the archive a student hands in (``paddle-cnn homework pack``);
* :mod:`.grade`  -- a whole class's archives re-scored into a grades CSV and feedback, never running
  a student's code (``paddle-cnn homework grade``).

The names below are the ones notebooks (``homework.record(result)``,
``homework.section_table(doc)``), the command line and tests use. ``record``,
``check`` and ``verify`` are both files and the functions exported here, so
``paddle_cnn.homework.check`` is the function: reach a helper of one of those
files with ``from paddle_cnn.homework.check import name``.
"""
from .check import check, notebook_agreement, printed_table
from .record import record, run
from .render import (ANALYSIS_HEADING, BEGIN, COURSE_REFERENCE, END, generated_block, interval95, metric_text,
                     save_section_figure, section_table, settings_line, student_comparison, summary,
                     write_section_readme)
from .schema import (FINAL_KEYS, FULL_TEST_SET, ROOT, SCHEMA_VERSION, Refusal, UnsafeInput, homework_root, load_results,
                     validate)
from .student import seed_for, student_seed, train_student
from .verify import verify

__all__ = ["ANALYSIS_HEADING", "BEGIN", "COURSE_REFERENCE", "END", "FINAL_KEYS", "FULL_TEST_SET", "ROOT",
           "Refusal", "SCHEMA_VERSION", "UnsafeInput", "check", "generated_block", "homework_root", "interval95", "load_results",
           "metric_text", "notebook_agreement", "printed_table", "record", "run", "save_section_figure",
           "section_table", "seed_for", "settings_line", "student_comparison", "student_seed", "summary", "train_student", "validate", "verify",
           "write_section_readme"]
