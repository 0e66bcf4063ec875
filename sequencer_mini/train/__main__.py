"""``python -m sequencer_mini.train``: the training command line (:mod:`sequencer_mini.train.cli`)."""

import sys

from sequencer_mini.train.cli import main, run

sys.exit(run(main))
