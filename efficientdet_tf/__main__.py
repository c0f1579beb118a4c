"""`python -m efficientdet_tf --mode=...`: the same command line as `main.py`."""

from efficientdet_tf.cli.main import run_main

run_main()
