"""EfficientDet command line: `python main.py --mode=MODE --model_name=NAME [--hparams=...]`.

The same as the installed `efficientdet` command and `python -m efficientdet_tf`.
"""

from efficientdet_tf.cli.main import run_main

if __name__ == "__main__":
    run_main()
