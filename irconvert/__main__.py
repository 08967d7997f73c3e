"""``python -m irconvert``: the same as the ``irconvert`` command."""

from irconvert.cli import main

if __name__ == "__main__":
    main()
