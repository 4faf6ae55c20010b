"""`python -m petpark.serving.camera`: the camera loop without the rest of petpark's command line,
for a camera box that has only the edge runtime's packages (serving/deploy/camera/)."""
import argparse
import sys

from petpark.serving.camera import config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='petpark-camera', description=config.DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_flags(parser)
    args = parser.parse_args(argv)
    from petpark.serving.camera import loop
    return loop.run(args)


if __name__ == '__main__':
    sys.exit(main())
