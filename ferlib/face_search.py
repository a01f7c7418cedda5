"""The worker process of ``ferlib.faces.BackgroundSearch``: a thorough YuNet search of each frame it reads.

    python -m ferlib.face_search MIN_CONFIDENCE UPSCALE NICENESS    # frames in on stdin, faces out on stdout (.npy)
"""
import sys

from ferlib.faces import serve_search

if __name__ == "__main__":
    try:
        raise SystemExit(serve_search(sys.argv[1:]))
    except (KeyboardInterrupt, BrokenPipeError):  # the video ended or was stopped: nothing to say
        raise SystemExit(0)
