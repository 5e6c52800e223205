"""`python -m minift ...` runs the `minift` command; so does `torchrun -m minift ...`, which
starts one process per device (e.g. `minift finetune --fsdp`)."""

import sys

from minift.cli import main

sys.exit(main())
