"""The `main.py` command line: flags and one function per mode."""
