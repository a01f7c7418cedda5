"""Generate the FER+ training set: FER2013Train/, FER2013Valid/, FER2013Test/ (PNGs + label.csv).

    python fer_generator/generate_training_data.py -d ./data -fer fer2013.csv -ferplus fer2013new.csv

fer2013.csv is Kaggle's FER2013 challenge file, fer2013new.csv Microsoft's FER+ votes; either may be gzipped.
The work is done by ferlib.generate (whose docstring says what happens on Ctrl-C, after a killed run, and to
files of your own inside the split folders).
"""

import sys

try:
    from ferlib.generate import main
except KeyboardInterrupt:
    # Ctrl-C while the libraries load (a second or two): nothing has been read or written yet
    print("interrupted: nothing was changed", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
