"""Generate the FER+ training set: FER2013Train/, FER2013Valid/, FER2013Test/ (PNGs + label.csv).

    python fer_generator/generate_training_data.py -d ./data -fer fer2013.csv -ferplus fer2013new.csv

fer2013.csv is Kaggle's FER2013 challenge file, fer2013new.csv Microsoft's FER+ votes; either may be gzipped.
The work is done by ferlib.generate.
"""

import sys

from ferlib.generate import main

if __name__ == "__main__":
    sys.exit(main())
