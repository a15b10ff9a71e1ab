"""The ``qarep-onnx`` executable: start the command line, and let Ctrl-C during start-up end in one line too.

Importing the command line pulls in onnx, numpy and onnxruntime, which takes a moment; an
interrupt then must not print a traceback.
"""

import sys


def main() -> None:
    try:
        from .cli.main import main as run
    except KeyboardInterrupt:
        sys.stderr.write("qarep-onnx: interrupted; no output written\n")
        sys.exit(130)
    run()
